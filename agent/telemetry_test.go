package agent_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// spanSink records ended spans (a tracetest.SpanRecorder) and wakes the
// tests waiting for one: a run's kern.run span ends after WaitRun returns.
type spanSink struct {
	*tracetest.SpanRecorder
	mu      sync.Mutex
	changed chan struct{}
}

func (s *spanSink) OnEnd(span sdktrace.ReadOnlySpan) {
	s.SpanRecorder.OnEnd(span)
	s.mu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// wait returns the ended spans once one of them matches, failing at ctx's end.
func (s *spanSink) wait(t *testing.T, ctx context.Context, what string, match func(sdktrace.ReadOnlySpan) bool) []sdktrace.ReadOnlySpan {
	t.Helper()
	for {
		s.mu.Lock()
		changed := s.changed
		s.mu.Unlock()
		spans := s.Ended()
		for _, sp := range spans {
			if match(sp) {
				return spans
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatalf("no span %s", what)
		}
	}
}

var (
	telemetryOnce sync.Once
	sink          *spanSink
	testTP        *sdktrace.TracerProvider
)

// tracing installs, once per process, an SDK TracerProvider recording into
// sink as otel's global one (Agent.Run's kern.submit uses the global).
// Tests tell their spans apart by trace and run id.
func tracing() (*spanSink, *sdktrace.TracerProvider) {
	telemetryOnce.Do(func() {
		sink = &spanSink{SpanRecorder: tracetest.NewSpanRecorder(), changed: make(chan struct{})}
		testTP = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sink))
		otel.SetTracerProvider(testTP)
	})
	return sink, testTP
}

func attrOf(sp sdktrace.ReadOnlySpan, key string) (attribute.Value, bool) {
	for _, kv := range sp.Attributes() {
		if string(kv.Key) == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

func runSpanOf(runID string) func(sdktrace.ReadOnlySpan) bool {
	return func(sp sdktrace.ReadOnlySpan) bool {
		v, _ := attrOf(sp, agent.AttrRunID)
		return sp.Name() == agent.SpanRun && v.AsString() == runID
	}
}

func spansNamed(spans []sdktrace.ReadOnlySpan, traceID trace.TraceID, prefix string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, sp := range spans {
		if sp.SpanContext().TraceID() == traceID && strings.HasPrefix(sp.Name(), prefix) {
			out = append(out, sp)
		}
	}
	return out
}

// telemetryEnv is toolEnv with the worker on the test's providers.
func telemetryEnv(t *testing.T, tools ...agent.Tool) (*env, *sdkmetric.ManualReader) {
	t.Helper()
	_, tp := tracing()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	return toolEnv(t, agent.WorkerConfig{TracerProvider: tp, MeterProvider: mp, MaxAttempts: 1}, 5, tools...), reader
}

// collectMetrics collects the int sums and histogram counts of rm by metric name and
// attribute set ("k=v,k=v").
func collectMetrics(t *testing.T, reader *sdkmetric.ManualReader) map[string]map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]int64{}
	key := func(s attribute.Set) string {
		var parts []string
		for _, kv := range s.ToSlice() {
			parts = append(parts, string(kv.Key)+"="+kv.Value.Emit())
		}
		return strings.Join(parts, ",")
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if out[m.Name] == nil {
				out[m.Name] = map[string]int64{}
			}
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					out[m.Name][key(p.Attributes)] += p.Value
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					out[m.Name][key(p.Attributes)] += int64(p.Count)
				}
			}
		}
	}
	return out
}

// TestTelemetryTraceOfARun follows one background run with a tool call:
// the worker's kern.run span is a child of the submitter's kern.submit,
// across the River job; its model turns are GenAI "chat <model>" spans
// with int token counts, its tool call an "execute_tool <name>" span; and
// the worker's metrics count it.
func TestTelemetryTraceOfARun(t *testing.T) {
	t.Parallel()
	spans, _ := tracing()
	e, reader := telemetryEnv(t, agent.Tool{Name: "get_weather", Parameters: map[string]any{"type": "object"},
		Call: func(ctx context.Context, _ json.RawMessage) (string, error) {
			if !trace.SpanContextFromContext(ctx).IsValid() {
				return "", nil // the test below fails on the missing span
			}
			return "18C", nil
		}})
	e.model.Script(byStep(
		fakellm.Reply{Content: "Looking. ", ToolCalls: []fakellm.ToolCall{{Name: "get_weather", Arguments: `{}`}}},
		fakellm.Reply{Content: "It is 18C."},
	))
	ctx := kerntest.Context(t, 30*time.Second)
	out, err := e.agent.Run(ctx, "Weather?", agent.Background(true))
	if err != nil {
		t.Fatal(err)
	}
	if final := mustWait(t, e.agent, out.RunID); final.Status != run.StatusCompleted {
		t.Fatalf("run: %+v", final)
	}
	all := spans.wait(t, ctx, "kern.run of "+out.RunID, runSpanOf(out.RunID))

	var submit, runSpan sdktrace.ReadOnlySpan
	for _, sp := range all {
		if v, _ := attrOf(sp, agent.AttrRunID); v.AsString() == out.RunID {
			switch sp.Name() {
			case agent.SpanSubmit:
				submit = sp
			case agent.SpanRun:
				runSpan = sp
			}
		}
	}
	if submit == nil {
		t.Fatal("no kern.submit span")
	}
	if v, _ := attrOf(submit, agent.AttrAgent); v.AsString() != "tooler" {
		t.Errorf("kern.submit %s = %q", agent.AttrAgent, v.AsString())
	}
	trID := submit.SpanContext().TraceID()
	if runSpan.SpanContext().TraceID() != trID || runSpan.Parent().SpanID() != submit.SpanContext().SpanID() || !runSpan.Parent().IsRemote() {
		t.Fatalf("kern.run: trace %s parent %s (remote %v); want a child of kern.submit %s/%s across the job",
			runSpan.SpanContext().TraceID(), runSpan.Parent().SpanID(), runSpan.Parent().IsRemote(), trID, submit.SpanContext().SpanID())
	}
	if runSpan.Status().Code != codes.Ok {
		t.Errorf("kern.run status %v", runSpan.Status())
	}
	if v, _ := attrOf(runSpan, agent.AttrStatus); v.AsString() != "completed" {
		t.Errorf("kern.run %s = %q", agent.AttrStatus, v.AsString())
	}
	if v, ok := attrOf(runSpan, agent.AttrQueueWait); !ok || v.Type() != attribute.FLOAT64 || v.AsFloat64() < 0 {
		t.Errorf("kern.run %s = %v", agent.AttrQueueWait, v.Emit())
	}
	if len(runSpan.Links()) != 1 {
		t.Errorf("kern.run has %d links, want 1 (River's work span)", len(runSpan.Links()))
	}

	chats := spansNamed(all, trID, "chat ")
	if len(chats) != 2 {
		t.Fatalf("%d chat spans, want 2", len(chats))
	}
	for _, c := range chats {
		if c.Name() != "chat fake-model" || c.Parent().SpanID() != runSpan.SpanContext().SpanID() || c.SpanKind() != trace.SpanKindClient {
			t.Errorf("chat span %q, parent %s, kind %v", c.Name(), c.Parent().SpanID(), c.SpanKind())
		}
		for key, want := range map[string]string{"gen_ai.operation.name": "chat", "gen_ai.request.model": "fake-model"} {
			if v, _ := attrOf(c, key); v.AsString() != want {
				t.Errorf("%s = %q, want %q", key, v.AsString(), want)
			}
		}
		for _, key := range []string{"gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"} {
			if v, ok := attrOf(c, key); !ok || v.Type() != attribute.INT64 || v.AsInt64() <= 0 {
				t.Errorf("%s = %v (%v), want a positive int", key, v.Emit(), v.Type())
			}
		}
		if v, ok := attrOf(c, "gen_ai.response.finish_reasons"); !ok || v.Type() != attribute.STRINGSLICE || len(v.AsStringSlice()) != 1 {
			t.Errorf("gen_ai.response.finish_reasons = %v", v.Emit())
		}
	}
	tools := spansNamed(all, trID, "execute_tool ")
	if len(tools) != 1 || tools[0].Name() != "execute_tool get_weather" || tools[0].Parent().SpanID() != runSpan.SpanContext().SpanID() {
		t.Fatalf("tool spans: %v", tools)
	}
	if v, _ := attrOf(tools[0], "gen_ai.tool.name"); v.AsString() != "get_weather" {
		t.Errorf("gen_ai.tool.name = %q", v.AsString())
	}
	if v, _ := attrOf(tools[0], "gen_ai.tool.call.id"); v.AsString() == "" {
		t.Error("no gen_ai.tool.call.id")
	}
	msgs := messages(t, e, out.RunID)
	if got := msgs[len(msgs)-2].Content; got != "18C" {
		t.Errorf("the tool's ctx had no span: it returned %q", got)
	}

	m := collectMetrics(t, reader)
	for name, want := range map[string]map[string]int64{
		agent.MetricRuns:      {"kern.agent=tooler,kern.run.status=completed": 1},
		agent.MetricToolCalls: {"error=false,gen_ai.tool.name=get_weather,kern.agent=tooler": 1},
		agent.MetricDuration:  {"kern.agent=tooler": 1},
		agent.MetricQueueWait: {"kern.agent=tooler": 1},
		agent.MetricTTFT:      {"kern.agent=tooler": 1},
		agent.MetricInFlight:  {"kern.agent=tooler": 0},
	} {
		for attrs, n := range want {
			if got, ok := m[name][attrs]; !ok || got != n {
				t.Errorf("%s{%s} = %d (present %v), want %d; have %v", name, attrs, got, ok, n, m[name])
			}
		}
	}
	for _, typ := range []string{"input", "output"} {
		if got := m[agent.MetricTokens]["gen_ai.request.model=fake-model,gen_ai.token.type="+typ+",kern.agent=tooler"]; got <= 0 {
			t.Errorf("%s %s = %d; have %v", agent.MetricTokens, typ, got, m[agent.MetricTokens])
		}
	}
}

// TestTelemetryErroredAndCancelledRuns: a run that fails ends its kern.run
// span with status Error and the run's error; a cancelled one with
// kern.run.status "cancelled" and no error status.
func TestTelemetryErroredAndCancelledRuns(t *testing.T) {
	t.Parallel()
	spans, _ := tracing()
	e, reader := telemetryEnv(t)
	ctx := kerntest.Context(t, 30*time.Second)

	failed, err := e.agent.Run(ctx, "Fail [fake:status=400]", agent.Background(true))
	if err != nil {
		t.Fatal(err)
	}
	if out := mustWait(t, e.agent, failed.RunID); out.Status != run.StatusError {
		t.Fatalf("run: %+v", out)
	}
	all := spans.wait(t, ctx, "kern.run of the failed run", runSpanOf(failed.RunID))
	var failedSpan sdktrace.ReadOnlySpan
	for _, sp := range all {
		if runSpanOf(failed.RunID)(sp) {
			failedSpan = sp
		}
	}
	if failedSpan.Status().Code != codes.Error || !strings.Contains(failedSpan.Status().Description, "400") {
		t.Errorf("failed run's span status %+v", failedSpan.Status())
	}
	if v, _ := attrOf(failedSpan, agent.AttrStatus); v.AsString() != "error" {
		t.Errorf("failed run's %s = %q", agent.AttrStatus, v.AsString())
	}
	chats := spansNamed(all, failedSpan.SpanContext().TraceID(), "chat ")
	if len(chats) != 1 || chats[0].Status().Code != codes.Error {
		t.Errorf("failed run's chat spans: %v", chats)
	}

	hung, err := e.agent.Run(ctx, "Hang [fake:hang]", agent.Background(true))
	if err != nil {
		t.Fatal(err)
	}
	for ev, err := range e.agent.Events(ctx, hung.RunID, 0) {
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type == run.EventRunStarted {
			break
		}
	}
	if ok, err := e.agent.CancelRun(ctx, hung.RunID); err != nil || !ok {
		t.Fatalf("cancel: %v %v", ok, err)
	}
	if out := mustWait(t, e.agent, hung.RunID); out.Status != run.StatusCancelled {
		t.Fatalf("run: %+v", out)
	}
	all = spans.wait(t, ctx, "kern.run of the cancelled run", runSpanOf(hung.RunID))
	for _, sp := range all {
		if !runSpanOf(hung.RunID)(sp) {
			continue
		}
		if sp.Status().Code != codes.Unset {
			t.Errorf("cancelled run's span status %+v", sp.Status())
		}
		if v, _ := attrOf(sp, agent.AttrStatus); v.AsString() != "cancelled" {
			t.Errorf("cancelled run's %s = %q", agent.AttrStatus, v.AsString())
		}
	}

	m := collectMetrics(t, reader)
	for _, status := range []string{"error", "cancelled"} {
		if got := m[agent.MetricRuns]["kern.agent=tooler,kern.run.status="+status]; got != 1 {
			t.Errorf("%s{%s} = %d; have %v", agent.MetricRuns, status, got, m[agent.MetricRuns])
		}
	}
}
