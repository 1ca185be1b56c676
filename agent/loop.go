package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/run"
)

// defaultMaxSteps is Agent.MaxSteps when it is 0: model turns per run.
const defaultMaxSteps = 10

// errMaxSteps ends a run whose model kept asking for tools after its last
// allowed turn.
type errMaxSteps struct{ n int }

func (e errMaxSteps) Error() string { return fmt.Sprintf("max steps (%d) reached", e.n) }

// execution is one attempt of a run as the loop drives it: model turn, tool
// calls, tool results, model turn … until an answer. Every finished turn
// that asked for tools, and every tool result, is committed as it happens
// (engine.Store.StoreTurn, StoreToolResult), so a later attempt resumes from
// the transcript instead of starting over.
type execution struct {
	e        *executor
	agent    *Agent
	model    Model
	log      *slog.Logger
	fence    engine.Fence
	input    string
	stop     context.CancelCauseFunc
	tools    map[string]*Tool
	maxSteps int
	tr       *transcript
	ttft     time.Duration
	history  []Message   // the session's earlier runs (Agent.HistoryRuns)
	check    outputCheck // the final answer against Agent.OutputSchema
	timer    *runTimer   // the execution timeout, paused while rate-limited

	// writeMu serialises the execution's writes after a turn's content is
	// settled: each takes the next event seq, and parallel tool calls
	// finish in any order.
	writeMu sync.Mutex
	// seq is the run's last event seq as far as this execution knows; the
	// next write takes seq+1. Guarded by writeMu once tools run.
	seq int64
}

// loopEnd is how the loop ended: the last model turn's response and error
// (or why no further turn was made), with the unflushed tail of its content
// and its size.
type loopEnd struct {
	resp *ModelResponse
	err  error
	tail string
	size int
	// waiting: the run waits for answers to its calls now (WaitForAnswers
	// committed); the execution ends without a final write.
	waiting bool
	// handedOff: the run went to another agent (HandOff committed); the
	// execution ends without a final write.
	handedOff bool
}

// run drives the loop. A non-nil error means a write failed: run.ErrNotRunning
// when the execution lost the run, otherwise Postgres could not be written.
func (x *execution) run(runCtx, ctx context.Context) (loopEnd, error) {
	// A turn that handed the run over, whose handoff was not written (its
	// worker died), hands it over now.
	if to := x.handoffIn(x.tr.lastTurnCalls()); to != "" {
		if err := x.handOff(ctx, to); err != nil {
			return loopEnd{}, err
		}
		return loopEnd{handedOff: true}, nil
	}
	for {
		// The last stored turn, which asked for tools, was the last one
		// allowed: its calls are not made, since no turn could read them.
		if x.tr.turns >= x.maxSteps {
			return loopEnd{err: errMaxSteps{x.maxSteps}}, nil
		}
		if pending := x.tr.pending(); len(pending) > 0 {
			// Calls that need an answer wait for it; the others are made
			// first, and their results stored, so the run waits with
			// only the open calls left.
			now, wait := x.splitPending(pending)
			if len(now) > 0 {
				outs, err := x.callTools(runCtx, ctx, now)
				if err != nil {
					return loopEnd{}, err
				}
				if runCtx.Err() != nil {
					return loopEnd{err: context.Cause(runCtx)}, nil
				}
				x.tr.record(now, outs)
				if to := x.handoffIn(callsOf(now)); to != "" && len(wait) == 0 {
					// The transfer's result is stored: hand over (a
					// turn that also waits for answers does once
					// they are in, above).
					if err := x.handOff(ctx, to); err != nil {
						return loopEnd{}, err
					}
					return loopEnd{handedOff: true}, nil
				}
			}
			if len(wait) > 0 {
				if err := x.waitForAnswers(ctx, wait); err != nil {
					return loopEnd{}, err
				}
				return loopEnd{waiting: true}, nil
			}
			x.tr.flush()
		}
		t, err := x.turn(runCtx, ctx)
		if err != nil {
			return loopEnd{}, err
		}
		end := loopEnd{resp: t.resp, err: t.err, tail: t.tail, size: t.size}
		if t.err != nil || t.size > x.e.maxContentBytes || t.resp == nil {
			return end, nil
		}
		// An agent without tools takes any answer as final, as before
		// tools existed: the model was offered none.
		if len(t.resp.ToolCalls) == 0 || len(x.tools) == 0 {
			retry, invalid := x.check.judge(t.text)
			switch {
			case invalid != nil:
				end.err = invalid
				return end, nil
			case retry != nil:
				if err := x.storeRejected(ctx, t, retry); err != nil {
					return loopEnd{}, err
				}
				continue
			}
			return end, nil
		}
		if err := x.storeTurn(ctx, t); err != nil {
			return loopEnd{}, err
		}
	}
}

// turnResult is one streamed model turn.
type turnResult struct {
	resp *ModelResponse
	err  error  // the model call's
	text string // the whole turn's content, for a turn that asks for tools
	tail string // the part of it not flushed yet
	size int
}

// turn streams one model turn into the run's content. Its error is only a
// content write's: run.ErrNotRunning, or content that could not be settled.
func (x *execution) turn(runCtx, ctx context.Context) (turnResult, error) {
	req := x.agent.request(x.history, x.input)
	req.Messages = append(req.Messages, x.tr.msgs[1:]...) // the prompt is request's
	var slot *rateSlot
	for {
		// The fleet's rate limit (ratelimit.go): may wait, saying so.
		s, ended, err := x.acquire(runCtx, ctx, req, slot)
		if err != nil || ended != nil {
			return turnResult{err: ended}, err
		}
		t, err := x.streamTurn(runCtx, ctx, req)
		if slot = s; err != nil || !x.release(ctx, s, t) {
			return t, err
		}
	}
}

// streamTurn asks the model once and streams its answer into the run.
func (x *execution) streamTurn(runCtx, ctx context.Context, req *ModelRequest) (turnResult, error) {
	e := x.e
	buf := newContentBuffer(e.flushEvery, e.flushBytes, x.seq,
		func(ctx context.Context, seq int64, delta string) error {
			return e.store.AppendContent(ctx, x.fence, seq, delta)
		},
		func() { x.stop(errOwnerLost) },
		func(err error) {
			x.log.WarnContext(ctx, "kern: content flush failed; it is sent again before the final write", slog.Any("error", err))
		})
	keepText := len(x.tools) > 0 || x.check.schema != nil
	var t turnResult
	var text strings.Builder
	callStart := time.Now()
	t.resp, t.err = x.model.Stream(runCtx, req, func(delta string) {
		if x.ttft == 0 {
			x.ttft = max(time.Since(callStart), time.Microsecond)
		}
		if t.size += len(delta); t.size > e.maxContentBytes {
			x.stop(errTooLarge)
			return
		}
		if keepText {
			text.WriteString(delta)
		}
		buf.add(delta)
	})
	closeCtx, stopClose := context.WithTimeout(context.WithoutCancel(ctx), finalWriteTimeout)
	tail, err := buf.close(closeCtx)
	stopClose()
	x.seq = buf.lastSeq()
	switch {
	case errors.Is(err, run.ErrNotRunning):
		return t, err
	case err != nil:
		return t, fmt.Errorf("streamed content could not be written: %w", err)
	}
	t.tail, t.text = tail, text.String()
	return t, nil
}

// storeTurn commits a turn that asked for tool calls. A call without an id
// gets "call_<turn>_<index>", stored with it, so its ToolCallID is the same
// on every attempt; so does a call whose id the run has used already (some
// local models number their calls per turn), since ToolCallID must tell
// two calls apart to serve as an idempotency key; and so does a call whose
// id run.ValidateToolCallID refuses ("../other-run/tool-calls/x", control
// characters, over-long), since the id becomes a path segment of the
// answer routes and the dashboard's forms.
func (x *execution) storeTurn(ctx context.Context, t turnResult) error {
	n := x.tr.turns + 1
	used := x.tr.callIDs()
	calls := make([]ToolCall, len(t.resp.ToolCalls))
	for i, c := range t.resp.ToolCalls {
		for k := 0; used[c.ID] || run.ValidateToolCallID(c.ID) != nil; k++ {
			c.ID = fmt.Sprintf("call_%d_%d", n, i)
			if k > 0 {
				c.ID += fmt.Sprintf("_%d", k)
			}
		}
		used[c.ID] = true
		calls[i] = c
	}
	turn := engine.Turn{Seq: x.tr.seq + 1, Content: t.text, Tail: t.tail, Calls: toRunCalls(calls), Usage: engine.Usage(t.resp.Usage), TTFT: x.ttft}
	first := x.seq + 1
	if err := x.write(ctx, func(wctx context.Context) error { return x.e.store.StoreTurn(wctx, x.fence, first, turn) }); err != nil {
		return err
	}
	x.seq += int64(len(calls))
	if t.tail != "" {
		x.seq++
	}
	x.tr.addTurn(turn.Seq, Message{Role: "assistant", Content: t.text, ToolCalls: calls}, t.resp.Usage)
	return nil
}

// storeRejected commits a final answer that did not match the agent's
// OutputSchema, as a step with no calls, so a later attempt does not ask
// for it again, and empties the run's content for the next answer. retry is
// outputCheck.judge's: the answer, then the message that says what was
// wrong, which go to the model next.
func (x *execution) storeRejected(ctx context.Context, t turnResult, retry []Message) error {
	why := "it did not match the schema"
	if invalid := validateAnswer(x.check.schema, t.text); invalid != nil {
		why = invalid.Error()
	}
	turn := engine.Turn{Seq: x.tr.seq + 1, Content: t.text, Tail: t.tail, Usage: engine.Usage(t.resp.Usage), Rejected: why, TTFT: x.ttft}
	first := x.seq + 1
	if err := x.write(ctx, func(wctx context.Context) error { return x.e.store.StoreTurn(wctx, x.fence, first, turn) }); err != nil {
		return err
	}
	x.seq++ // the output.rejected event
	if t.tail != "" {
		x.seq++
	}
	x.tr.addRejected(turn.Seq, retry, t.resp.Usage)
	return nil
}

// write sends one step write until it applies, the execution loses the run
// (run.ErrNotRunning), or finalWriteTimeout passes: a step must not be lost
// to a short Postgres outage, and resending it is safe (it applies only at
// its event seq). It does not end with the run's context: what finished is
// worth keeping even when the run is being stopped.
func (x *execution) write(ctx context.Context, do func(context.Context) error) error {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalWriteTimeout)
	defer cancel()
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		err := do(wctx)
		if err == nil || errors.Is(err, run.ErrNotRunning) {
			return err
		}
		if wait == 50*time.Millisecond { // once per write, not per try
			x.log.WarnContext(ctx, "kern: writing a step failed; sending it again", slog.Any("error", err))
		}
		select {
		case <-wctx.Done():
			return fmt.Errorf("a step could not be written: %w", err)
		case <-time.After(wait):
		}
	}
}

// metrics are the run's totals for the final write: the stored turns' and
// the last turn's, if it finished.
func (x *execution) metrics(end loopEnd) run.Metrics {
	u := x.tr.usage
	m := run.Metrics{TimeToFirstToken: x.ttft, ModelTurns: x.tr.turns, ToolCalls: x.tr.calls}
	if end.resp != nil {
		u.InputTokens += end.resp.Usage.InputTokens
		u.OutputTokens += end.resp.Usage.OutputTokens
		u.TotalTokens += end.resp.Usage.TotalTokens
		if end.err == nil {
			m.ModelTurns++
		}
	}
	m.InputTokens, m.OutputTokens, m.TotalTokens = u.InputTokens, u.OutputTokens, u.TotalTokens
	return m
}

// transcript is the run's conversation as the loop keeps it: the prompt,
// then every stored turn and result, in the order the model sees them.
type transcript struct {
	msgs  []Message // up to the last turn that asked for tools, and its results once all are in
	seq   int       // the last transcript seq stored or reserved
	turns int       // model turns stored
	calls int       // tool calls those turns asked for
	usage Usage     // of the stored turns

	turnSeq int        // the last stored turn's seq; its results take turnSeq+1 …
	results []*Message // the last turn's results by call index, nil while not in
	// approved are the calls approved while the run waited (by call id):
	// due, and made like any call.
	approved map[string]bool
}

// pendingCall is a call of the last turn whose result is not stored.
type pendingCall struct {
	index int
	seq   int
	call  ToolCall
}

func newTranscript(input string) *transcript {
	return &transcript{msgs: []Message{{Role: "user", Content: input}}, seq: 1}
}

// resumeTranscript rebuilds the transcript from the stored steps: finished
// turns are not asked again and returned tools not called again; only the
// last turn's calls without a stored result are pending. seq is the claim's
// TranscriptSeq.
func resumeTranscript(input string, seq int, steps []engine.Step, check *outputCheck) *transcript {
	t := newTranscript(input)
	for _, s := range steps {
		switch {
		case s.Role == "approved":
			if t.approved == nil {
				t.approved = make(map[string]bool)
			}
			t.approved[s.ToolCallID] = true
		case s.Role == "assistant" && len(s.ToolCalls) == 0:
			// A rejected answer: the message that said why is rebuilt, as
			// the same answer fails the same schema the same way.
			retry, _ := check.judge(s.Content)
			if retry == nil { // the schema changed since, and takes it now
				retry = []Message{{Role: "assistant", Content: s.Content}, answerRetryMessage(errors.New("it was rejected earlier"))}
			}
			t.addRejected(s.Seq, retry, Usage(s.Usage))
		case s.Role == "assistant":
			calls := make([]ToolCall, len(s.ToolCalls))
			for i, c := range s.ToolCalls {
				calls[i] = ToolCall(c)
			}
			t.addTurn(s.Seq, Message{Role: "assistant", Content: s.Content, ToolCalls: calls}, Usage(s.Usage))
		case s.Role == "tool":
			if i := s.Seq - t.turnSeq - 1; i >= 0 && i < len(t.results) {
				t.results[i] = &Message{Role: "tool", Content: s.Content, ToolCallID: s.ToolCallID}
			}
		}
	}
	t.seq = max(t.seq, seq)
	if len(t.pending()) == 0 {
		t.flush()
	}
	return t
}

// addTurn appends a stored turn; its calls are pending until complete.
func (t *transcript) addTurn(seq int, m Message, u Usage) {
	t.flush()
	t.msgs = append(t.msgs, m)
	t.turns++
	t.calls += len(m.ToolCalls)
	t.usage.InputTokens += u.InputTokens
	t.usage.OutputTokens += u.OutputTokens
	t.usage.TotalTokens += u.TotalTokens
	t.turnSeq, t.results = seq, make([]*Message, len(m.ToolCalls))
	t.seq = max(t.seq, seq+len(m.ToolCalls))
}

// addRejected appends a stored rejected answer and the message that tells
// the model why (outputCheck.judge's retry).
func (t *transcript) addRejected(seq int, retry []Message, u Usage) {
	t.addTurn(seq, retry[0], u)
	t.msgs = append(t.msgs, retry[1:]...)
}

// callIDs are the ids of every call the stored turns asked for.
func (t *transcript) callIDs() map[string]bool {
	ids := make(map[string]bool, t.calls)
	for _, m := range t.msgs {
		for _, c := range m.ToolCalls {
			ids[c.ID] = true
		}
	}
	return ids
}

func (t *transcript) pending() []pendingCall {
	if len(t.msgs) == 0 || len(t.results) == 0 {
		return nil
	}
	calls := t.msgs[len(t.msgs)-1].ToolCalls
	var out []pendingCall
	for i, r := range t.results {
		if r == nil {
			out = append(out, pendingCall{index: i, seq: t.turnSeq + 1 + i, call: calls[i]})
		}
	}
	return out
}

// record records the pending calls' outputs; flush moves the last turn's
// results into the conversation once all are in (calls that wait for an
// answer may still be out).
func (t *transcript) record(pending []pendingCall, outs []string) {
	for i, p := range pending {
		t.results[p.index] = &Message{Role: "tool", Content: outs[i], ToolCallID: p.call.ID}
	}
}

// flush appends the last turn's results to msgs. A result missing here can
// only be one an earlier turn never got (it cannot happen: the loop asks the
// model again only with every result in), and the model needs an answer to
// every call, so it is told.
func (t *transcript) flush() {
	if len(t.results) == 0 {
		return
	}
	calls := t.msgs[len(t.msgs)-1].ToolCalls
	for i, r := range t.results {
		if r == nil {
			r = &Message{Role: "tool", Content: "error: the result of this call was lost", ToolCallID: calls[i].ID}
		}
		t.msgs = append(t.msgs, *r)
	}
	t.results = nil
}

func callsOf(pending []pendingCall) []ToolCall {
	calls := make([]ToolCall, len(pending))
	for i, p := range pending {
		calls[i] = p.call
	}
	return calls
}

func toRunCalls(calls []ToolCall) []run.ToolCall {
	out := make([]run.ToolCall, len(calls))
	for i, c := range calls {
		out[i] = run.ToolCall(c)
	}
	return out
}
