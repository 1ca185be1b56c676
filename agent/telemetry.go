package agent

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/riverqueue/river"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/internal/telemetry"
	"github.com/kern-go/kern/run"
)

// Telemetry (see "Telemetry" in the README). Span names, attribute keys
// and metric names are stable: dashboards and alerts are built on them.
const (
	SpanSubmit = "kern.submit" // Agent.Run: the run's row (and job) written
	SpanRun    = "kern.run"    // one execution of a run by a worker
	// Model turns are "chat <model>" and tool calls "execute_tool <tool>",
	// per OpenTelemetry's GenAI semantic conventions.

	AttrRunID     = "kern.run.id"
	AttrAgent     = "kern.agent"
	AttrAttempt   = "kern.run.attempt"
	AttrStatus    = "kern.run.status"     // completed, error, cancelled; or retrying, handed_back, waiting, not_started
	AttrQueueWait = "kern.run.queue_wait" // seconds, float

	MetricRuns          = "kern.runs"                    // counter {run}: runs this worker ended, by kern.agent, kern.run.status
	MetricTokens        = "kern.tokens"                  // counter {token}: by kern.agent, gen_ai.request.model, gen_ai.token.type (input, output)
	MetricToolCalls     = "kern.tool_calls"              // counter {call}: by kern.agent, gen_ai.tool.name, error (bool)
	MetricQueueWait     = "kern.run.queue_wait"          // histogram s: submit (or the job's due time, after a retry) to start
	MetricTTFT          = "kern.run.time_to_first_token" // histogram s: start to the first content of a run
	MetricDuration      = "kern.run.duration"            // histogram s: start to the end of a run
	MetricInFlight      = "kern.runs.in_flight"          // up-down counter {run}: runs executing in this worker
	MetricRescues       = "kern.rescues"                 // counter {run}: runs this worker rescued, by outcome (requeued, failed, expired)
	metricTokenTypeAttr = "gen_ai.token.type"
)

// secondsBuckets are the histograms' bucket bounds, in seconds: from a
// fast queue pickup (5 ms) to a long agent run (10 min).
var secondsBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

// submitTracer is Agent.Run's: otel's global provider, looked up when a
// span starts, so a provider set after the agent was built counts.
var submitTracer = otel.Tracer(telemetry.ScopeName)

// startSubmit starts the kern.submit span of Agent.Run.
func startSubmit(ctx context.Context, agentName, runID string) (context.Context, trace.Span) {
	return submitTracer.Start(ctx, SpanSubmit, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.String(AttrRunID, runID), attribute.String(AttrAgent, agentName)))
}

// workerTelemetry is a worker's tracer and instruments.
type workerTelemetry struct {
	tracer    trace.Tracer
	runs      metric.Int64Counter
	tokens    metric.Int64Counter
	toolCalls metric.Int64Counter
	queueWait metric.Float64Histogram
	ttft      metric.Float64Histogram
	duration  metric.Float64Histogram
	inFlight  metric.Int64UpDownCounter
	rescues   metric.Int64Counter
}

func newWorkerTelemetry(cfg *WorkerConfig) *workerTelemetry {
	tp, mp := cfg.TracerProvider, cfg.MeterProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	m := mp.Meter(telemetry.ScopeName)
	t := &workerTelemetry{tracer: tp.Tracer(telemetry.ScopeName)}
	// An instrument that cannot be made is a no-op one: telemetry never
	// stops a worker.
	t.runs, _ = m.Int64Counter(MetricRuns, metric.WithUnit("{run}"), metric.WithDescription("Runs this worker ended, by status."))
	t.tokens, _ = m.Int64Counter(MetricTokens, metric.WithUnit("{token}"), metric.WithDescription("Tokens of model turns, by type (input, output)."))
	t.toolCalls, _ = m.Int64Counter(MetricToolCalls, metric.WithUnit("{call}"), metric.WithDescription("Tool calls made."))
	hist := func(name, desc string) metric.Float64Histogram {
		h, _ := m.Float64Histogram(name, metric.WithUnit("s"), metric.WithDescription(desc), metric.WithExplicitBucketBoundaries(secondsBuckets...))
		return h
	}
	t.queueWait = hist(MetricQueueWait, "Time a run waited for a worker: submit (or, after a retry, its due time) to start.")
	t.ttft = hist(MetricTTFT, "Time from a run's start to its first content.")
	t.duration = hist(MetricDuration, "Time from a run's start to its end.")
	t.inFlight, _ = m.Int64UpDownCounter(MetricInFlight, metric.WithUnit("{run}"), metric.WithDescription("Runs executing in this worker."))
	t.rescues, _ = m.Int64Counter(MetricRescues, metric.WithUnit("{run}"), metric.WithDescription("Runs rescued from lost workers or jobs, by outcome."))
	return t
}

// rescued counts a rescue pass's outcome.
func (t *workerTelemetry) rescued(ctx context.Context, res engine.Rescued) {
	for outcome, ids := range map[string][]string{"requeued": res.Requeued, "failed": res.Failed, "expired": res.Expired} {
		if len(ids) > 0 {
			t.rescues.Add(ctx, int64(len(ids)), metric.WithAttributes(attribute.String("outcome", outcome)))
		}
	}
}

// runTrace is one execution's kern.run span and what the store learns of
// it (telemetryStore), carried in the execution's context.
type runTrace struct {
	t         *workerTelemetry
	span      trace.Span
	agent     string
	agentAttr metric.MeasurementOption
	scheduled time.Time // the job's due time

	mu      sync.Mutex
	status  string
	errMsg  string
	claimed bool
}

type runTraceKey struct{}

func runTraceFrom(ctx context.Context) *runTrace {
	rt, _ := ctx.Value(runTraceKey{}).(*runTrace)
	return rt
}

// startRun starts the kern.run span of a job's execution: a child of the
// submitter's span (from the job's metadata), linked to River's work span.
func (t *workerTelemetry) startRun(ctx context.Context, job *river.Job[engine.RunJobArgs]) (context.Context, *runTrace) {
	parent := ctx
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.String(AttrRunID, engine.RunID(job.Args.RunID)), attribute.String(AttrAgent, job.Args.AgentName))}
	if sc := telemetry.SpanContextFromJobMetadata(job.Metadata); sc.IsValid() {
		if local := trace.SpanContextFromContext(ctx); local.IsValid() {
			opts = append(opts, trace.WithLinks(trace.Link{SpanContext: local}))
		}
		parent = trace.ContextWithRemoteSpanContext(ctx, sc)
	}
	_, span := t.tracer.Start(parent, SpanRun, opts...)
	// The execution keeps ctx's cancellation and values; only the span is new.
	ctx = trace.ContextWithSpan(ctx, span)
	rt := &runTrace{t: t, span: span, agent: job.Args.AgentName, scheduled: job.ScheduledAt,
		agentAttr: metric.WithAttributes(attribute.String(AttrAgent, job.Args.AgentName))}
	return context.WithValue(ctx, runTraceKey{}, rt), rt
}

// claimed records the start of the execution (the store's claim).
func (rt *runTrace) claim(ctx context.Context, out *run.Output) {
	now := time.Now()
	since := rt.scheduled
	if out.Attempt <= 1 && !out.CreatedAt.IsZero() {
		since = out.CreatedAt
	}
	wait := max(now.Sub(since), 0).Seconds()
	rt.span.SetAttributes(attribute.Int(AttrAttempt, out.Attempt), attribute.Float64(AttrQueueWait, wait))
	rt.t.queueWait.Record(ctx, wait, rt.agentAttr)
	rt.t.inFlight.Add(ctx, 1, rt.agentAttr)
	rt.mu.Lock()
	rt.claimed = true
	rt.mu.Unlock()
}

// finished records the terminal status this execution wrote.
func (rt *runTrace) finished(ctx context.Context, fin engine.Finish) {
	rt.setStatus(string(fin.Status), fin.Error)
	rt.t.runs.Add(ctx, 1, metric.WithAttributes(attribute.String(AttrAgent, rt.agent), attribute.String(AttrStatus, string(fin.Status))))
	rt.t.duration.Record(ctx, fin.Metrics.Duration.Seconds(), rt.agentAttr)
	if fin.Metrics.TimeToFirstToken > 0 {
		rt.t.ttft.Record(ctx, fin.Metrics.TimeToFirstToken.Seconds(), rt.agentAttr)
	}
	rt.span.SetAttributes(
		attribute.Int("gen_ai.usage.input_tokens", fin.Metrics.InputTokens),
		attribute.Int("gen_ai.usage.output_tokens", fin.Metrics.OutputTokens),
		attribute.Int("kern.run.model_turns", fin.Metrics.ModelTurns),
		attribute.Int("kern.run.tool_calls", fin.Metrics.ToolCalls))
}

func (rt *runTrace) setStatus(status, errMsg string) {
	rt.mu.Lock()
	rt.status, rt.errMsg = status, errMsg
	rt.mu.Unlock()
}

// end ends the span with the execution's outcome: Ok for a completed run,
// Error (with the run's Error) for a failed one or a Work error; a
// cancelled run's span is Unset, with kern.run.status "cancelled".
func (rt *runTrace) end(ctx context.Context, err error) {
	rt.mu.Lock()
	status, errMsg, claimed := rt.status, rt.errMsg, rt.claimed
	rt.mu.Unlock()
	if claimed {
		rt.t.inFlight.Add(ctx, -1, rt.agentAttr)
	}
	if status == "" {
		status = "not_started" // terminal already, elsewhere, or held back by its key
		if claimed {
			status = "ended_elsewhere" // lost to a cancel or a rescue
		}
	}
	rt.span.SetAttributes(attribute.String(AttrStatus, status))
	switch {
	case err != nil:
		rt.span.RecordError(err)
		rt.span.SetStatus(codes.Error, err.Error())
	case status == string(run.StatusError):
		rt.span.AddEvent("exception", trace.WithAttributes(attribute.String("exception.message", errMsg)))
		rt.span.SetStatus(codes.Error, errMsg)
	case status == string(run.StatusCompleted):
		rt.span.SetStatus(codes.Ok, "")
	}
	rt.span.End()
}

// telemetryStore is the worker's store as its executions use it: it tells
// each execution's runTrace about the claim and the end it writes.
type telemetryStore struct {
	engine.Store
}

func (s telemetryStore) StartKeyedRun(ctx context.Context, runID string, jobID *int64, maxRunsPerKey int) (*engine.Claim, error) {
	claim, err := s.Store.StartKeyedRun(ctx, runID, jobID, maxRunsPerKey)
	if rt := runTraceFrom(ctx); rt != nil && err == nil && claim.Run.Status == run.StatusRunning {
		rt.claim(ctx, claim.Run)
	}
	return claim, err
}

func (s telemetryStore) FinishRun(ctx context.Context, f engine.Fence, fin engine.Finish) error {
	err := s.Store.FinishRun(ctx, f, fin)
	// A cancel of a running run ends it in CancelRun's own transaction:
	// the execution, stopped by it, finds the run cancelled already. It
	// still counts here, where the execution ended.
	cancelled := fin.Status == run.StatusCancelled && errors.Is(err, run.ErrNotRunning)
	if rt := runTraceFrom(ctx); rt != nil && (err == nil || cancelled) {
		rt.finished(ctx, fin)
	}
	return err
}

func (s telemetryStore) RetryRun(ctx context.Context, f engine.Fence, errMsg string, delay time.Duration) error {
	err := s.Store.RetryRun(ctx, f, errMsg, delay)
	if rt := runTraceFrom(ctx); rt != nil && err == nil {
		rt.setStatus("retrying", errMsg)
		rt.span.AddEvent("kern.run.retry", trace.WithAttributes(attribute.String("exception.message", errMsg),
			attribute.Float64("kern.run.retry_delay", delay.Seconds())))
	}
	return err
}

func (s telemetryStore) ReleaseRun(ctx context.Context, f engine.Fence) error {
	err := s.Store.ReleaseRun(ctx, f)
	if rt := runTraceFrom(ctx); rt != nil && err == nil {
		rt.setStatus("handed_back", "")
	}
	return err
}

func (s telemetryStore) WaitForAnswers(ctx context.Context, f engine.Fence, seq int64, calls []engine.WaitCall) error {
	err := s.Store.WaitForAnswers(ctx, f, seq, calls)
	if rt := runTraceFrom(ctx); rt != nil && err == nil {
		rt.setStatus(string(run.StatusWaiting), "")
	}
	return err
}

// tracedModel is a worker's Model with a GenAI "chat <model>" span per
// turn and its token counts. It keeps the inner model's id (ModelID), which
// rate limits go by.
type tracedModel struct {
	inner    Model
	t        *workerTelemetry
	id, name string
	tokensIn metric.MeasurementOption
	tokensOu metric.MeasurementOption
}

func newTracedModel(t *workerTelemetry, agentName string, m Model) *tracedModel {
	id := modelID(m)
	name := "chat"
	if id != "" {
		name += " " + id
	}
	base := []attribute.KeyValue{attribute.String(AttrAgent, agentName), attribute.String("gen_ai.request.model", id)}
	with := func(typ string) metric.MeasurementOption {
		return metric.WithAttributes(append(base[:len(base):len(base)], attribute.String(metricTokenTypeAttr, typ))...)
	}
	return &tracedModel{inner: m, t: t, id: id, name: name, tokensIn: with("input"), tokensOu: with("output")}
}

// ModelID is the inner model's id.
func (m *tracedModel) ModelID() string { return m.id }

func (m *tracedModel) Stream(ctx context.Context, req *ModelRequest, onDelta func(string)) (*ModelResponse, error) {
	ctx, span := m.t.tracer.Start(ctx, m.name, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("gen_ai.operation.name", "chat"), attribute.String("gen_ai.request.model", m.id)))
	defer span.End()
	resp, err := m.inner.Stream(ctx, req, onDelta)
	if resp != nil {
		span.SetAttributes(attribute.Int("gen_ai.usage.input_tokens", resp.Usage.InputTokens),
			attribute.Int("gen_ai.usage.output_tokens", resp.Usage.OutputTokens))
		if resp.FinishReason != "" {
			span.SetAttributes(attribute.StringSlice("gen_ai.response.finish_reasons", []string{resp.FinishReason}))
		}
		if resp.Usage.InputTokens > 0 {
			m.t.tokens.Add(ctx, int64(resp.Usage.InputTokens), m.tokensIn)
		}
		if resp.Usage.OutputTokens > 0 {
			m.t.tokens.Add(ctx, int64(resp.Usage.OutputTokens), m.tokensOu)
		}
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		errType := "model_error"
		if ctx.Err() != nil {
			errType = "cancelled"
		}
		span.SetAttributes(attribute.String("error.type", errType))
	}
	return resp, err
}

// tracedCallTool is callTool with an "execute_tool <name>" span and the
// tool-call count, for an execution of a worker (others call it plainly).
func (x *execution) tracedCallTool(ctx context.Context, call ToolCall) string {
	rt := runTraceFrom(ctx)
	if rt == nil {
		return x.callTool(ctx, call)
	}
	ctx, span := rt.t.tracer.Start(ctx, "execute_tool "+call.Name, trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(attribute.String("gen_ai.operation.name", "execute_tool"),
			attribute.String("gen_ai.tool.name", call.Name), attribute.String("gen_ai.tool.call.id", call.ID)))
	out := x.callTool(ctx, call)
	failed := strings.HasPrefix(out, "error: ")
	if failed {
		span.SetStatus(codes.Error, out)
	}
	span.End()
	rt.t.toolCalls.Add(ctx, 1, metric.WithAttributes(attribute.String(AttrAgent, rt.agent),
		attribute.String("gen_ai.tool.name", call.Name), attribute.Bool("error", failed)))
	return out
}

// endSubmit ends the kern.submit span with the submit's outcome.
func endSubmit(span trace.Span, out *run.Output, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	} else if out != nil {
		span.SetAttributes(attribute.String(AttrStatus, string(out.Status)))
	}
	span.End()
}
