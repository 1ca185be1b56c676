package fakellm

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// stream answers a streaming request the way OpenAI does: a role chunk,
// content chunks, tool-call fragments, a finish chunk, an optional usage
// chunk, then "data: [DONE]". Every event is flushed on its own so clients
// observe the drip exactly as scripted.
func (x *exchange) stream(reply Reply) {
	h := x.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	h.Set("X-Fakellm-Seq", strconv.Itoa(x.req.Seq))
	x.w.WriteHeader(http.StatusOK)
	x.outcome.status = http.StatusOK
	if reply.Hang {
		if x.flush() {
			x.hang()
		}
		return
	}

	// Without a drip there is no moment between chunks at which a real
	// server would be sending: the chunks go out together, as one flush.
	x.holdFlushes = reply.Drip <= 0
	empty := ""
	if !x.event(x.chunk(delta{Role: "assistant", Content: &empty}, nil)) {
		return
	}
	pieces := streamPieces(reply)
	for i, d := range pieces {
		if !x.wait(reply.Drip) || !x.event(x.chunk(d, nil)) {
			return
		}
		if reply.CutAfter > 0 && i+1 >= reply.CutAfter {
			x.flush()
			x.outcome.cut = true
			return
		}
	}
	if reply.CutAfter > 0 { // fewer pieces than CutAfter: cut before finishing
		x.flush()
		x.outcome.cut = true
		return
	}

	finish := "stop"
	if len(reply.ToolCalls) > 0 {
		finish = "tool_calls"
	}
	if !x.event(x.chunk(delta{}, &finish)) {
		return
	}
	if x.req.IncludeUsage {
		c := x.chunk(delta{}, nil)
		c.Choices = []chunkChoice{}
		c.Usage = newUsage(x.req.PromptTokens, completionTokens(reply))
		if !x.event(c) {
			return
		}
	}
	x.complete()
	x.send([]byte("data: [DONE]\n\n"))
}

// streamPieces lists the deltas after the role chunk: the content chunks,
// then for each tool call a first fragment carrying id, type and name, and
// its arguments split over further fragments.
func streamPieces(reply Reply) []delta {
	content := splitContent(reply.Content, reply.ChunkSize)
	out := make([]delta, 0, len(content)+2*len(reply.ToolCalls))
	for _, c := range content {
		out = append(out, delta{Content: &c})
	}
	argChunk := reply.ChunkSize
	if argChunk <= 0 {
		argChunk = defaultArgChunk
	}
	for i, tc := range reply.ToolCalls {
		out = append(out, delta{ToolCalls: []toolCallDelta{{
			Index: i, ID: tc.ID, Type: "function",
			Function: functionCall{Name: tc.Name},
		}}})
		for _, a := range splitRunes(tc.Arguments, argChunk) {
			out = append(out, delta{ToolCalls: []toolCallDelta{{
				Index: i, Function: functionCall{Arguments: a},
			}}})
		}
	}
	return out
}

func (x *exchange) chunk(d delta, finish *string) chunk {
	return chunk{
		ID:      x.responseID(),
		Object:  "chat.completion.chunk",
		Created: x.req.ReceivedAt.Unix(),
		Model:   x.model(),
		Choices: []chunkChoice{{Delta: d, FinishReason: finish}},
	}
}

// event writes one "data: {json}\n\n" event and flushes it.
func (x *exchange) event(c chunk) bool {
	b, err := json.Marshal(c)
	if err != nil { // unreachable: strings, ints and pointers only
		panic(err)
	}
	x.buf = append(append(append(x.buf[:0], "data: "...), b...), "\n\n"...)
	if x.holdFlushes {
		return x.write(x.buf)
	}
	return x.send(x.buf)
}

func (x *exchange) send(b []byte) bool {
	return x.write(b) && x.flush()
}
