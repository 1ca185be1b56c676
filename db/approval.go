package db

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

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
// and the transcript seq its turn reserved for its result.
type waitCall struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
	Seq       int    `json:"seq"`
}

// WaitForAnswers implements engine.Store, with StoreTurn's read-back.
func (d engineDB) WaitForAnswers(ctx context.Context, f engine.Fence, seq int64, calls []engine.WaitCall) error {
	if len(calls) == 0 {
		return fmt.Errorf("kern: %w: a run waits on at least one call", run.ErrInvalidArgument)
	}
	stored, shown := make([]waitCall, len(calls)), make([]wireCall, len(calls))
	for i, c := range calls {
		w := wireCall{ID: storable(c.Call.ID), Name: storable(c.Call.Name), Arguments: storable(c.Call.Arguments)}
		stored[i], shown[i] = waitCall{ID: w.ID, Name: w.Name, Arguments: w.Arguments, Seq: c.Seq}, w
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
		err := tx.QueryRow(ctx, sqlLockWaiting, runID).Scan(&status, &open, &agentName)
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
		rest := append(open[:idx:idx], open[idx+1:]...)
		restJS, err := json.Marshal(rest)
		if err != nil {
			return err
		}
		var jobID *int64
		if len(rest) == 0 {
			res, err := d.river.InsertTx(ctx, tx, engine.RunJobArgs{RunID: runID, AgentName: agentName}, nil)
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
