package fakellm

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"time"
)

// exchange plays one Reply to one client. It owns a single reusable timer
// and never starts goroutines: every wait selects on the request context, so
// a client hang-up ends the handler as soon as net/http reports it.
type exchange struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	ctx     context.Context
	req     Request
	timer   *time.Timer
	buf     []byte
	outcome outcome
	// holdFlushes: write events without flushing each (a reply without a
	// drip); the final event flushes them all.
	holdFlushes bool
	// record publishes the outcome to the request log; recorded says it was
	// called by complete.
	record   func(outcome)
	recorded bool
	// responses: play the reply as a Responses API stream (responses.go)
	// instead of a chat completion.
	responses bool
	seq       int // the next Responses API event's sequence_number
}

func newExchange(w http.ResponseWriter, r *http.Request, req Request, record func(outcome)) *exchange {
	return &exchange{w: w, rc: http.NewResponseController(w), ctx: r.Context(), req: req, record: record}
}

// complete records the response as Completed just before its final bytes
// are written. Recording after them would race with the client: it could
// see [DONE], return, and find its request still in flight in the log. If
// the final write then fails, gone() clears completed and the handler
// records again.
func (x *exchange) complete() {
	x.outcome.completed = true
	x.record(x.outcome)
	x.recorded = true
}

// done records the outcome unless complete already did and nothing changed.
func (x *exchange) done() {
	if !x.recorded || !x.outcome.completed {
		x.record(x.outcome)
	}
}

func (x *exchange) run(reply Reply) {
	if !x.wait(reply.Latency) {
		return
	}
	if reply.Status != 0 && reply.Status != http.StatusOK {
		status := reply.Status
		if status < 200 || status > 599 {
			status = http.StatusInternalServerError
		}
		x.outcome.status = status
		x.complete()
		if !writeError(x.w, status, reply.ErrorMessage, reply.RetryAfter) {
			x.gone()
			return
		}
		x.flush()
		return
	}
	// Copy before filling in IDs: scripts may hand every request the same slice.
	reply.ToolCalls = slices.Clone(reply.ToolCalls)
	for i := range reply.ToolCalls {
		if reply.ToolCalls[i].ID == "" {
			reply.ToolCalls[i].ID = "call_" + strconv.Itoa(x.req.Seq) + "_" + strconv.Itoa(i)
		}
	}
	switch {
	case x.responses:
		x.streamResponse(reply)
	case x.req.Stream:
		x.stream(reply)
	default:
		x.json(reply)
	}
}

// gone records that the client went away (first observation wins).
func (x *exchange) gone() {
	if x.outcome.goneAt.IsZero() {
		x.outcome.goneAt = time.Now()
	}
	x.outcome.completed = false
}

// wait sleeps for d unless the client goes away first; it reports whether
// the client is still there. Even d <= 0 checks the context, so a stream
// without drip still stops promptly after a disconnect.
func (x *exchange) wait(d time.Duration) bool {
	if d <= 0 {
		select {
		case <-x.ctx.Done():
			x.gone()
			return false
		default:
			return true
		}
	}
	if x.timer == nil {
		x.timer = time.NewTimer(d)
	} else {
		x.timer.Reset(d) // safe without draining since Go 1.23
	}
	select {
	case <-x.timer.C:
		return true
	case <-x.ctx.Done():
		x.timer.Stop()
		x.gone()
		return false
	}
}

// hang blocks until the client goes away.
func (x *exchange) hang() {
	<-x.ctx.Done()
	x.gone()
}

func (x *exchange) write(b []byte) bool {
	if _, err := x.w.Write(b); err != nil {
		x.gone()
		return false
	}
	return true
}

func (x *exchange) flush() bool {
	if err := x.rc.Flush(); err != nil {
		x.gone()
		return false
	}
	return true
}

func (x *exchange) responseID() string { return "chatcmpl-fake-" + strconv.Itoa(x.req.Seq) }

func (x *exchange) model() string {
	if x.req.Model == "" {
		return "fake-model"
	}
	return x.req.Model
}

// json answers a non-streaming request.
func (x *exchange) json(reply Reply) {
	if reply.Hang {
		x.hang()
		return
	}
	// Take as long as the equivalent stream would have, so that timeouts
	// and cancellation behave alike in both modes.
	if n := len(splitContent(reply.Content, reply.ChunkSize)) + len(reply.ToolCalls); reply.Drip > 0 && n > 0 {
		if !x.wait(reply.Drip * time.Duration(n)) {
			return
		}
	}
	body, err := json.Marshal(x.completion(reply))
	if err != nil { // unreachable: strings, ints and pointers only
		panic(err)
	}
	x.w.Header().Set("Content-Type", "application/json")
	x.w.Header().Set("X-Fakellm-Seq", strconv.Itoa(x.req.Seq))
	x.w.WriteHeader(http.StatusOK)
	x.outcome.status = http.StatusOK
	if reply.CutAfter > 0 {
		if x.write(body[:len(body)/2]) && x.flush() {
			x.outcome.cut = true
		}
		return
	}
	x.complete()
	if x.write(body) {
		x.flush()
	}
}

func (x *exchange) completion(reply Reply) completion {
	msg := completionMessage{Role: "assistant"}
	finish := "stop"
	if len(reply.ToolCalls) > 0 {
		finish = "tool_calls"
		for _, tc := range reply.ToolCalls {
			msg.ToolCalls = append(msg.ToolCalls, toolCallFull{
				ID: tc.ID, Type: "function",
				Function: functionCall{Name: tc.Name, Arguments: tc.Arguments},
			})
		}
	}
	if reply.Content != "" || len(reply.ToolCalls) == 0 {
		msg.Content = &reply.Content
	}
	return completion{
		ID:      x.responseID(),
		Object:  "chat.completion",
		Created: x.req.ReceivedAt.Unix(),
		Model:   x.model(),
		Choices: []completionChoice{{Message: msg, FinishReason: finish}},
		Usage:   newUsage(x.req.PromptTokens, completionTokens(reply)),
	}
}
