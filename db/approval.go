package db

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/run"
)

// Runs that wait for answers: see the package doc, "Runs that wait for
// answers". The worker's side is WaitForAnswers; the answerers' side is
// ApproveToolCall, RejectToolCall and SubmitToolResult.

// maxAnswerBytes bounds a submitted tool output (the default of
// WorkerConfig.MaxContentBytes, which bounds a tool's own output) and
// maxReasonBytes a rejection's reason.
const (
	maxAnswerBytes = 4 << 20
	maxReasonBytes = 64 << 10
)

// waitCall is an open call as kern_run.waiting_calls stores it: the call,
// the transcript seq its turn reserved for its result, and whether its
// tool is External (its answer is a result, never an approval; absent in
// the waits stored before kern knew it).
type waitCall struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
	Seq       int    `json:"seq"`
	External  bool   `json:"external,omitempty"`
}

// shownCall is an open call as the run.waiting event shows it: what
// answerers need, such as the dashboard, which offers no approval of an
// External call.
type shownCall struct {
	wireCall
	External bool `json:"external,omitempty"`
}

// WaitForAnswers implements engine.Store, with StoreTurn's read-back.
func (d engineDB) WaitForAnswers(ctx context.Context, f engine.Fence, seq int64, calls []engine.WaitCall) error {
	if len(calls) == 0 {
		return fmt.Errorf("kern: %w: a run waits on at least one call", run.ErrInvalidArgument)
	}
	stored, shown := make([]waitCall, len(calls)), make([]shownCall, len(calls))
	for i, c := range calls {
		w := wireCall{ID: storable(c.Call.ID), Name: storable(c.Call.Name), Arguments: storable(c.Call.Arguments)}
		stored[i] = waitCall{ID: w.ID, Name: w.Name, Arguments: w.Arguments, Seq: c.Seq, External: c.External}
		shown[i] = shownCall{wireCall: w, External: c.External}
	}
	storedJS, err := json.Marshal(stored)
	if err != nil {
		return fmt.Errorf("kern: wait for answers, run %q: %w", idOf(f.RunID), err)
	}
	shownJS, err := json.Marshal(shown)
	if err != nil {
		return fmt.Errorf("kern: wait for answers, run %q: %w", idOf(f.RunID), err)
	}
	tag, err := d.pool.Exec(ctx, sqlWaitForAnswers, f.RunID, f.Execution, seq, string(storedJS), string(shownJS),
		DefaultWaitTimeout.Milliseconds())
	applied := err == nil && tag.RowsAffected() == 1
	if err == nil && !applied {
		err = d.pool.QueryRow(ctx, sqlWaitApplied, f.RunID, f.Execution, seq).Scan(&applied)
	}
	return fenced("wait for answers,", f.RunID)(applied, err)
}

// ApproveToolCall approves call callID of waiting run runID: a worker
// serving the run's agent makes the call (never the caller of this
// method) once every call the run waits on is answered. The first answer
// to a call stands: a second one, or an answer to a call the run is not
// waiting on (never asked, or the run is running or finished), is
// run.ErrNotWaiting and changes nothing; an unknown run is
// run.ErrNotFound; a call id that run.ValidateToolCallID refuses is
// run.ErrInvalidArgument. The answer that closes the run's last open call puts
// the run back to pending with a new job, in the same transaction.
//
// A call of an External tool cannot be approved, since kern never makes
// it: that is run.ErrInvalidArgument and changes nothing (its answer is
// SubmitToolResult, or RejectToolCall). So is a second approval of a call
// the run waits on again after it was approved, which happens when the
// worker that resumed the run has the tool as External (a deploy changed
// it, or the wait was stored before kern told External calls apart): the
// result or rejection that answers it then takes the approval's place.
//
// When the commit's outcome is unknown (the connection dropped), asking
// again is safe: a second answer that finds the first applied is
// run.ErrNotWaiting.
func (d *DB) ApproveToolCall(ctx context.Context, runID, callID string) error {
	return d.operatorAnswer(ctx, runID, callID, "approved", "")
}

// RejectToolCall rejects call callID of waiting run runID: the call is not
// made, and the model reads "rejected: <reason>" as its result. Otherwise
// as ApproveToolCall.
func (d *DB) RejectToolCall(ctx context.Context, runID, callID, reason string) error {
	return d.operatorAnswer(ctx, runID, callID, "rejected", reason)
}

// SubmitToolResult answers call callID of waiting run runID, a call of an
// External tool (or of any tool the run waits on), with output: the model
// reads it as the call's result. Otherwise as ApproveToolCall.
func (d *DB) SubmitToolResult(ctx context.Context, runID, callID, output string) error {
	return d.operatorAnswer(ctx, runID, callID, "result", output)
}

// rejectedText is what the model reads for a rejected call.
func rejectedText(reason string) string {
	if reason == "" {
		return "rejected: the call was not allowed (no reason was given); do not retry it as is"
	}
	return "rejected: " + reason
}

// operatorAnswer is answer for the run that runID names when the operator
// asks (operatorKey).
func (d *DB) operatorAnswer(ctx context.Context, runID, callID, kind, text string) error {
	if err := checkAnswer(runID, callID, kind, text); err != nil {
		return err // says what, "kern: " first
	}
	key, err := d.operatorKey(ctx, runID)
	if err != nil {
		return err
	}
	return d.answer(ctx, key, callID, kind, text)
}

// answer answers call callID of the run of key; checkAnswer has passed.
func (d *DB) answer(ctx context.Context, key, callID, kind, text string) error {
	what := map[string]string{"approved": "approve", "rejected": "reject", "result": "submit the result of"}[kind]
	runID := key // the key below, the id in error texts (shown)
	err := pgx.BeginFunc(ctx, d.pool, func(tx pgx.Tx) error {
		var status, agentName string
		var open []waitCall
		var priority int
		err := tx.QueryRow(ctx, sqlLockWaiting, runID).Scan(&status, &open, &agentName, &priority)
		if errors.Is(err, pgx.ErrNoRows) {
			return run.ErrNotFound
		}
		if err != nil {
			return err
		}
		idx := -1
		for i, c := range open {
			if c.ID == callID {
				idx = i
			}
		}
		if run.Status(status) != run.StatusWaiting || idx < 0 {
			return run.ErrNotWaiting
		}
		call := open[idx]
		if err := checkAnswerKind(ctx, tx, runID, call, kind); err != nil {
			return err
		}
		rest := append(open[:idx:idx], open[idx+1:]...)
		restJS, err := json.Marshal(rest)
		if err != nil {
			return err
		}
		var jobID *int64
		if len(rest) == 0 {
			res, err := d.river.InsertTx(ctx, tx, engine.RunJobArgs{RunID: runID, AgentName: agentName}, &river.InsertOpts{Priority: priority})
			if err != nil {
				return fmt.Errorf("enqueue: %w", err)
			}
			jobID = &res.Job.ID
		}
		stepSeq, content, evType, evData := 0, "", string(run.EventToolApproved), map[string]string{"id": callID}
		switch kind {
		case "rejected":
			stepSeq, content, evType = call.Seq, rejectedText(text), string(run.EventToolRejected)
			evData["reason"] = text
		case "result":
			stepSeq, content, evType = call.Seq, text, string(run.EventToolResult)
			evData["name"], evData["output"] = call.Name, text
		}
		data, err := json.Marshal(evData)
		if err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, sqlAnswer, runID, string(restJS), jobID, callID, kind, text,
			stepSeq, content, evType, string(data), call.Name)
		if isUniqueViolation(err) {
			// Cannot happen under the lock and checkAnswerKind; should it,
			// the answer conflicts with one stored, and nothing was written.
			return fmt.Errorf("%w: the call's answer is stored already", run.ErrNotWaiting)
		}
		if err != nil {
			return err
		}
		if tag.RowsAffected() != 1 {
			return run.ErrNotWaiting // cannot happen under the lock; said rather than assumed
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("kern: %s tool call %q of run %q: %w", what, callID, idOf(key), err)
	}
	return nil
}

// checkAnswerKind refuses, under the run's lock, an answer the call cannot
// take: an approval of an External call, or of a call approved already
// that the run waits on again (its tool needs a result now). A call that
// has a result or a rejection stored is answered already; the run cannot
// wait on it again (its tool step is stored), but should it, that is said.
func checkAnswerKind(ctx context.Context, tx pgx.Tx, runID string, call waitCall, kind string) error {
	if kind == "approved" && call.External {
		return fmt.Errorf("%w: tool %q is External: kern never makes its calls, so they are answered with their result (SubmitToolResult) or rejected, not approved",
			run.ErrInvalidArgument, call.Name)
	}
	var prior string
	err := tx.QueryRow(ctx, sqlPriorAnswer, runID, call.ID).Scan(&prior)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil
	case err != nil:
		return err
	case prior != "approved":
		return fmt.Errorf("%w: the call was answered already (%s)", run.ErrNotWaiting, prior)
	case kind == "approved":
		return fmt.Errorf("%w: the call was approved already and the run waits on it again: its tool %q needs a result now (SubmitToolResult), or a rejection",
			run.ErrInvalidArgument, call.Name)
	}
	return nil
}

// checkAnswer validates an answer before anything is read or written.
func checkAnswer(runID, callID, kind, text string) error {
	if err := run.ValidateID(runID); err != nil {
		return err
	}
	// The agent loop stores no id this refuses, so such an id names no
	// call; refusing it says so (400, not 409) and keeps ids that read as
	// paths ("../other-run/tool-calls/x") out of the answer routes.
	if err := run.ValidateToolCallID(callID); err != nil {
		return err
	}
	switch kind {
	case "rejected":
		return checkText("reason", text, maxReasonBytes)
	case "result":
		return checkText("output", text, maxAnswerBytes)
	}
	return nil
}

// expireWaits ends, in the rescue's transaction, a bounded batch of runs
// that waited for answers longer than their wait timeout, as error.
func expireWaits(ctx context.Context, tx pgx.Tx) ([]string, error) {
	rows, err := tx.Query(ctx, sqlExpiredWaits)
	if err != nil {
		return nil, err
	}
	type expired struct {
		ID          string
		WaitTimeout int64
	}
	runs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[expired])
	if err != nil || len(runs) == 0 {
		return nil, err
	}
	ids, msgs := make([]string, len(runs)), make([]string, len(runs))
	for i, r := range runs {
		limit := DefaultWaitTimeout
		if r.WaitTimeout > 0 {
			limit = time.Duration(r.WaitTimeout) * time.Millisecond
		}
		ids[i], msgs[i] = r.ID, fmt.Sprintf("waited too long for an answer (%v)", limit)
	}
	rows, err = tx.Query(ctx, sqlExpireWaits, ids, msgs)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}
