// Package db is kern's storage: every SQL statement kern runs, the schema
// migrations (kern's via tern, River's via rivermigrate), and the one
// LISTEN connection per process that wakes waiters.
//
// # What an application sees, and what it does not
//
// DB's methods are the application's API: submit (SubmitRun; agent.Run
// builds on it), read (GetRun, ListRuns, Events), wait (WaitRun), cancel
// (CancelRun), clear (DeleteRuns), Migrate. The statements of a run's
// execution — claim, content, heartbeat, finish, retry, hand-back, rescue,
// worker registration, the listener's subscriptions — are in this package
// too, next to the rest of the SQL, but on an unexported type that
// implements engine.Store (internal/engine). Package agent reaches it
// through DB.Engine, whose key type only kern's own packages can name, so an
// application cannot start, fence or finish a run by hand.
//
// # Tenants: run ids per tenant, one key per run
//
// A run belongs to a tenant ("" is the operator's own), and run ids are per
// tenant: two tenants may each have a run "order-7". Every table, River job
// and notification names a run by its key (engine.RunKey: the id for the
// operator's runs, tenant + "\x1e" + id for a tenant's; runkey.go), so every
// statement about a run is already about one tenant's run, and a tenant's
// request (a cancel, an answer, a read) can only ever reach its own. What
// leaves the package names the run by its id. TenantDB derives the key from
// its tenant; DB reads its own run of an id first, else the one tenant's,
// and refuses an id several tenants use (run.ErrInvalidArgument).
//
// # The flow of a run through the database
//
//  1. SubmitRun inserts the run row (pending) and, for a background run, its
//     River job, in one transaction: no row without a job, no job without a
//     row. A duplicate id is a unique violation: run.ErrAlreadyExists, and
//     the first run is untouched (there is no ON CONFLICT DO UPDATE). The
//     workers of the run's queue are woken after the commit (notify.go:
//     at least once per committed submit, at most 20 ms later under load;
//     a lost notification costs a poll, never a run).
//  2. A worker claims it with StartRun: one conditional UPDATE that moves
//     pending to running, or straight to cancelled when the cancel table has
//     a request for the id; then the model is never called.
//  3. Streamed content is appended in batches (AppendContent), each write
//     fenced by status = 'running', the execution, and the event seq it
//     takes (see "Executions, fencing and content written once").
//  4. FinishRun writes the terminal status, fenced by status and execution.
//  5. Every terminal transition writes the run's terminal event, and a
//     trigger on the event table notifies kern_event with the run id and a
//     "done" mark; WaitRun and event followers sleep on it through the
//     shared listener.
//
// The listener LISTENs only on the channels its subscribers need right now:
// kern_cancel while runs execute, kern_event while someone waits or follows
// events. A worker process therefore does not receive the event
// notifications of every run on the cluster, and adding workers does not
// multiply what Postgres delivers per run. A subscription that needs a new
// channel interrupts the listener's wait; the LISTEN is followed by a
// re-check, so nothing sent before it is missed.
//
// Event notifications are sent at all only while some process listens for
// them: a listener that LISTENs on kern_event registers in
// kern_event_listener (renewed every 10 s, expiring after 30 s), and the
// event trigger notifies only while a registration is live. A transaction
// that notifies takes Postgres's cluster-wide notification lock at commit
// and holds it through its WAL flush, so notifying writers commit one at a
// time; a fleet that nobody follows no longer pays that on every claim and
// final write. The listener LISTENs before it registers, so a writer that
// sees the registration notifies a connection that listens; a statement
// that began before the registration was visible sends nothing, which the
// re-checks right after registering, 100 ms later, and every second after
// that cover, as for any lost notification. Waiting and following stay at
// least as prompt as before; only the first waiter of a process can be
// woken by a re-check instead of a notification, and only for a run that
// finished while it registered.
//
// # Why a cancel that answered true always ends cancelled
//
// CancelRun first commits a row in kern_run_cancel, then, in a second
// transaction, runs UPDATE … SET status = 'cancelled' WHERE id = $1 AND
// status IN ('pending', 'running'). The guarantees follow from three facts:
//
//   - Statuses only move forward, and every status write is conditional on
//     the current status, so a terminal status is never overwritten.
//   - The cancel UPDATE and the worker's FinishRun UPDATE both take the row
//     lock and re-check their WHERE clause against the latest row version
//     (Postgres re-evaluates it after waiting for a concurrent writer). So
//     exactly one of them applies: if FinishRun applied first, the cancel
//     UPDATE matches nothing, CancelRun sees completed/error, withdraws its
//     request and answers false; if the cancel applied first, FinishRun
//     matches nothing and the run stays cancelled.
//   - When the run does not exist yet (cancel-before-start), the request was
//     committed before CancelRun answered true. The run's row is committed
//     later or concurrently; either the cancel UPDATE sees it (and cancels
//     it), or it was not yet visible, in which case the submit committed
//     after the request did, and so did every StartRun of it, which
//     therefore sees the request and moves the run straight to cancelled.
//     That is why the request must commit in its own transaction before the
//     UPDATE: within one transaction a worker could start the run between
//     the UPDATE and the commit without seeing the request.
//
// A request for a run that never comes does not last forever: DeleteRuns
// (the workers' Retention, a day by default) removes it once it is older
// than its OlderThan, and a run submitted with that id later is not
// cancelled by it.
//
// The model call is interrupted by a notification on kern_cancel (sent by a
// trigger when the request row is inserted), with a once-a-second re-check
// of the cancel table as the fallback when a notification is lost.
//
// # Cancel reaches the whole tree below a run
//
// A run may have children (SubmitParams.ParentRunID: a sub-agent's runs),
// and those children of their own, at most MaxRunDepth deep. CancelRun of
// a run cancels every live run (pending, running, waiting) below it, and
// the invariant above holds for each of them, because the two steps keep
// their order for the whole tree: the first transaction commits the
// requests of the run and of every live run below it at once (one
// statement walking parent_run_id down, sqlInsertTreeCancel); only then is
// each moved to cancelled by sqlCancelRun, one transaction per run. A run
// below that had already finished is left alone, and the walk goes on
// through it to its own live children. What CancelRun answers is about the
// run itself; its live descendants are cancelled whatever it was.
//
// Exactly once: each run's request (ON CONFLICT DO NOTHING), its
// notification on kern_cancel (sent by the insert's trigger, so only for a
// new request), its move to cancelled and its run.cancelled event (the
// move is conditional on a live status). At least once: the second step
// itself. If CancelRun fails after the first, the committed requests still
// end every run they name as cancelled — a pending one at its start, a
// running one through its worker, told by the notification, a waiting one
// when it resumes — and CancelRun again, idempotent, finishes the second
// step at once.
//
// A child submitted while a run above it is being cancelled is reached
// too. The submit commits the child, then reads whether a run above it
// has a cancel request, and if one has, cancels the child; the cancel
// commits its requests, then walks the tree a second time. Each side
// writes before it reads, in statements of their own, so at least one of
// the two reads sees the other's write: the child is cancelled by its
// submit or by the second walk. A child below a run cancelled long before
// ends cancelled the same way. A submit in the caller's transaction
// (SubmitParams.Tx) can only read before its commit: it records the
// child's request in the transaction when a run above has one already,
// but a cancel that runs while the transaction is open may miss the child
// (CancelRun again reaches it).
//
// # Attempts, retries and rescue
//
// A run's attempt counts its executions. StartRun takes the next one, and
// every later write of that execution (content, heartbeat, final status) is
// fenced by it: a worker that lost its run — to a cancel, or to a rescue
// after it stalled — matches no row and stops. A retryable failure puts the
// run back to pending (RetryRun) with the error visible; a graceful shutdown
// hands it back (ReleaseRun) and gives the attempt back too.
//
// Only the run's current River job may start it (job_id fencing), so a job
// left over from a rescue never starts the run a second time.
//
// Workers heartbeat their running runs; RescueStale re-queues a running run
// whose heartbeat is older than the worker's RescueAfter with a new job (or
// ends it as error when its attempts are used up). River's own rescuer
// waits an hour. RescueStale also re-queues, with a new job, an orphaned
// pending run — one nobody will start. A pending run is orphaned when it has
// been left alone for RescueAfter (since it was created, since its last
// event, and past heartbeat_at, which a foreground submit sets to now and a
// retry to when the retry is due, so a run waiting out its backoff is not
// one) and its job cannot start it: a worker took the job more than
// RescueAfter ago and died before claiming the run, the job ended
// (discarded, cancelled, completed) or is gone, or there is none — a
// foreground run whose caller died.
//
// # Crash recovery
//
// A dead worker's runs are rescued in about a second, not after RescueAfter.
// Each worker keeps one Postgres connection of its own open while it runs
// (engine.Store.OpenSession) and holds a session advisory lock on it, its
// liveness lock (pg_advisory_lock(k, n): k derived from kern's schema, n
// the session's number from kern_worker_session_lock_seq). It records the
// lock's number on its kern_worker row, with the session's backend pid and
// start and the start of the server instance. Its claims record the worker
// on the run (kern_run.worker_id). When the process dies — SIGKILL, the OOM
// killer, a deploy — the kernel closes its sockets; Postgres ends the
// session, or a session pooler runs its reset query (DISCARD ALL) on the
// backend it keeps; either releases the lock. Every worker probes four
// times a second whether a running run's worker holds its lock no more
// (pg_locks, which shows every role's locks: sqlDeadSessionRuns, through
// kern_run_worker_idx), and RescueStale treats such runs as stale at once
// (deadWorkers), saying so in the run's error: "worker lost: its Postgres
// session ended", where a stale heartbeat says "no heartbeat for …".
//
// A worker never takes a connection it cannot verify for its session:
// OpenSession asks its connection and a second one for their backends (a,
// b, a, b) and records the session only if the backends are two and stay
// put, and only if the backend that records it holds the lock (one
// statement). Behind a transaction pooler — where a connection's next
// statement may run on another backend, and the pooler recycles backends
// on its own schedule — the session goes on the direct URL
// (WithDirectURL); without one the worker records no session and is
// judged by its heartbeats alone (RescueAfter). Every heartbeat the worker
// checks that its connection still holds the lock, and opens a new
// session when it does not.
//
// The same goes for the completion and webhook jobs (kern_complete,
// kern_webhook) a dead worker held. A worker's River client has the
// worker's id, so a running job names its holder last in River's
// attempted_by; the probe also looks for running hook jobs whose holder's
// session is gone, and RescueStale makes them available again at once
// (sqlRescueHookJobs), the attempt recorded in the job's errors as River's
// own rescue would (a job out of attempts is discarded), and wakes their
// queues' workers. River's stuck-job rescue would take an hour
// (RescueStuckJobsAfter). The same rules keep a live worker's jobs: only a
// lock released on the server instance it was recorded on counts.
// A worker whose connection dropped while its process lives may so run a
// hook again elsewhere while its own call is still going: hooks are at
// least once either way.
//
// No run is rescued from a worker that is alive because of this:
//   - a session recorded on an earlier server instance counts for nothing.
//     A Postgres restart (or a failover) ends every session at once, the
//     live workers' too; until each worker records its new session, at its
//     next heartbeat, it is judged by its runs' heartbeats, as before;
//   - a worker closes its session last on Stop, after its runs finished or
//     were handed back, and unregisters before that.
//
// A worker whose own connection drops while Postgres stays up (a network
// cut) does look dead: its runs are rescued, and its fenced writes then
// fail — each run still completes once. The heartbeat stays the fallback
// for a host cut off without its sockets closing, for foreground runs
// (no worker), and for a worker whose session could not be recorded.
//
// Every worker rescues every HeartbeatInterval, so the work of one rescue
// is bounded whatever the backlog; a backlog of pending runs waiting for
// busy workers is never scanned. Stale running runs come from the partial
// index of running runs (as many as the fleet runs at once); orphans from
// the jobs River has running, the jobs discarded or cancelled in the last
// hour, the partial index of pending foreground runs (live ones only), and
// a sweep: each rescue looks at the next 100 runs in id order after a
// cursor the fleet shares (kern_rescue_sweep), the backstop that in time
// finds any orphan, such as one whose job row was deleted by hand.
//
// Model calls are therefore at least once: a worker killed mid-answer has
// spent tokens that the rescuing attempt spends again. A run's status and
// content, though, are written exactly once: by the attempt that owns it.
// A tool run loses less: its finished steps are kept (see "Tool runs and
// their transcript"), so only the step in flight is redone.
//
// # Executions, fencing and content written once
//
// Every start of a run takes the next value of its execution counter, which
// only ever grows (attempt, by contrast, counts the executions that used up
// an attempt, so a hand-back gives one back and it can repeat). Every write
// of an execution — content, heartbeat, final status, retry, hand-back — is
// conditional on status = 'running' and that execution, so a worker that
// lost its run (to a cancel, a rescue, or a hand-back) matches no row, and
// no two executions of a run ever hold the same fence; run.started carries
// it as "execution".
//
// Content is written exactly once even when a write's outcome is unknown
// (the connection dropped, the reply timed out — possibly after Postgres
// committed). Each content chunk names the event seq its content.delta takes
// and applies only right after seq-1; the worker keeps a chunk in doubt
// aside and sends exactly it again, at the same seq, before anything else.
// If the first try had committed, the second matches nothing and a fresh
// read (a new statement, so it also sees a try that committed while this one
// waited for the row lock) finds the chunk in the run: success. So the
// content is never doubled, and the deltas always add up to it. The final
// write is idempotent by its status condition.
//
// # Routing runs to the workers that serve their agent
//
// Each agent's runs have a River queue of their own (engine.QueueFor: a
// readable form of the name plus a hash of it), and a worker works only the
// queues of the agents it serves, so a run is never fetched by a worker
// that cannot execute it. A worker's MaxConcurrentRuns is its total across
// its queues: a worker of several agents that is full puts a fetched job
// back (a River snooze, no attempt used) for another worker. Workers
// register the agents they serve in kern_worker and renew it every
// heartbeat; a pending background run whose agent no live worker serves
// reads (GetRun, ListRuns, WaitRun's result) with an Error saying so, and
// starts when one does. Migrate moves unfinished jobs left on the single
// queue of earlier releases to their agents' queues.
//
// # Batched statements
//
// SubmitRun and the statements every executing run makes (StartRun,
// AppendContent, FinishRun, Heartbeat, and a tool run's StoreTurn and
// StoreToolResult) are group-committed. A call that
// finds no statement of its kind in flight goes out at once, alone; calls
// that arrive meanwhile wait (at most two are in flight per kind and DB)
// and then go out together, up to 128 items or 4 MiB in one batch. A lone
// run pays no extra latency; busy submitters and workers pay Postgres's
// per-statement and per-commit costs, and the notification queue's lock,
// once per batch instead of once per run. This is what puts kern's
// throughput above the run-shaped River floor's (BENCHMARKS.md).
//
// Each item of a batch keeps its own conditions (status, execution, seq, job), so
// everything above holds run by run. A batch of submits is one statement
// (sqlSubmitRuns) inserting every run's job into river_job, as River's own
// insert writes it, and every run's row with its job's id; like any other
// batch, one statement, so one transaction. (A submit in the caller's
// transaction, and a schedule's, insert the job through River instead.)
// Items are sent in run-id order, so two batches lock shared rows in the
// same order. A batch that fails for
// any reason but Postgres being away (a statement timeout included) is
// retried item by item, so one bad item (a duplicate id, say) cannot fail
// the rest; each of these round trips has a deadline of its own, and should
// Postgres go away meanwhile, the items not yet tried fail with that error.
// A caller whose context ends before its item is sent withdraws it; once
// sent, it waits for the outcome, because the write may have happened.
//
// # Events
//
// Every statement that changes a run also appends its event (run.started,
// content.delta, run.retrying, run.released, and one terminal event),
// taking the seq from the run's own counter under the row lock: seqs are
// gap-free and commit in order, and the deltas add up to the content. A new
// attempt starts its content afresh: it is the concatenation of the deltas
// after the last run.started, run.retrying or run.released — or, in a tool
// run, tool.call or tool.result, since the content is the current turn's.
//
// # Tool runs and their transcript
//
// A run of an agent with tools is a loop of model turns and tool calls.
// Its transcript is the prompt, every model turn, every tool result and the
// final answer; only the steps in between are rows of their own, in
// kern_run_step keyed by (run id, seq): each finished model turn that asked
// for tool calls (its content, its calls as JSON, its token usage) and each
// tool result. The prompt is the run's input (seq 1) and the final answer
// its content, so a plain run — no tools, one turn — writes no step and
// makes no statement it did not make before; Messages puts the transcript
// together from both (the final assistant message only once the run has
// ended with content: completed, or a cancelled or failed run's partial
// answer).
//
// StoreTurn commits a turn, with the unflushed tail of its content as a
// content.delta, one tool.call event per call, and the run's content reset
// to empty (the turn's text is in its step; the content column holds the turn
// being streamed, and so ends as the final answer). A turn at seq s with n
// calls reserves s+1 … s+n for their results, in the order the model asked:
// StoreToolResult commits each result at its seq, with its tool.result
// event, whenever the call returns, so the transcript reads in the asked
// order while the events are in commit order. Both are fenced like content:
// status 'running', the execution, and the event seq they take (applied only
// right after seq-1; a turn also only right after transcript seq s-1), so a
// write in doubt sent again applies once, and the read-back after a write
// that did not apply tells one that had (nil) from a lost run
// (run.ErrNotRunning). The worker writes a run's steps one at a time, after
// settling its content buffer, so event seqs stay gap-free.
//
// The claim returns the run's transcript_seq, the last seq stored or
// reserved (1: no steps), so an execution learns whether it resumes without
// another round trip, and reads the steps only when there are some. A
// retry, a rescue after a crash or a graceful hand-back thus resumes from
// the transcript:
//
//   - a finished model turn is exactly once: its step committed before the
//     loop went on, so no later attempt asks it again (no tokens re-billed);
//     only the turn in flight when the attempt ended is asked again, which
//     makes model calls as a whole at least once;
//   - a tool call whose result committed is exactly once: the stored result
//     is reused. A call in flight when the attempt ended, or whose result
//     could not be committed, is made again by the next attempt: tool calls
//     are at least once, which is why a tool gets an idempotency key,
//     agent.ToolCallID, "<run id>/<tool call id>": the call id is stored
//     with its turn (the model's, or "call_<turn>_<index>" when it gave
//     none), so it is the same on every attempt.
//
// The run's tokens, ModelTurns and ToolCalls add up the stored turns and the
// last one: each step write adds its turn's to the run's columns, and the
// final write sets the totals. DeleteRuns deletes a run's steps with it.
//
// # Runs that wait for answers
//
// A model turn that asks for calls of tools that need an answer
// (agent.Tool.NeedsApproval, agent.Tool.External) is stored like any turn;
// the calls that need nothing are made and their results committed; then
// WaitForAnswers moves the run to 'waiting' in one fenced statement: the
// open calls in waiting_calls (each with the transcript seq its turn
// reserved for its result, and whether its tool is External), waiting_until = now + the run's wait timeout
// (SubmitParams.WaitTimeout, DefaultWaitTimeout when 0), no job, no
// heartbeat, and its run.waiting {"calls":[…]} event, whose notification
// carries the done mark so WaitRun wakes (WaitRun returns a waiting run).
// The execution returns and River completes its job: a waiting run holds
// no worker slot and no connection, and needs no process at all — it is a
// row, so it survives any restart.
//
// An answer (ApproveToolCall, RejectToolCall, SubmitToolResult) is one
// transaction. It first locks the run row (SELECT … FOR UPDATE) and finds
// the call among waiting_calls; a run that is not waiting, or whose
// waiting_calls no longer hold the call, is run.ErrNotWaiting and nothing
// is written. So the first answer to a call stands: concurrent answers
// queue on the row lock, and each later one finds the call gone (the
// primary key of kern_run_answer, (run_id, call_id), backs that up). An
// approval of an External call is run.ErrInvalidArgument and writes
// nothing: kern never makes the call, its answer is its result. The
// answer removes the call from waiting_calls, records itself in
// kern_run_answer, appends its event (tool.approved {"id"}, tool.rejected
// {"id","reason"}, or tool.result {"id","name","output"} for a submitted
// result), and for a rejection or a result writes the call's tool step at
// its reserved seq ("rejected: <reason>", or the output), so the execution
// that continues finds it stored like any result. The answer to the last
// open call also puts the run back to pending, with a new River job
// inserted in the same transaction (no pending run without its job), and
// gives the attempt back, as a hand-back does: a wait is not a failure.
//
// The worker that takes the job claims the run as any pending run and
// resumes from the transcript: finished turns and stored results are not
// redone; the calls approved are read with the steps (Steps returns them
// first, role "approved") and made by the worker — never by the caller of
// ApproveToolCall — with their usual ToolCallID. An approved call is thus
// at least once, like any tool call: its answer is exactly once, the call
// is made once unless the worker dies before its result commits. A call
// that needs an answer and has none (the worker died between storing the
// turn and WaitForAnswers) makes the resumed execution wait again; so does
// an approved call whose tool is External on the resuming worker (a deploy
// changed it). Such a call takes a result or a rejection, which replaces
// its approval in kern_run_answer; a second approval is
// run.ErrInvalidArgument. No answer ever fails on the primary key: a
// waiting run stays answerable until it is answered, cancelled or its
// wait ends.
//
// CancelRun ends a waiting run cancelled at once (sqlCancelRun includes
// 'waiting'); an answer after that is run.ErrNotWaiting, and an answer
// committed before it leaves a pending run, which the cancel ends just the
// same: the cancel invariant holds. The run's execution timeout bounds each
// execution from its claim, so time spent waiting is not counted; the wait
// has its own limit: every worker's rescue pass ends waiting runs whose
// waiting_until has passed (kern_run_waiting_idx, at most 100 a pass, SKIP
// LOCKED) as error "waited too long for an answer (<limit>)", with a
// run.error event. ListRuns with Statuses waiting lists what needs an
// answer, each run's Output.Waiting naming the calls.
//
// # Recurring schedules
//
// A schedule (PutSchedule) is a row of kern_schedule: its cron text and
// IANA zone, validated when it is put (robfig/cron's standard parser: five
// fields or a descriptor; "@every <d>" in whole seconds), the run it makes,
// and next_run_at, the next due time, computed in Go from Postgres's clock
// in the schedule's zone. Every worker fires the schedules of the agents it
// serves (engine.Store.FireSchedules): it sleeps until the earliest
// next_run_at of its agents' unpaused schedules (one indexed statement,
// which says how long), at most about a second, so a new schedule is seen
// within that.
//
// Guarantee: each due time of a schedule makes exactly one run, however
// many workers serve its agent, and ticks missed while no worker ran (or
// while the schedule's agent had none) fire once, not once per tick. The
// argument: a pass is one transaction that takes the due rows with SELECT
// … FOR UPDATE SKIP LOCKED, then for each submits its run (row and River
// job, submitOne, the same statements as SubmitRun) and sets last_run_id
// and next_run_at = the first due time after the transaction's now, and
// commits all of it. A concurrent pass skips the rows this one holds; one
// that reaches a row after this pass committed re-checks next_run_at <=
// now() against the new row version (Postgres re-evaluates a locking
// read's WHERE after a concurrent update) and finds it not due. A pass that
// fails or dies commits nothing: no run, and the schedule is still due for
// the next pass. PutSchedule of an existing schedule first takes its row
// lock (and an advisory lock on the name, for one that does not exist
// yet), then reads the clock, so its new next_run_at is after every due
// time already fired; it keeps last_run_id. A pass fires at most 100
// schedules (the worker's batch) and looks again at once when it did.
//
// A fired run is an ordinary background run; what happens to it after its
// commit is what happens to any run (at-least-once model calls, and so on).
// The schedule does not wait for it: the next due time fires whether or not
// the last run finished. Deleting a schedule leaves its runs.
//
// # Sessions
//
// A session id names a conversation within its tenant. A run's history
// (History, Agent.HistoryRuns) is read from its own tenant's runs of the
// session only (sqlHistory): two tenants that use the same session id have
// two conversations, and neither's prompts or answers ever reach the
// other's model, or its run's content and messages. A tenant's list of one
// session (TenantDB.ListRuns) is likewise its own.
//
// # Runs per concurrency key
//
// A background run submitted with a ConcurrencyKey is claimed under the
// claiming worker's MaxRunsPerKey (StartKeyedRun; 0 is no limit). A key is
// its tenant's own: the key of a run is the pair (tenant, ConcurrencyKey),
// so tenant a's runs of "customer-7" never count against, wait for, or read
// as waiting for, tenant b's runs of "customer-7" (migrations/018). The
// claim (sqlStartRuns, through kern_refused_by_key of migrations/009 and
// 018) guarantees:
//
//   - at most MaxRunsPerKey runs of the key are running at once, across
//     every worker and process. Runs waiting for answers, pending and
//     terminal ones hold no slot.
//   - a key's runs start in submit order (created_at, then id): a run starts
//     only when it is among the first MaxRunsPerKey − running pending runs of
//     its key that are due. A pending run that is not due — its retry's
//     backoff, or a delayed start (heartbeat_at in the future) — keeps no
//     turn; one that no worker serves does.
//   - a refused run stays pending for the same job, with no attempt used: its
//     job is snoozed (engine.ErrKeyBusy) and tries again in 1–2 s, or when
//     woken (below).
//   - when a run of the key leaves its slot (ends, waits for answers, or is
//     put back for a retry), the worker that ran it wakes the key's next
//     MaxRunsPerKey due pending runs (WakeKey, wake_key.go): their jobs are
//     made due now and their queues' workers notified, so a freed slot is
//     taken at once, not at the workers' next poll (a second). It costs
//     workers with a MaxRunsPerKey one statement after each run, keyed or
//     not. A rescued run is the oldest of its key again, with a new job
//     due at once; a slot whose worker died before waking is taken when a
//     snooze ends. BenchmarkKeyHandoff (agent) measures the handoff.
//
// Two claims of one key cannot both win: each takes a transaction-level
// advisory lock on the key's hash, seeded with its tenant's (in hash order, so claims of several keys
// cannot deadlock), held until the claim commits, and reads the key's counts
// after it, with a fresh snapshot (a VOLATILE function's statements each get
// one under READ COMMITTED, the pool's isolation): the run the previous
// holder started is visible as running. A SELECT … FOR UPDATE on the key's
// rows would not do: it cannot see a run that became pending after the
// claim's snapshot (an approved one) and is started by another claim. The
// lock is taken before the claim locks any row, and nothing that holds a
// run's row lock waits for it. A run with a cancel request on file is let
// through, to end cancelled. Workers with different MaxRunsPerKey for one
// key each apply their own: give all of an agent's workers the same.
//
// # Completion hooks and webhooks
//
// Every terminal transition — FinishRun, CancelRun (from any process, of a
// pending, running or waiting run), StartRun moving a run with a cancel
// request on file straight to cancelled (cancel-before-start), RescueStale
// ending a run out of attempts or one that waited too long — is an UPDATE
// that sets kern_run.status. A row trigger (AFTER UPDATE OF status, WHEN the
// old status is not terminal and the new one is; and AFTER INSERT of a
// terminal row, which nothing does today) inserts the run's completion into
// kern_run_outbox, and a second row for its webhook when webhook_url is set.
// The guarantees follow from the trigger running inside the statement:
//
//   - The outbox row commits with the terminal status or not at all: a
//     terminal run always has its completion, a rolled-back finish never
//     has one, and a statement added later that ends runs is covered
//     without being touched.
//   - Statuses only move forward and every status write is conditional on
//     the current status, so a run becomes terminal once, in one
//     transaction: one completion row per run (a run that is cancelled
//     after it finished matches no row and writes nothing).
//
// Workers drain their agents' rows (engine.Store.DrainOutbox): one transaction deletes
// a batch (SKIP LOCKED, so the workers of an agent share the work) and
// inserts a River job for each row — kern_complete on the agent's
// completion queue, which only workers with an OnComplete work (and only
// they drain completion rows; a worker without one deletes those older
// than a minute), kern_webhook on its webhook queue, which every worker of
// the agent works. So at every moment a completion is either an outbox row
// or a job; a crash before the commit leaves the row for the next drain,
// one after it leaves the job to River, which retries a job whose attempt
// failed or panicked; one that died with its worker is made available again
// by the fleet's rescue within about a second (see "Crash recovery"), and
// otherwise by River's stuck-job rescue after an hour. The callback is made after the job is fetched and the
// job completes only after it returns, so OnComplete is at least once; it
// is once unless an attempt fails or dies between the call and River
// recording the job completed. The job reads the run afresh (GetRun): the
// callback gets the final run, whichever process ended it.
//
// A webhook job POSTs the run (MarshalRun, with the run's tenant_id first),
// signed with the tenant's secret (kern_webhook_secret, one row per tenant,
// TenantDB.RotateWebhookSecret) or else the worker's, and records each
// attempt on the run — webhook_status ("pending", "delivered", "failed"),
// webhook_attempts, webhook_last_error — with an UPDATE that sets no
// status, so the trigger does not look at it. GetRun and ListRuns show them
// as Output.Webhook, nil for a run without a webhook_url. A delivery that
// succeeded but could not be recorded is retried, so receivers dedupe on
// webhook-id. DeleteRuns does not wait for deliveries: a run deleted first
// is not delivered (Retention is a day; a delivery gives up after hours).
//
// A row trigger, not a statement trigger with transition tables: those
// cannot have a column list, so they would run a function and a join for
// every UPDATE of kern_run (each content flush and heartbeat) and copy every
// updated row, content untoasted, into tuplestores that spill beyond
// work_mem; the row trigger costs the statements that do not set status
// nothing, and a terminal transition one INSERT (about 13 µs of Postgres
// time per run, measured over 20,000 finishes; a statement trigger measured
// about 4 µs per run in large batches, the same within noise at one run per
// statement).
//
// # Deployment: schema and role
//
// Open and New take options (Option). WithSchema(name) puts kern's and
// River's tables in a schema of the application's choice, so kern can live
// inside an application's database, or two kern installs in two schemas
// of one database:
//
//   - Open sets search_path to the schema on every connection of its pool.
//     kern's SQL names its tables without a schema, so that is what places
//     them.
//   - New does not change an application's pool: it checks that the pool's
//     connections resolve names in the schema first (search_path set in its
//     ConnConfig.RuntimeParams, its URL or the role's defaults) and refuses
//     the pool otherwise, with run.ErrInvalidArgument saying how to set it.
//   - A submit in the caller's transaction (SubmitParams.Tx) checks that
//     the transaction resolves names in the schema too, and is refused
//     (run.ErrInvalidArgument) otherwise: River's job would go to the
//     schema, the run's row elsewhere.
//   - The connections kern makes itself from the pool's settings — the
//     listener's LISTEN connection, each worker's liveness session — get
//     search_path set to the schema too.
//   - River gets the schema as Config.Schema (DB.Schema, for the worker's
//     and the River UI's clients too), rivermigrate migrates it, and tern's
//     version table is <schema>.kern_schema_version.
//   - Notification channels carry the schema, as River's do
//     ("<schema>.river_insert"): "<schema>.kern_cancel" and
//     "<schema>.kern_event", named by the triggers after their table's schema
//     (migrations/020_schema_channels.sql). Without WithSchema the listener
//     takes its connection's current_schema(), usually public.
//   - Migrate creates a missing schema when the role may create schemas in
//     the database; otherwise it says the schema must be created for the
//     role. A name must be a lower-case identifier of at most
//     MaxSchemaLength bytes, not starting with pg_; anything else is
//     run.ErrInvalidArgument, and nothing is created.
//
// kern needs no superuser. Migrations and workers can run as a role that
// owns only kern's schema (NOSUPERUSER NOCREATEDB NOCREATEROLE, no CREATE
// on public or on the database): it creates its tables, types, functions
// and triggers in the schema it owns, and uses advisory locks, LISTEN and
// NOTIFY, which every role may. Migration 016 makes a temporary table: the
// role keeps the TEMPORARY privilege on the database (PUBLIC's by default).
// The liveness probe reads pg_locks, where every role sees every lock: the
// workers need no pg_read_all_stats and may run as different roles.
//
// # Deployment: connection poolers
//
// kern runs behind PgBouncer (or any pooler) in session or transaction
// mode; statement mode breaks transactions and is not supported.
//
//   - Session mode (and no pooler) needs nothing: each client connection is
//     a Postgres session for as long as it is open. A dead worker is seen
//     within a second (its lock went with the pooler's reset query).
//   - Transaction mode: Open finds it out (PoolModeDetect: two of its
//     connections see one backend, or one sees two; WithPoolMode or
//     KERN_POOL_MODE say it instead) and then prepares no named statements
//     (pgx.QueryExecModeCacheDescribe, unless the URL sets
//     default_query_exec_mode; New refuses a pool that would). What needs a
//     session of its own — kern's LISTEN connection and River's, each
//     worker's liveness session, and Migrate with its locks — goes on the
//     direct URL (WithDirectURL, KERN_DIRECT_DATABASE_URL). Without one:
//     workers poll for new runs every FetchPollInterval (River's PollOnly),
//     waits, follows and cancels are seen by a re-read every 250ms, a dead
//     worker's runs wait for RescueAfter, and Migrate refuses
//     (run.ErrInvalidArgument): run it on a direct URL.
//   - A connect-time search_path is not applied by PgBouncer: it rejects
//     the startup parameter, or ignores it when listed in its
//     ignore_startup_parameters. With WithSchema behind a pooler, list it
//     there and set the role's own (ALTER ROLE … SET search_path =
//     <schema>), which every backend applies. Open and New check that the
//     pool's connections resolve names in the schema, and refuse
//     (run.ErrInvalidArgument) rather than use another schema.
//   - No protocol-level cancel requests through a pooler: pgx sends one
//     whenever a statement's context ends mid-flight (before it closes the
//     connection), and PgBouncer 1.18 can crash on them (its issue #822).
//     Open holds them back (nocancel.go) when the pool is a transaction
//     pooler's or reaches Postgres through anything in between (Postgres
//     serves it on another port than the one dialed); the statement is
//     still cut off by the closed connection. Over TLS to the pooler a
//     cancel request cannot be told from a connect and is still sent; on
//     the direct URL, and directly, cancels go out as usual.
//
// The deployment guide (docs/deployment.md) sizes the connections and
// gives the measured latencies and recovery of each way.
package db
