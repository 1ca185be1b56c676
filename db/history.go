package db

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/run"
)

// MaxHistoryRuns is the most earlier runs History reads for one run
// (Agent.HistoryRuns). Each run's content may be megabytes, and every one
// of them is sent to the model again on every turn of the new run, so the
// bound is about what a model's context can take, not about Postgres.
const MaxHistoryRuns = 100

// HistoryEntry is one earlier run of a session (engine.HistoryEntry).
type HistoryEntry = engine.HistoryEntry

// sqlHistory reads the last $4 runs of session $1 and agent $2 that come
// before run $3 in (created_at, id) order, oldest first.
//
// Which runs count:
//   - the current run's tenant's only. A session id names a conversation
//     within a tenant: another tenant's runs of the same session id are
//     another conversation, and replaying them would hand one tenant's
//     prompts and answers to another's model, and so to that tenant;
//   - finished ones only, so a run still going (or pending, or waiting) is
//     never half in a later run's history, and the current run (running
//     when this is read) is out by its position as well as its status;
//   - completed and cancelled runs with an answer. Error runs are left out:
//     the question of a failed run would be answered by the next run in its
//     place, and a prompt that failed because of itself (too long for the
//     model's context, refused by the provider) would fail every later run
//     of the session once replayed. A run with no content (cancelled before
//     a token came) has nothing to add;
//   - the limit counts runs that are included, so a session whose last runs
//     failed still gets up to $4 answers.
//
// kern_run_session_idx (session, tenant, created_at: migrations/018)
// serves it, read backwards from the current run's created_at: a call reads
// about $4 rows of the tenant's session (plus its runs of other agents and
// those left out), wherever in a long session the run is, and however many
// runs other tenants have under the same session id. The query says in so many words that session_id is not empty:
// only then can a plan use that partial index at all (its predicate must
// follow from the query's text). History has it planned for each call's
// session (see historyExecMode). The current run is found by its primary
// key; an id with no run reads nothing.
const sqlHistory = `
SELECT h.input, h.content, h.status FROM kern_run cur
CROSS JOIN LATERAL (
	SELECT r.id, r.created_at, r.input, r.content, r.status FROM kern_run r
	WHERE r.session_id = $1 AND r.session_id <> '' AND r.tenant_id = cur.tenant_id AND r.agent_name = $2
	  AND r.status IN ('completed', 'cancelled') AND r.content <> ''
	  AND (r.created_at, r.id) < (cur.created_at, cur.id)
	ORDER BY r.created_at DESC, r.id DESC
	LIMIT $4
) h
WHERE cur.id = $3
ORDER BY h.created_at, h.id`

// historyExecMode sends sqlHistory unprepared (an unnamed statement, one
// round trip), so Postgres plans every call for its session. A prepared
// statement may switch to a generic plan after five executions, and where
// the statistics show few sessions (one huge session among a handful, as
// in a benchmark) the generic plan for "session_id = $1" walks
// kern_run_created_idx through every other session's runs instead: 1,000
// rows read for a history of 10 in TestHistoryReadsAboutNRows. Planning
// costs well under a millisecond, once per run, against a model call.
const historyExecMode = pgx.QueryExecModeExec

// History returns the last n finished runs of session sessionID and agent
// agentName created before run beforeRunID, oldest first, of that run's
// tenant only: the earlier turns of the conversation that run continues
// (Agent.HistoryRuns). See sqlHistory for which runs count. Only inputs
// and final contents are read: the tool calls and results of earlier runs
// stay in their own transcripts.
//
// A run without a session has no history: sessionless runs of an agent are
// not one conversation. n must be in 0..MaxHistoryRuns.
func (d engineDB) History(ctx context.Context, sessionID, agentName, beforeRunID string, n int) ([]HistoryEntry, error) {
	if n < 0 || n > MaxHistoryRuns {
		return nil, fmt.Errorf("%w: history of %d runs is not in 0..%d", run.ErrInvalidArgument, n, MaxHistoryRuns)
	}
	if n == 0 || sessionID == "" {
		return nil, nil
	}
	rows, err := d.pool.Query(ctx, sqlHistory, historyExecMode, sessionID, agentName, beforeRunID, n)
	if err != nil {
		return nil, fmt.Errorf("read session history: %w", err)
	}
	entries, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (HistoryEntry, error) {
		var e HistoryEntry
		err := row.Scan(&e.Input, &e.Content, &e.Status)
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("read session history: %w", err)
	}
	return entries, nil
}
