// Package agent is kern's engine: agents, runs, the model adapter and the
// worker.
//
// An application describes an Agent (a name, instructions, a Model and a
// *db.DB) and runs prompts on it:
//
//	out, err := a.Run(ctx, "What is the capital of France?", agent.Background(true))
//	// out.Status == run.StatusPending, at once: row and job are committed.
//	out, err = a.WaitRun(ctx, out.RunID) // or poll a.GetRunOutput
//
// Some process — the same or any other, on any host — runs a Worker with the
// same agents against the same database. The worker claims the run, calls
// the model through the Model interface (OpenAIChat speaks the
// OpenAI-compatible chat completions protocol through go-openai), streams
// the content into the run's row in batches, and ends it completed, error
// or cancelled.
//
// CancelRun works at any time, even before the run is submitted. A run that
// is executing is interrupted at once: its context is cancelled, which
// closes the model's HTTP stream; the content streamed so far is kept. If
// CancelRun answered true, the run ends cancelled, never completed — see
// package db for why.
//
// Without Background(true), Run executes in the caller's goroutine and
// returns the finished run; it is stored exactly like a background run.
//
// # Tools and the loop
//
// An Agent with Tools runs a loop: model turn → tool calls → tool results
// (role "tool", answering the call by its id) → model turn … until the
// model answers without calls, or MaxSteps model turns (default 10) are
// used up: then the run ends as error "max steps (10) reached", with its
// transcript kept, and the last turn's calls are not made. The tools'
// Parameters go to the model as function definitions. The calls of one turn
// run concurrently, at most MaxParallelToolCalls at once, and their results
// go back in the order the model asked. An unknown tool, arguments that are
// not valid JSON, a tool's error ("error: …") and a tool's panic (recovered
// and logged) all go back to the model as the call's output, so it can
// correct itself. Content streamed in the turns that asked for tools is kept
// in the transcript (db.DB.Messages); Output.Content is the final answer,
// and Metrics add up the tokens of every turn, with ModelTurns and
// ToolCalls.
//
// A tool's ctx is the run's: CancelRun interrupts a running tool at once
// (its ctx is done) and the run ends cancelled, its transcript kept; a
// timeout does the same and ends it as error. The loop waits a few seconds
// for a tool that ignores its ctx, then leaves it behind.
//
// # Which steps are exactly once, and which at least once
//
// Every finished model turn that asked for tools, and every tool result, is
// committed as it happens, fenced like every other write of the execution.
// A retry, a rescue after the worker died, or a graceful hand-back resumes
// from what is committed:
//
//   - A finished model turn is not asked again: exactly once (no tokens
//     billed twice). The turn in flight when an attempt ended — streaming,
//     or failed — is asked again: model calls as a whole are at least once,
//     as for a plain run.
//   - A tool call whose result was committed is not made again: its stored
//     result is reused. A call in flight when its worker died, was stopped,
//     or could not commit the result (Postgres away for minutes) is made
//     again by the next attempt: tool calls are at least once. The window is
//     the call itself plus one write; nothing can make it empty, since a
//     process may die after the tool's side effect and before any record of
//     it. So a tool with side effects keys them on ToolCallID(ctx), the same
//     "<run id>/<tool call id>" on every attempt.
//
// Why: a step counts as done only once its row is committed, and the loop
// goes on only after that commit, so whatever a later attempt finds stored
// happened and is complete; what it does not find may or may not have
// happened, and is redone. A plain run (no tools, one turn) writes no step
// at all: its claim tells the worker there is nothing to resume from.
//
// # Runs that wait for approval or an external result
//
// A tool with NeedsApproval is called only once a person (or a system)
// approves the call; an External tool is never called by kern: its result
// comes from SubmitToolResult. When a model turn asks for calls of either,
// the turn is stored, the other calls of the turn are made as usual, and
// the run moves to run.StatusWaiting, Output.Waiting listing the open
// calls, with a run.waiting event. Its job ends: the worker slot is free at
// once, and nothing of the run lives in any process — workers can stop and
// start, and the run still waits, in its row, until it is answered:
//
//	out, _ := a.WaitRun(ctx, id)               // returns once the run waits
//	for _, c := range out.Waiting {
//		_ = a.ApproveToolCall(ctx, id, c.ID) // or RejectToolCall(ctx, id, c.ID, "why")
//	}
//
// The guarantees:
//
//   - The first answer to a call stands. A second answer, or one for a call
//     the run does not wait on (never asked, answered already, the run
//     running or finished), is run.ErrNotWaiting and changes nothing.
//   - The answer to the last open call and the run's new job commit in one
//     transaction: a worker continues the run from its transcript, no
//     finished step redone.
//   - An approved call is made by a worker serving the agent, never in the
//     caller of ApproveToolCall; like every tool call it is at least once
//     (key side effects on ToolCallID). A rejected call is never made: the
//     model reads "rejected: <reason>" as its result. A submitted result is
//     what the model reads.
//   - CancelRun ends a waiting run cancelled at once. WithTimeout bounds
//     each execution and does not count the wait; WithWaitTimeout (default
//     24h) bounds each wait, after which the run ends as error ("waited too
//     long for an answer (24h0m0s)").
//   - A foreground Run returns the run once it waits; after the answers a
//     worker, not the caller, continues it.
//
// # Handoffs
//
// Agent.Handoffs offers the model a tool "transfer_to_<name>" per agent. A
// call of it stores its result ("Transferred to <name>.") like any tool's,
// then one fenced write (engine.Store.HandOff) moves the same run to that
// agent: a job on its queue, back to pending, a run.handoff event
// {"from","to"}, no attempt used. A worker serving that agent continues from
// the stored transcript under its instructions, tools and model;
// Output.AgentName names it from then on. A turn that also waits for
// answers hands off once they are in, and an execution that resumes a run
// whose last turn handed off (its worker died before the handoff was
// written) hands off before asking its model: a handoff happens once. A
// foreground Run waits for the worker that takes the run.
//
// # Sessions and structured output
//
// Agent.HistoryRuns replays a session: before the prompt go the last N
// finished runs of the same session, agent and tenant (a session id names a
// conversation within its tenant: another tenant's runs under the same id
// are never replayed), oldest first, each as its prompt (user) and final
// answer (assistant). A cancelled run's partial
// answer ends with "[answer cut short: run cancelled]"; runs that ended in
// error or without an answer are left out (a prompt that failed on its own
// terms would fail every later run of the session), and so are old runs'
// tool steps (their answers say what the tools gave). The history is read
// once per attempt, before the first turn, so it does not change between
// turns; another attempt reads it again. A run without a session has none.
//
// Agent.OutputSchema: the final answer must be JSON valid against the
// schema. An answer that is not is stored as a step (with an
// output.rejected event, and the run's content emptied), so a later attempt
// does not ask for it again, and sent back to the model once with what is
// wrong; the next invalid answer ends the run as error. Both count as model
// turns.
package agent
