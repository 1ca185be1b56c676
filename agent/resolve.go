package agent

import (
	"net/http"
	"sync"

	openai "github.com/sashabaranov/go-openai"
)

// modelCache turns an OpenAIChat or OpenAIResponses without a Client into
// one with a client built from the environment, building that client once
// and handing the same one out afterwards, so that every run of an agent
// shares one connection pool instead of paying a TCP/TLS handshake (and
// leaving an idle connection behind) per model call. Both adapters share
// the one client: it is the same endpoint, only the path differs.
//
// The client is keyed on the environment it was built from, not on the
// model: an agent whose Model changes (another ID, say) keeps the client,
// and a changed OPENAI_API_KEY / OPENAI_BASE_URL gets a new one instead of a
// client for an endpoint that is no longer configured.
//
// The zero value is ready to use; a modelCache is safe for concurrent use.
// It lives in each Agent rather than in a package variable so that agents,
// and tests, do not share connections or configuration behind each other's
// backs.
type modelCache struct {
	mu        sync.Mutex
	env       openAIEnv // what client was built from
	client    *openai.Client
	transport *http.Transport // client's, to close its idle connections when replaced
}

// get returns the Model to call for m: for an OpenAIChat or
// OpenAIResponses (or a pointer to one) with a nil Client, a copy of it
// with the cached client set; any other Model as is. The error (missing
// OPENAI_API_KEY for OpenAI's own endpoint) wraps run.ErrInvalidArgument;
// nothing is cached then, so a fixed environment is picked up by the next
// call.
func (c *modelCache) get(m Model) (Model, error) {
	switch v := m.(type) {
	case *OpenAIChat:
		if v == nil {
			return m, nil // calling it panics, as it would without the cache
		}
		if v.Client == nil {
			return c.get(*v)
		}
	case *OpenAIResponses:
		if v == nil {
			return m, nil
		}
		if v.Client == nil {
			return c.get(*v)
		}
	case OpenAIChat:
		if v.Client == nil {
			client, err := c.envClient()
			if err != nil {
				return nil, err
			}
			v.Client = client
			return v, nil
		}
	case OpenAIResponses:
		if v.Client == nil {
			client, err := c.envClient()
			if err != nil {
				return nil, err
			}
			v.Client = client
			return v, nil
		}
	}
	return m, nil
}

// envClient returns the client for the current environment.
func (c *modelCache) envClient() (*openai.Client, error) {
	// Reading the environment per call costs two lookups, against an HTTP
	// request that follows; it is what lets a changed environment take effect.
	env, err := readOpenAIEnv()
	if err != nil {
		return nil, err
	}
	return c.clientFor(env), nil
}

func (c *modelCache) clientFor(env openAIEnv) *openai.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.client != nil && c.env == env {
		return c.client
	}
	if c.transport != nil {
		// Only the idle connections, which nobody will reuse, are closed:
		// calls still streaming on the old client keep theirs, and the
		// transport's idle timeout closes them after those calls end.
		c.transport.CloseIdleConnections()
	}
	c.client, c.transport = newOpenAIClient(env.apiKey, env.baseURL)
	c.env = env
	return c.client
}
