package db

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/kern-go/kern/internal/engine"
)

// The statements every executing run makes — StartRun, AppendContent,
// FinishRun, Heartbeat — each go through one batcher per DB, so the runs a
// worker executes at once share round trips and commits.
type execBatchers struct {
	start     *batcher[startItem, *startedRow]
	append    *batcher[appendItem, bool]
	finish    *batcher[finishItem, bool]
	heartbeat *batcher[engine.Fence, bool]
	turn      *batcher[turnItem, bool]
	result    *batcher[resultItem, bool]
}

func (d *DB) newExecBatchers() execBatchers {
	return execBatchers{
		start:     newBatcher(startItem.key, d.startBatch),
		append:    newBatcher(appendItem.key, d.appendBatch).withSize(func(a appendItem) int { return len(a.delta) }),
		finish:    newBatcher(finishItem.key, d.finishBatch).withSize(func(f finishItem) int { return len(f.Tail) + len(f.Error) }),
		heartbeat: newBatcher(fenceKey, d.heartbeatBatch),
		turn:      newBatcher(turnItem.key, d.turnBatch).withSize(turnItem.size),
		result:    newBatcher(resultItem.key, d.resultBatch).withSize(func(r resultItem) int { return len(r.Output) }),
	}
}

func fenceKey(f engine.Fence) string { return f.RunID }

type startItem struct {
	id            string
	jobID         *int64 // nil for a foreground run
	maxRunsPerKey int    // the claiming worker's WorkerConfig.MaxRunsPerKey
	worker        string // the claiming worker's id, "" for a foreground run
}

func (s startItem) key() string { return s.id }

type appendItem struct {
	engine.Fence
	seq   int64
	delta string
}

func (a appendItem) key() string { return a.RunID }

type finishItem struct {
	engine.Fence
	engine.Finish
}

func (f finishItem) key() string { return f.RunID }

// startedRow is a run just claimed, with its fence and its event position.
type startedRow struct {
	runRow
	Execution     int
	EventSeq      int64
	TranscriptSeq int
}

func (d *DB) startBatch(ctx context.Context, items []startItem) ([]*startedRow, error) {
	ids, jobs, workers := make([]string, len(items)), make([]*int64, len(items)), make([]*string, len(items))
	var limits []int32 // nil (SQL NULL) when no claim has a per-key limit
	for i, it := range items {
		ids[i], jobs[i], workers[i] = it.id, it.jobID, optional(it.worker)
		if it.maxRunsPerKey > 0 && limits == nil {
			limits = make([]int32, len(items))
		}
	}
	if limits != nil {
		for i, it := range items {
			limits[i] = int32(min(it.maxRunsPerKey, 1<<30))
		}
	}
	rows, err := d.pool.Query(ctx, sqlStartRuns, ids, jobs, limits, workers)
	if err != nil {
		return nil, err
	}
	started, err := pgx.CollectRows(rows, pgx.RowToAddrOfStructByPos[startedRow])
	if err != nil {
		return nil, err
	}
	byID := make(map[string]*startedRow, len(started))
	for _, r := range started {
		byID[r.ID] = r
	}
	out := make([]*startedRow, len(items))
	for i, it := range items {
		out[i] = byID[it.id]
	}
	return out, nil
}

func (d *DB) appendBatch(ctx context.Context, items []appendItem) ([]bool, error) {
	ids, executions, seqs, deltas := make([]string, len(items)), make([]int32, len(items)), make([]int64, len(items)), make([]string, len(items))
	for i, it := range items {
		ids[i], executions[i], seqs[i], deltas[i] = it.RunID, int32(it.Execution), it.seq, it.delta
	}
	return d.appliedTo(ctx, ids, sqlAppendContents, ids, executions, seqs, deltas)
}

func (d *DB) finishBatch(ctx context.Context, items []finishItem) ([]bool, error) {
	n := len(items)
	ids, attempts, statuses, tails, errs := make([]string, n), make([]int32, n), make([]string, n), make([]string, n), make([]string, n)
	inTok, outTok, totTok, ttft, dur := make([]int32, n), make([]int32, n), make([]int32, n), make([]int64, n), make([]int64, n)
	turns, calls := make([]int32, n), make([]int32, n)
	for i, it := range items {
		m := it.Metrics
		ids[i], attempts[i], statuses[i], tails[i], errs[i] = it.RunID, int32(it.Execution), string(it.Status), it.Tail, it.Error
		inTok[i], outTok[i], totTok[i] = int32(m.InputTokens), int32(m.OutputTokens), int32(m.TotalTokens)
		ttft[i], dur[i] = m.TimeToFirstToken.Microseconds(), m.Duration.Microseconds()
		turns[i], calls[i] = int32(m.ModelTurns), int32(m.ToolCalls)
	}
	return d.appliedTo(ctx, ids, sqlFinishRuns, ids, attempts, statuses, tails, errs, inTok, outTok, totTok, ttft, dur, turns, calls)
}

func (d *DB) heartbeatBatch(ctx context.Context, items []engine.Fence) ([]bool, error) {
	ids, attempts := make([]string, len(items)), make([]int32, len(items))
	for i, it := range items {
		ids[i], attempts[i] = it.RunID, int32(it.Execution)
	}
	return d.appliedTo(ctx, ids, sqlHeartbeats, ids, attempts)
}

// appliedTo runs a batched fenced write, which returns the run ids it
// applied to, and says for each of ids whether it was one.
func (d *DB) appliedTo(ctx context.Context, ids []string, sql string, args ...any) ([]bool, error) {
	rows, err := d.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	done, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	set := make(map[string]struct{}, len(done))
	for _, id := range done {
		set[id] = struct{}{}
	}
	out := make([]bool, len(ids))
	for i, id := range ids {
		_, out[i] = set[id]
	}
	return out, nil
}
