package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/kern-go/kern/agent"
)

// The "telemetry" group: what tracing and metrics cost per run. 3-step tool
// runs (a kern.submit, a kern.run, 3 chat and 2 execute_tool spans each)
// with telemetry on — an SDK TracerProvider (always sampled, no exporter)
// and an SDK MeterProvider (manual reader) — against the default, otel's
// no-op global providers, in alternating rounds of one sitting (medians).

// switchTP is otel's global TracerProvider for the group: the SDK's while
// on is set, no-op otherwise. kern.submit takes its tracer from the global
// provider once, so the group switches behind it.
type switchTP struct {
	noop.TracerProvider
	on  atomic.Bool
	sdk *sdktrace.TracerProvider
}

func (p *switchTP) Tracer(name string, opts ...trace.TracerOption) trace.Tracer {
	return &switchTracer{p: p, sdk: p.sdk.Tracer(name, opts...)}
}

type switchTracer struct {
	noop.Tracer
	p   *switchTP
	sdk trace.Tracer
}

func (t *switchTracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if t.p.on.Load() {
		return t.sdk.Start(ctx, name, opts...)
	}
	return t.Tracer.Start(ctx, name, opts...)
}

var (
	benchTPOnce sync.Once
	benchTP     *switchTP
)

func telemetryCost(ctx context.Context, env Env, cfg Config) ([]Result, error) {
	benchTPOnce.Do(func() {
		benchTP = &switchTP{sdk: sdktrace.NewTracerProvider()}
		otel.SetTracerProvider(benchTP)
	})
	warm := cfg
	warm.Runs = max(cfg.Runs/10, 50)
	for _, on := range []bool{false, true} {
		if _, err := telemetryThroughput(ctx, env, warm, on); err != nil {
			return nil, err
		}
	}
	var offRates, onRates []float64
	for round := range max(cfg.Rounds, 3) {
		order := []bool{false, true}
		if round%2 == 1 {
			order = []bool{true, false}
		}
		for _, on := range order {
			rate, err := telemetryThroughput(ctx, env, cfg, on)
			if err != nil {
				return nil, err
			}
			if on {
				onRates = append(onRates, rate)
			} else {
				offRates = append(offRates, rate)
			}
		}
	}
	on, off := median(onRates), median(offRates)
	note := fmt.Sprintf("medians of %d alternating rounds %s vs %s; %d 3-step tool runs, %d submitters, %d concurrent runs",
		len(onRates), roundsList(onRates), roundsList(offRates), cfg.Runs, cfg.Submitters, cfg.Concurrency)
	perRunOn, perRunOff := time.Duration(float64(time.Second)/on), time.Duration(float64(time.Second)/off)
	return []Result{
		{"runs/s, telemetry on (SDK tracer + meter, no exporter)", fmt.Sprintf("%.0f", on), note},
		{"runs/s, telemetry off (no-op providers), same sitting", fmt.Sprintf("%.0f", off),
			fmt.Sprintf("on: %.3f of off, %+.1f%% (%v vs %v of wall time per run)", on/off, (off/on-1)*100, perRunOn, perRunOff)},
	}, nil
}

// telemetryThroughput is loopThroughput's tool run with telemetry on or off.
func telemetryThroughput(ctx context.Context, env Env, cfg Config, on bool) (float64, error) {
	d, done, err := env.NewDB(ctx)
	if err != nil {
		return 0, err
	}
	defer done()
	a := &agent.Agent{Name: "bench", Model: env.Model, DB: d, Tools: []agent.Tool{benchTool}}
	env.Fake.Script(threeStepScript)
	wcfg := agent.WorkerConfig{
		MaxConcurrentRuns: cfg.Concurrency, FetchCooldown: cfg.FetchCooldown, FetchPollInterval: cfg.FetchPollInterval,
		Logger: cfg.Logger,
	}
	benchTP.on.Store(on)
	defer benchTP.on.Store(false)
	if on {
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
		defer func() { _ = mp.Shutdown(context.Background()) }()
		wcfg.TracerProvider, wcfg.MeterProvider = benchTP.sdk, mp
	}
	w, err := agent.NewWorker(d, wcfg, a)
	if err != nil {
		return 0, err
	}
	if err := w.Start(ctx); err != nil {
		return 0, err
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = w.Stop(stopCtx)
	}()
	return drive(ctx, cfg, func() error {
		_, err := a.Run(ctx, "What is the capital of France?", agent.Background(true))
		return err
	}, func() (int, error) {
		var finished, completed int
		err := d.Pool().QueryRow(ctx, `SELECT count(*) FILTER (WHERE status IN ('completed','error','cancelled')),
			count(*) FILTER (WHERE status = 'completed') FROM kern_run`).Scan(&finished, &completed)
		if err == nil && finished == cfg.Runs && completed != cfg.Runs {
			err = fmt.Errorf("telemetry: %d of %d runs completed", completed, cfg.Runs)
		}
		return finished, err
	})
}
