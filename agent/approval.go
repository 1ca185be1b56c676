package agent

import (
	"context"
	"log/slog"

	"github.com/kern-go/kern/internal/engine"
)

// Answering what a waiting run waits for. A model turn that asks for calls
// of NeedsApproval or External tools is stored, the calls that need nothing
// run as usual, and the run moves to run.StatusWaiting with Output.Waiting
// listing the open calls: its job ends and no worker slot is held. Each
// open call is answered once (the first answer stands); the answer to the
// last one puts the run back to pending with a new job, and a worker
// continues from the stored transcript. See the package doc.

// ApproveToolCall approves call callID of waiting run runID; a worker
// makes the call once the run's calls are all answered. See
// db.DB.ApproveToolCall: run.ErrNotWaiting for a call the run is not
// waiting on (answered already, never asked), run.ErrNotFound for no run,
// run.ErrInvalidArgument for a call of an External tool (kern never makes
// it: its answer is SubmitToolResult).
func (a *Agent) ApproveToolCall(ctx context.Context, runID, callID string) error {
	if err := a.requireDB(); err != nil {
		return err
	}
	return a.DB.ApproveToolCall(ctx, runID, callID)
}

// RejectToolCall rejects call callID of waiting run runID: the call is
// not made and the model is told the reason. See db.DB.RejectToolCall.
func (a *Agent) RejectToolCall(ctx context.Context, runID, callID, reason string) error {
	if err := a.requireDB(); err != nil {
		return err
	}
	return a.DB.RejectToolCall(ctx, runID, callID, reason)
}

// SubmitToolResult answers call callID of waiting run runID (a call of an
// External tool) with output, which the model reads as the call's result.
// See db.DB.SubmitToolResult.
func (a *Agent) SubmitToolResult(ctx context.Context, runID, callID, output string) error {
	if err := a.requireDB(); err != nil {
		return err
	}
	return a.DB.SubmitToolResult(ctx, runID, callID, output)
}

// splitPending parts the pending calls of the last turn into those made
// now and those that wait for an answer: calls of External tools, and of
// NeedsApproval tools not approved yet. A call of an unknown tool is made
// now (its result says there is no such tool).
func (x *execution) splitPending(pending []pendingCall) (now, wait []pendingCall) {
	for _, p := range pending {
		if x.tools[p.call.Name].needsAnswer(x.tr.approved[p.call.ID]) {
			wait = append(wait, p)
		} else {
			now = append(now, p)
		}
	}
	return now, wait
}

// waitForAnswers moves the run to waiting on the calls; the execution
// ends after it, and with it the job. The calls made now have stored
// their results already (callTools returns once each is in).
func (x *execution) waitForAnswers(ctx context.Context, wait []pendingCall) error {
	x.writeMu.Lock()
	defer x.writeMu.Unlock()
	calls := make([]engine.WaitCall, len(wait))
	for i, p := range wait {
		tool := x.tools[p.call.Name]
		calls[i] = engine.WaitCall{Seq: p.seq, Call: toRunCalls([]ToolCall{p.call})[0], External: tool != nil && tool.External}
	}
	seq := x.seq + 1
	if err := x.write(ctx, func(wctx context.Context) error { return x.e.store.WaitForAnswers(wctx, x.fence, seq, calls) }); err != nil {
		return err
	}
	x.seq = seq
	x.log.InfoContext(ctx, "kern: run waits for answers", slog.Int("calls", len(calls)))
	return nil
}
