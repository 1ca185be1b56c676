// Package fakellm is an in-repo, OpenAI-compatible chat completions and
// Responses API server.
//
// kern's tests, its offline demo and its benchmarks need a model endpoint that
// is free, deterministic and — above all — scriptable in the ways real
// providers misbehave: slow first tokens, slow token drip, 429s with
// Retry-After, connections cut mid-stream, streams that never produce a byte.
// A Server speaks the wire format that github.com/sashabaranov/go-openai
// expects (plain JSON and SSE streaming, tool-call fragments, include_usage;
// for POST /v1/responses the Responses API's typed events, streamed only: a
// request without "stream": true gets a 400), and records every request it
// sees, including whether and when the client went away, so tests can
// assert on cancellation reaching the model. Both endpoints play the same
// Reply scripts and log into the same request log.
//
// Responses are chosen per request by a script (see Server.Script). The
// default script, DefaultReply, derives an answer from the last user message
// and honours "[fake:...]" directives embedded in it, so a separate process
// (cmd/fakellm) can be steered purely through prompts.
//
// The server only uses the standard library. Each request costs its handler
// goroutine and one timer; all waiting (latency, drip, hang) selects on the
// request context, so a disconnect is noticed as soon as net/http notices it.
package fakellm
