package fakellm

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	openai "github.com/sashabaranov/go-openai"
)

// start serves a fresh Server scripted with fn (nil: DefaultReply) and
// returns it with a go-openai client pointed at it.
func start(t *testing.T, fn func(Request) Reply) (*Server, *openai.Client) {
	t.Helper()
	s := New()
	s.Script(fn)
	base, stop, err := s.Start()
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(stop)
	cfg := openai.DefaultConfig("test")
	cfg.BaseURL = base
	return s, openai.NewClientWithConfig(cfg)
}

// constant returns a script that always answers r.
func constant(r Reply) func(Request) Reply {
	return func(Request) Reply { return r }
}

func userRequest(prompt string, stream bool) openai.ChatCompletionRequest {
	req := openai.ChatCompletionRequest{
		Model:    openai.GPT4oMini,
		Messages: []openai.ChatCompletionMessage{{Role: openai.ChatMessageRoleUser, Content: prompt}},
		Stream:   stream,
	}
	if stream {
		req.StreamOptions = &openai.StreamOptions{IncludeUsage: true}
	}
	return req
}

// streamResult is everything a client assembles from a stream.
type streamResult struct {
	content   strings.Builder
	chunks    int // chunks carrying content
	role      string
	finish    openai.FinishReason
	usage     *openai.Usage
	toolCalls []openai.ToolCall // assembled by index, as a client would
	err       error             // the terminal error; nil means a clean [DONE]
}

func drain(stream *openai.ChatCompletionStream) *streamResult {
	res := &streamResult{}
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return res
		}
		if err != nil {
			res.err = err
			return res
		}
		if resp.Usage != nil {
			res.usage = resp.Usage
		}
		for _, c := range resp.Choices {
			if c.Delta.Role != "" {
				res.role = c.Delta.Role
			}
			if c.Delta.Content != "" {
				res.content.WriteString(c.Delta.Content)
				res.chunks++
			}
			if c.FinishReason != "" {
				res.finish = c.FinishReason
			}
			for _, tc := range c.Delta.ToolCalls {
				if tc.Index == nil {
					res.err = errors.New("tool call fragment without index")
					return res
				}
				i := *tc.Index
				for len(res.toolCalls) <= i {
					res.toolCalls = append(res.toolCalls, openai.ToolCall{})
				}
				acc := &res.toolCalls[i]
				if tc.ID != "" {
					acc.ID = tc.ID
				}
				if tc.Type != "" {
					acc.Type = tc.Type
				}
				acc.Function.Name += tc.Function.Name
				acc.Function.Arguments += tc.Function.Arguments
			}
		}
	}
}

func timeout(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}
