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
package agent
