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

// A tool run's transcript: the steps between the prompt and the final
// answer, one kern_run_step row each (see the package doc).

type turnItem struct {
	engine.Fence
	seq   int64 // the first event seq the turn's events take
	turn  engine.Turn
	calls string // the turn's calls as JSON: [{"id","name","arguments"}]
}

func (t turnItem) key() string { return t.RunID }
func (t turnItem) size() int   { return len(t.turn.Content) + len(t.turn.Tail) + len(t.calls) }

type resultItem struct {
	engine.Fence
	seq int64
	engine.ToolResult
}

func (r resultItem) key() string { return r.RunID }

// wireCall is a tool call as the transcript and the tool.call event store
// it.
type wireCall struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

// StoreTurn implements engine.Store. Like AppendContent, a write that did
// not apply is read back: the execution still owns the run and its events
// reached the turn's last one means an earlier try committed (nil);
// otherwise the execution lost the run (run.ErrNotRunning).
func (d engineDB) StoreTurn(ctx context.Context, f engine.Fence, seq int64, t engine.Turn) error {
	if (len(t.Calls) == 0) == (t.Rejected == "") {
		return fmt.Errorf("kern: %w: a stored turn has tool calls or is a rejected answer", run.ErrInvalidArgument)
	}
	calls := make([]wireCall, len(t.Calls))
	for i, c := range t.Calls {
		calls[i] = wireCall{ID: storable(c.ID), Name: storable(c.Name), Arguments: storable(c.Arguments)}
	}
	js, err := json.Marshal(calls)
	if err != nil {
		return fmt.Errorf("kern: store turn of run %q: %w", idOf(f.RunID), err)
	}
	t.Content, t.Tail = storable(t.Content), storable(t.Tail)
	last := seq + int64(max(len(t.Calls), 1)) - 1 // a rejected answer's one event
	if t.Tail != "" {
		last++
	}
	applied, err := d.exec.turn.do(ctx, turnItem{Fence: f, seq: seq, turn: t, calls: string(js)})
	if err == nil && !applied {
		err = d.pool.QueryRow(ctx, sqlAppendApplied, f.RunID, f.Execution, last).Scan(&applied)
	}
	return fenced("store a turn of", f.RunID)(applied, err)
}

// StoreToolResult implements engine.Store, with StoreTurn's read-back.
func (d engineDB) StoreToolResult(ctx context.Context, f engine.Fence, seq int64, r engine.ToolResult) error {
	r.CallID, r.Name, r.Output = storable(r.CallID), storable(r.Name), storable(r.Output)
	applied, err := d.exec.result.do(ctx, resultItem{Fence: f, seq: seq, ToolResult: r})
	if err == nil && !applied {
		err = d.pool.QueryRow(ctx, sqlAppendApplied, f.RunID, f.Execution, seq).Scan(&applied)
	}
	return fenced("store a tool result of", f.RunID)(applied, err)
}

func (d *DB) turnBatch(ctx context.Context, items []turnItem) ([]bool, error) {
	n := len(items)
	ids, executions, seqs, steps := make([]string, n), make([]int32, n), make([]int64, n), make([]int32, n)
	contents, tails, calls, rejected := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	inTok, outTok, totTok, ttft := make([]int32, n), make([]int32, n), make([]int32, n), make([]int64, n)
	for i, it := range items {
		ids[i], executions[i], seqs[i], steps[i] = it.RunID, int32(it.Execution), it.seq, int32(it.turn.Seq)
		contents[i], tails[i], calls[i], rejected[i] = it.turn.Content, it.turn.Tail, it.calls, storable(it.turn.Rejected)
		u := it.turn.Usage
		inTok[i], outTok[i], totTok[i], ttft[i] = int32(u.InputTokens), int32(u.OutputTokens), int32(u.TotalTokens), it.turn.TTFT.Microseconds()
	}
	return d.appliedTo(ctx, ids, sqlStoreTurns, ids, executions, seqs, steps, contents, tails, calls, inTok, outTok, totTok, rejected, ttft)
}

func (d *DB) resultBatch(ctx context.Context, items []resultItem) ([]bool, error) {
	n := len(items)
	ids, executions, seqs, steps := make([]string, n), make([]int32, n), make([]int64, n), make([]int32, n)
	callIDs, names, outputs := make([]string, n), make([]string, n), make([]string, n)
	for i, it := range items {
		ids[i], executions[i], seqs[i], steps[i] = it.RunID, int32(it.Execution), it.seq, int32(it.Seq)
		callIDs[i], names[i], outputs[i] = it.CallID, it.Name, it.Output
	}
	return d.appliedTo(ctx, ids, sqlStoreToolResults, ids, executions, seqs, steps, callIDs, names, outputs)
}

// Steps implements engine.Store.
func (d engineDB) Steps(ctx context.Context, runID string) ([]engine.Step, error) {
	rows, err := d.pool.Query(ctx, sqlSteps, runID)
	if err != nil {
		return nil, fmt.Errorf("kern: read the transcript of run %q: %w", idOf(runID), err)
	}
	steps, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (engine.Step, error) {
		var s engine.Step
		var calls string
		err := row.Scan(&s.Seq, &s.Role, &s.Content, &calls, &s.ToolCallID, &s.ToolName,
			&s.Usage.InputTokens, &s.Usage.OutputTokens, &s.Usage.TotalTokens, &s.At)
		if err == nil && calls != "" {
			s.ToolCalls, err = decodeCalls([]byte(calls))
		}
		return s, err
	})
	if err != nil {
		return nil, fmt.Errorf("kern: read the transcript of run %q: %w", idOf(runID), err)
	}
	return steps, nil
}

func decodeCalls(js []byte) ([]run.ToolCall, error) {
	var wire []wireCall
	if err := json.Unmarshal(js, &wire); err != nil {
		return nil, err
	}
	out := make([]run.ToolCall, len(wire))
	for i, c := range wire {
		out[i] = run.ToolCall{ID: c.ID, Name: c.Name, Arguments: c.Arguments}
	}
	return out, nil
}

// Messages returns the run's transcript, in order: the prompt (seq 1), each
// model turn that asked for tool calls and each tool result, then the final
// answer. The agent's instructions are not part of it. An unknown run is
// run.ErrNotFound.
//
// Only the intermediate steps are stored as steps; the prompt is the run's
// input and the final answer its content (see the package doc), so a plain
// run reads as two messages without ever having written a step. The final
// assistant message is there when the run completed, or ended cancelled or
// as error with a partial answer; a run still executing shows the steps
// committed so far, not the turn being streamed. A tool call that never got
// a result (the run was cancelled, or ended at its MaxSteps, while it was
// due) has no tool message. Seqs are 1, 2, 3 … without gaps.
func (d *DB) Messages(ctx context.Context, runID string) ([]run.Message, error) {
	key, err := d.operatorKey(ctx, runID)
	if err != nil {
		return nil, err
	}
	return d.messages(ctx, key)
}

// messages is Messages of the run of key.
func (d *DB) messages(ctx context.Context, key string) ([]run.Message, error) {
	runID := idOf(key)
	var (
		input, content, status string
		created                time.Time
		finished               *time.Time
		stepsJSON              []byte
	)
	err := d.pool.QueryRow(ctx, sqlMessages, key).Scan(&input, &content, &status, &created, &finished, &stepsJSON)
	if errors.Is(err, pgx.ErrNoRows) {
		err = run.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("kern: messages of run %q: %w", idOf(runID), err)
	}
	var steps []struct {
		Role       string          `json:"role"`
		Content    string          `json:"content"`
		ToolCalls  json.RawMessage `json:"tool_calls"`
		ToolCallID string          `json:"tool_call_id"`
		At         time.Time       `json:"at"`
	}
	if err := json.Unmarshal(stepsJSON, &steps); err != nil {
		return nil, fmt.Errorf("kern: messages of run %q: %w", idOf(runID), err)
	}
	msgs := make([]run.Message, 0, len(steps)+2)
	msgs = append(msgs, run.Message{Role: "user", Content: input, At: created})
	for _, s := range steps {
		m := run.Message{Role: s.Role, Content: s.Content, ToolCallID: s.ToolCallID, At: s.At}
		if len(s.ToolCalls) > 0 && string(s.ToolCalls) != "null" {
			if m.ToolCalls, err = decodeCalls(s.ToolCalls); err != nil {
				return nil, fmt.Errorf("kern: messages of run %q: %w", idOf(runID), err)
			}
		}
		msgs = append(msgs, m)
	}
	st := run.Status(status)
	if st == run.StatusCompleted || (st.Terminal() && content != "") {
		at := created
		if finished != nil {
			at = *finished
		}
		msgs = append(msgs, run.Message{Role: "assistant", Content: content, At: at})
	}
	for i := range msgs {
		msgs[i].Seq = i + 1
	}
	return msgs, nil
}
