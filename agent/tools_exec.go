package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kern-go/kern/internal/engine"
)

// MaxParallelToolCalls is how many of one model turn's tool calls run at
// once; the rest wait for a free slot. A model can ask for dozens of calls
// in one turn, and each may hold a connection or a process of its own.
const MaxParallelToolCalls = 8

// toolReturnGrace is how long the loop waits for tools to return after the
// run's context ended (a cancel, a timeout, a stopping worker) before it
// leaves them behind: a tool is expected to stop when its ctx is done, and
// one that does not must not hold the run's end up for long.
const toolReturnGrace = 5 * time.Second

type toolCallIDKey struct{}

// callTools runs the pending calls of a turn, at most MaxParallelToolCalls
// at once, and commits each result as it comes in. It returns the outputs
// in the order of pending. A non-nil error is a write's (see run); when the
// run's context ended first, the outputs are incomplete and the caller ends
// the run.
func (x *execution) callTools(runCtx, ctx context.Context, pending []pendingCall) ([]string, error) {
	outs := make([]string, len(pending))
	errs := make([]error, len(pending))
	slots := make(chan struct{}, MaxParallelToolCalls)
	var wg sync.WaitGroup
	for i, p := range pending {
		wg.Go(func() {
			select {
			case slots <- struct{}{}:
			case <-runCtx.Done():
				return
			}
			out := x.tracedCallTool(runCtx, p.call) // telemetry.go
			<-slots
			if runCtx.Err() != nil {
				// Likely cut short by the run's end: not a result to keep.
				// A later attempt, if any, calls it again.
				return
			}
			outs[i] = out
			errs[i] = x.storeResult(ctx, p, out)
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-runCtx.Done():
		select {
		case <-done:
		case <-time.After(toolReturnGrace):
			x.log.WarnContext(ctx, "kern: a tool did not return after the run ended; leaving it behind",
				slog.Duration("waited", toolReturnGrace))
			return nil, nil
		}
	}
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return outs, nil
}

// storeResult commits one tool result with its tool.result event.
func (x *execution) storeResult(ctx context.Context, p pendingCall, out string) error {
	x.writeMu.Lock()
	defer x.writeMu.Unlock()
	res := engine.ToolResult{Seq: p.seq, CallID: p.call.ID, Name: p.call.Name, Output: out}
	seq := x.seq + 1
	if err := x.write(ctx, func(wctx context.Context) error { return x.e.store.StoreToolResult(wctx, x.fence, seq, res) }); err != nil {
		return err
	}
	x.seq = seq
	return nil
}

// callTool runs one call and returns what goes back to the model. Whatever
// goes wrong is told to the model as the call's output, so it can correct
// itself: an unknown tool, arguments that are not JSON, the tool's error,
// an output too large, a panic (recovered and logged: a tool never brings
// the worker down).
func (x *execution) callTool(ctx context.Context, call ToolCall) (out string) {
	tool := x.tools[call.Name]
	if tool == nil {
		names := make([]string, 0, len(x.tools))
		for name := range x.tools {
			names = append(names, name)
		}
		slices.Sort(names)
		return fmt.Sprintf("error: there is no tool named %q; the tools are: %s", call.Name, strings.Join(names, ", "))
	}
	args := strings.TrimSpace(call.Arguments)
	if args == "" {
		// Some models send nothing for a call without parameters.
		args = "{}"
	}
	if !json.Valid([]byte(args)) {
		var v any
		err := json.Unmarshal([]byte(args), &v)
		return fmt.Sprintf("error: the arguments of %s are not valid JSON (%v); send them again as a JSON object", call.Name, err)
	}
	defer func() {
		if r := recover(); r != nil {
			x.log.ErrorContext(ctx, "kern: tool panicked", slog.String("tool", call.Name), slog.String("tool_call_id", call.ID),
				slog.Any("panic", r), slog.String("stack", string(debug.Stack())))
			out = fmt.Sprintf("error: the tool %s failed: panic: %v", call.Name, r)
		}
	}()
	ctx = context.WithValue(ctx, toolCallIDKey{}, engine.RunID(x.fence.RunID)+"/"+call.ID)
	res, err := tool.Call(ctx, json.RawMessage(args))
	switch {
	case err != nil:
		return "error: " + err.Error()
	case len(res) > x.e.maxContentBytes:
		return fmt.Sprintf("error: the output of %s (%d bytes) exceeds the limit of %d bytes (WorkerConfig.MaxContentBytes)",
			call.Name, len(res), x.e.maxContentBytes)
	}
	return res
}
