package fakellm

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// The Responses API streams typed server-sent events ("event: <type>" and
// "data: {json}" lines) rather than chat chunks, and ends with a
// response.completed event, not "data: [DONE]". The shapes below are those
// OpenAI sends, reduced to what clients read; go-openai decodes them into
// ResponseStreamEvent.

type respEvent struct {
	Type           string      `json:"type"`
	SequenceNumber int         `json:"sequence_number"`
	Response       *respObject `json:"response,omitempty"`
	OutputIndex    *int        `json:"output_index,omitempty"`
	ItemID         string      `json:"item_id,omitempty"`
	ContentIndex   *int        `json:"content_index,omitempty"`
	Item           any         `json:"item,omitempty"` // respMessage or respFunctionCall
	Part           *respPart   `json:"part,omitempty"`
	Delta          *string     `json:"delta,omitempty"`
	Text           *string     `json:"text,omitempty"`
	Arguments      *string     `json:"arguments,omitempty"`
}

type respObject struct {
	ID        string     `json:"id"`
	Object    string     `json:"object"`
	CreatedAt int64      `json:"created_at"`
	Status    string     `json:"status"`
	Model     string     `json:"model"`
	Output    []any      `json:"output"`
	Usage     *respUsage `json:"usage"`
	// Error is always null: the fake fails with HTTP errors, before the stream.
	Error *struct{} `json:"error"`
}

type respUsage struct {
	InputTokens  int `json:"input_tokens"`
	OutputTokens int `json:"output_tokens"`
	TotalTokens  int `json:"total_tokens"`
}

type respMessage struct {
	ID      string     `json:"id"`
	Type    string     `json:"type"` // "message"
	Status  string     `json:"status"`
	Role    string     `json:"role"`
	Content []respPart `json:"content"`
}

type respPart struct {
	Type        string     `json:"type"` // "output_text"
	Text        string     `json:"text"`
	Annotations []struct{} `json:"annotations"`
}

type respFunctionCall struct {
	ID        string `json:"id"`
	Type      string `json:"type"` // "function_call"
	Status    string `json:"status"`
	CallID    string `json:"call_id"`
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

// respStep is one event of a planned stream. Pieces — text deltas, and a
// call's first event and argument deltas — are what Drip paces and
// CutAfter counts, as content chunks and tool-call fragments are for chat.
type respStep struct {
	ev    respEvent
	piece bool
}

// streamResponse answers a Responses API request: response.created and
// response.in_progress, then per output item (the message, then each
// function call) its added event, its deltas and its done events, and
// response.completed with the output and usage. Errors, Latency, Hang,
// Drip and CutAfter behave as for a chat stream.
func (x *exchange) streamResponse(reply Reply) {
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

	x.holdFlushes = reply.Drip <= 0 // see stream
	if !x.writeRespEvent(respEvent{Type: "response.created", Response: x.respObject("in_progress", nil, nil)}) ||
		!x.writeRespEvent(respEvent{Type: "response.in_progress", Response: x.respObject("in_progress", nil, nil)}) {
		return
	}
	steps, output := x.responsePlan(reply)
	lastPiece := -1
	for i, s := range steps {
		if s.piece {
			lastPiece = i
		}
	}
	pieces := 0
	for i, s := range steps {
		if s.piece && !x.wait(reply.Drip) {
			return
		}
		if !x.writeRespEvent(s.ev) {
			return
		}
		if !s.piece {
			continue
		}
		// Cut after CutAfter pieces, or right after the last one if there
		// are fewer: a positive CutAfter never completes.
		if pieces++; reply.CutAfter > 0 && (pieces >= reply.CutAfter || i == lastPiece) {
			x.flush()
			x.outcome.cut = true
			return
		}
	}
	if reply.CutAfter > 0 { // no pieces at all
		x.flush()
		x.outcome.cut = true
		return
	}
	out := completionTokens(reply)
	usage := &respUsage{InputTokens: x.req.PromptTokens, OutputTokens: out, TotalTokens: x.req.PromptTokens + out}
	x.holdFlushes = false // the last event flushes everything held
	x.complete()
	x.writeRespEvent(respEvent{Type: "response.completed", Response: x.respObject("completed", output, usage)})
}

// responsePlan lists the events between response.in_progress and
// response.completed, and the output items response.completed carries.
// A reply with tool calls and no content has no message item.
func (x *exchange) responsePlan(reply Reply) ([]respStep, []any) {
	var steps []respStep
	var output []any
	add := func(piece bool, ev respEvent) { steps = append(steps, respStep{ev: ev, piece: piece}) }
	seq := strconv.Itoa(x.req.Seq)
	if reply.Content != "" || len(reply.ToolCalls) == 0 {
		idx, id := len(output), "msg_fake_"+seq
		msg := respMessage{ID: id, Type: "message", Status: "in_progress", Role: "assistant", Content: []respPart{}}
		add(false, respEvent{Type: "response.output_item.added", OutputIndex: new(idx), Item: msg})
		add(false, respEvent{Type: "response.content_part.added", OutputIndex: new(idx), ItemID: id,
			ContentIndex: new(0), Part: &respPart{Type: "output_text", Annotations: []struct{}{}}})
		for _, c := range splitContent(reply.Content, reply.ChunkSize) {
			add(true, respEvent{Type: "response.output_text.delta", OutputIndex: new(idx), ItemID: id,
				ContentIndex: new(0), Delta: new(c)})
		}
		part := respPart{Type: "output_text", Text: reply.Content, Annotations: []struct{}{}}
		add(false, respEvent{Type: "response.output_text.done", OutputIndex: new(idx), ItemID: id,
			ContentIndex: new(0), Text: new(reply.Content)})
		add(false, respEvent{Type: "response.content_part.done", OutputIndex: new(idx), ItemID: id,
			ContentIndex: new(0), Part: &part})
		msg.Status, msg.Content = "completed", []respPart{part}
		add(false, respEvent{Type: "response.output_item.done", OutputIndex: new(idx), Item: msg})
		output = append(output, msg)
	}
	argChunk := reply.ChunkSize
	if argChunk <= 0 {
		argChunk = defaultArgChunk
	}
	for i, tc := range reply.ToolCalls {
		idx, id := len(output), "fc_fake_"+seq+"_"+strconv.Itoa(i)
		call := respFunctionCall{ID: id, Type: "function_call", Status: "in_progress", CallID: tc.ID, Name: tc.Name}
		add(true, respEvent{Type: "response.output_item.added", OutputIndex: new(idx), Item: call})
		for _, a := range splitRunes(tc.Arguments, argChunk) {
			add(true, respEvent{Type: "response.function_call_arguments.delta", OutputIndex: new(idx), ItemID: id, Delta: new(a)})
		}
		add(false, respEvent{Type: "response.function_call_arguments.done", OutputIndex: new(idx), ItemID: id,
			Arguments: new(tc.Arguments)})
		call.Status, call.Arguments = "completed", tc.Arguments
		add(false, respEvent{Type: "response.output_item.done", OutputIndex: new(idx), Item: call})
		output = append(output, call)
	}
	return steps, output
}

func (x *exchange) respObject(status string, output []any, usage *respUsage) *respObject {
	if output == nil {
		output = []any{}
	}
	return &respObject{
		ID:        "resp_fake_" + strconv.Itoa(x.req.Seq),
		Object:    "response",
		CreatedAt: x.req.ReceivedAt.Unix(),
		Status:    status,
		Model:     x.model(),
		Output:    output,
		Usage:     usage,
	}
}

// writeRespEvent writes one event, numbered in order, and flushes it unless
// flushes are held.
func (x *exchange) writeRespEvent(ev respEvent) bool {
	ev.SequenceNumber = x.seq
	x.seq++
	b, err := json.Marshal(ev)
	if err != nil { // unreachable: strings, ints, slices and pointers only
		panic(err)
	}
	x.buf = append(append(append(append(append(x.buf[:0], "event: "...), ev.Type...), "\ndata: "...), b...), "\n\n"...)
	if x.holdFlushes {
		return x.write(x.buf)
	}
	return x.send(x.buf)
}
