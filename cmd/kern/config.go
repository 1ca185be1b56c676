package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/db"
)

// workerFile is an agents.yaml: the agents one `kern worker --config`
// serves, and the worker's settings. Every field is optional except each
// agent's name and model; an unknown field is an error.
type workerFile struct {
	Worker workerSettings `yaml:"worker"`
	Agents []agentSpec    `yaml:"agents"`
}

// workerSettings maps onto agent.WorkerConfig (zero: its default) and the
// process's own shutdown grace.
type workerSettings struct {
	MaxConcurrentRuns int           `yaml:"max_concurrent_runs"`
	DefaultTimeout    time.Duration `yaml:"default_timeout"`
	MaxAttempts       int           `yaml:"max_attempts"`
	RescueAfter       time.Duration `yaml:"rescue_after"`
	MaxContentBytes   int           `yaml:"max_content_bytes"`
	Retention         time.Duration `yaml:"retention"` // negative keeps runs forever
	MaxRunsPerKey     int           `yaml:"max_runs_per_key"`
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	RetryBaseDelay    time.Duration `yaml:"retry_base_delay"`
	ShutdownTimeout   time.Duration `yaml:"shutdown_timeout"` // default 30s
	// WebhookSecretEnv names the variable holding WorkerConfig.WebhookSecret.
	WebhookSecretEnv string `yaml:"webhook_secret_env"`
	// AllowPrivateWebhooks is WorkerConfig.AllowPrivateWebhooks.
	AllowPrivateWebhooks bool `yaml:"allow_private_webhooks"`
}

// agentSpec is one agent of an agents.yaml.
type agentSpec struct {
	Name         string `yaml:"name"`
	Instructions string `yaml:"instructions"`
	Model        string `yaml:"model"`
	API          string `yaml:"api"`         // "chat" (default) or "responses"
	BaseURL      string `yaml:"base_url"`    // default $OPENAI_BASE_URL, then OpenAI's API
	APIKeyEnv    string `yaml:"api_key_env"` // default OPENAI_API_KEY
	HistoryRuns  int    `yaml:"history_runs"`
	MaxSteps     int    `yaml:"max_steps"`
}

// loadWorkerFile reads and checks path. Every error names the file and,
// where yaml knows it, the line: "agents.yaml:4: …".
func loadWorkerFile(path string) (*workerFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseWorkerFile(path, data)
}

func parseWorkerFile(path string, data []byte) (*workerFile, error) {
	var f workerFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: empty file: want a top-level agents: list", path)
		}
		return nil, yamlError(path, err)
	}
	// The same text as nodes, for the lines of what yaml accepted but kern
	// does not (a missing model, a bad api). It parsed above, so it parses.
	var root yaml.Node
	_ = yaml.Unmarshal(data, &root)
	lineOf := func(i int, key string) int { return yamlAgentLine(&root, i, key) }

	if len(f.Agents) == 0 {
		return nil, fmt.Errorf("%s:%d: no agents: want a top-level agents: list with at least one agent", path, max(yamlTopLine(&root, "agents"), 1))
	}
	seen := map[string]int{}
	for i, a := range f.Agents {
		at := func(key, format string, args ...any) error {
			return fmt.Errorf("%s:%d: agent %s: %s", path, lineOf(i, key), cfgAgentLabel(i, a.Name), fmt.Sprintf(format, args...))
		}
		switch {
		case a.Name == "":
			return nil, at("name", "missing name")
		case a.Model == "":
			return nil, at("model", "missing model (the model id, e.g. gpt-5-mini)")
		case a.API != "" && a.API != "chat" && a.API != "responses":
			return nil, at("api", "api is %q: want chat or responses", a.API)
		case a.MaxSteps < 0:
			return nil, at("max_steps", "max_steps is %d: want 0 (default 10) or more", a.MaxSteps)
		case a.HistoryRuns < 0 || a.HistoryRuns > 100:
			return nil, at("history_runs", "history_runs is %d: want 0..100", a.HistoryRuns)
		}
		if prev, dup := seen[a.Name]; dup {
			return nil, at("name", "name %q is also agent %d's: names must be unique", a.Name, prev+1)
		}
		seen[a.Name] = i
	}
	w := f.Worker
	for _, c := range []struct {
		key string
		bad bool
	}{
		{"max_concurrent_runs", w.MaxConcurrentRuns < 0},
		{"default_timeout", w.DefaultTimeout < 0},
		{"max_attempts", w.MaxAttempts < 0},
		{"rescue_after", w.RescueAfter < 0},
		{"max_content_bytes", w.MaxContentBytes < 0},
		{"max_runs_per_key", w.MaxRunsPerKey < 0},
		{"heartbeat_interval", w.HeartbeatInterval < 0},
		{"retry_base_delay", w.RetryBaseDelay < 0},
		{"shutdown_timeout", w.ShutdownTimeout < 0},
	} {
		if c.bad {
			return nil, fmt.Errorf("%s:%d: worker: %s is negative", path, yamlWorkerLine(&root, c.key), c.key)
		}
	}
	return &f, nil
}

func cfgAgentLabel(i int, name string) string {
	if name == "" {
		return strconv.Itoa(i + 1)
	}
	return fmt.Sprintf("%d (%s)", i+1, name)
}

var (
	yamlLineRE    = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
	yamlUnknownRE = regexp.MustCompile(`field (\S+) not found in type main\.(\w+)`)
	yamlTypeRE    = regexp.MustCompile(` into (?:main\.\w+|time\.Duration)$`)
)

// yamlError rewrites yaml's errors ("yaml: unmarshal errors:\n  line 3:
// field x not found in type main.agentSpec") as "path:3: unknown field x in
// an agent", one line per problem.
func yamlError(path string, err error) error {
	var msgs []string
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{err.Error()}
	}
	where := map[string]string{"workerFile": "the file (want worker: and agents:)", "agentSpec": "an agent", "workerSettings": "worker"}
	out := make([]string, 0, len(msgs))
	for _, m := range msgs {
		m = strings.TrimSpace(m)
		m = yamlUnknownRE.ReplaceAllStringFunc(m, func(s string) string {
			g := yamlUnknownRE.FindStringSubmatch(s)
			return fmt.Sprintf("unknown field %q in %s", g[1], where[g[2]])
		})
		if strings.HasSuffix(m, " into time.Duration") {
			m = yamlTypeRE.ReplaceAllString(m, " into a duration (e.g. 90s, 5m, 24h)")
		} else {
			m = yamlTypeRE.ReplaceAllString(m, "")
		}
		if g := yamlLineRE.FindStringSubmatch(m); g != nil {
			out = append(out, fmt.Sprintf("%s:%s: %s", path, g[1], g[2]))
		} else {
			out = append(out, fmt.Sprintf("%s: %s", path, strings.TrimPrefix(m, "yaml: ")))
		}
	}
	return errors.New(strings.Join(out, "\n"))
}

// yamlMapValue returns the value node of key in mapping m, and the key node.
func yamlMapValue(m *yaml.Node, key string) (k, v *yaml.Node) {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil, nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i], m.Content[i+1]
		}
	}
	return nil, nil
}

func yamlDoc(root *yaml.Node) *yaml.Node {
	if root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
		return root.Content[0]
	}
	return nil
}

func yamlTopLine(root *yaml.Node, key string) int {
	if k, _ := yamlMapValue(yamlDoc(root), key); k != nil {
		return k.Line
	}
	return 0
}

func yamlWorkerLine(root *yaml.Node, key string) int {
	_, w := yamlMapValue(yamlDoc(root), "worker")
	if k, _ := yamlMapValue(w, key); k != nil {
		return k.Line
	}
	return max(yamlTopLine(root, "worker"), 1)
}

// yamlAgentLine is the line of agents[i].key, or of agents[i] when it has no
// such key.
func yamlAgentLine(root *yaml.Node, i int, key string) int {
	_, list := yamlMapValue(yamlDoc(root), "agents")
	if list == nil || list.Kind != yaml.SequenceNode || i >= len(list.Content) {
		return max(yamlTopLine(root, "agents"), 1)
	}
	item := list.Content[i]
	if k, _ := yamlMapValue(item, key); k != nil {
		return k.Line
	}
	return item.Line
}

// workerConfig is the file's agent.WorkerConfig (without Logger).
func (f *workerFile) workerConfig() (agent.WorkerConfig, error) {
	w := f.Worker
	cfg := agent.WorkerConfig{
		MaxConcurrentRuns: w.MaxConcurrentRuns,
		DefaultTimeout:    w.DefaultTimeout,
		MaxAttempts:       w.MaxAttempts,
		RescueAfter:       w.RescueAfter,
		MaxContentBytes:   w.MaxContentBytes,
		Retention:         w.Retention,
		MaxRunsPerKey:     w.MaxRunsPerKey,
		HeartbeatInterval: w.HeartbeatInterval,
		RetryBaseDelay:    w.RetryBaseDelay,

		AllowPrivateWebhooks: w.AllowPrivateWebhooks,
	}
	if w.WebhookSecretEnv != "" {
		cfg.WebhookSecret = strings.TrimSpace(os.Getenv(w.WebhookSecretEnv))
		if cfg.WebhookSecret == "" {
			return cfg, fmt.Errorf("worker: webhook_secret_env: %s is not set", w.WebhookSecretEnv)
		}
	}
	return cfg, nil
}

// buildAgents makes the file's agents on d, with their model clients: an
// agent's endpoint is its base_url, else $OPENAI_BASE_URL, else OpenAI's
// API, which alone requires a key (from api_key_env, default
// OPENAI_API_KEY). Agents on the same endpoint and key share one client.
// It touches no network: called before anything starts, it reports a
// missing key at once.
func (f *workerFile) buildAgents(d *db.DB) ([]*agent.Agent, error) {
	type endpoint struct{ key, baseURL string }
	clients := map[endpoint]*agent.Agent{} // any agent holding that client
	var out []*agent.Agent
	for i, s := range f.Agents {
		keyEnv := s.APIKeyEnv
		if keyEnv == "" {
			keyEnv = "OPENAI_API_KEY"
		}
		ep := endpoint{key: strings.TrimSpace(os.Getenv(keyEnv)), baseURL: strings.TrimSpace(s.BaseURL)}
		if ep.baseURL == "" {
			ep.baseURL = strings.TrimSpace(os.Getenv("OPENAI_BASE_URL"))
		}
		if ep.baseURL == "" && ep.key == "" {
			return nil, fmt.Errorf("agent %s: %s is not set: OpenAI's API needs a key "+
				"(for a local OpenAI-compatible endpoint set base_url instead; it needs no key)", cfgAgentLabel(i, s.Name), keyEnv)
		}
		a := &agent.Agent{Name: s.Name, Instructions: s.Instructions, DB: d, MaxSteps: s.MaxSteps, HistoryRuns: s.HistoryRuns}
		client := agent.NewOpenAIClient(ep.key, ep.baseURL)
		if other, ok := clients[ep]; ok {
			switch m := other.Model.(type) {
			case agent.OpenAIChat:
				client = m.Client
			case agent.OpenAIResponses:
				client = m.Client
			}
		}
		if s.API == "responses" {
			a.Model = agent.OpenAIResponses{Client: client, ID: s.Model}
		} else {
			a.Model = agent.OpenAIChat{Client: client, ID: s.Model}
		}
		clients[ep] = a
		out = append(out, a)
	}
	return out, nil
}

func (f *workerFile) names() []string {
	names := make([]string, len(f.Agents))
	for i, a := range f.Agents {
		names[i] = a.Name
	}
	return names
}
