package agent

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/kern-go/kern/internal/netguard"
	"github.com/kern-go/kern/run"
)

// WorkerConfig tunes a Worker. Zero values take the documented defaults.
type WorkerConfig struct {
	// MaxConcurrentRuns is how many runs this worker executes at once, in
	// total across all its agents. Default 5.
	MaxConcurrentRuns int
	DefaultTimeout    time.Duration // for runs without WithTimeout; default 5m
	MaxAttempts       int           // executions of a run before it errors; default 3
	RescueAfter       time.Duration // stale-heartbeat threshold; default 30s
	MaxContentBytes   int           // largest answer kept; default 4 MiB
	// Retention is how long finished runs are kept: every worker deletes
	// runs (with their events) that finished longer ago, a bounded batch at
	// a time, about once a minute. 0 means the default, 24h; a negative
	// value keeps runs forever.
	Retention time.Duration
	// MaxRunsPerKey bounds the runs of one concurrency key
	// (WithConcurrencyKey) that are running at once, across every worker
	// and process on the database: enforced by the claim in Postgres. Runs
	// over it stay pending, using no attempt, and start in submit order as
	// slots free; a run waiting for answers (run.StatusWaiting) holds no
	// slot. 0 means no limit. It is the claiming worker's value that
	// applies: give every worker of an agent the same one.
	MaxRunsPerKey int
	// OnComplete is called once for every run of this worker's agents that
	// reaches a terminal status — completed, error or cancelled, also a run
	// cancelled before it started, whoever ended it (this worker, another
	// one, a CancelRun in any process) — in a worker serving the run's
	// agent that has an OnComplete, off the runs' execution path (see
	// "Completion hooks and webhooks" in the README). At least once: a
	// crash or a panic in it makes it run again. ctx ends after 5 minutes
	// or when the worker stops hard. Give every worker of an agent the same
	// OnComplete: a worker without one drops completions no worker with
	// one took within a minute.
	OnComplete func(ctx context.Context, out *run.Output)
	// WebhookSecret signs webhooks (WithWebhook), per Standard Webhooks:
	// a "whsec_<base64>" secret is the base64-decoded bytes, any other
	// string its own bytes. A worker without one does not send unsigned:
	// its deliveries fail with "no WebhookSecret configured".
	WebhookSecret string
	// AllowPrivateWebhooks lets a tenant's webhook (a run with a TenantID)
	// connect to an address that is not public: loopback, private,
	// link-local, CGNAT, benchmarking, documentation, unspecified,
	// multicast, broadcast, or any IPv6 spelling of such an IPv4 address.
	// Without it the worker checks the address of every connection a
	// tenant's delivery makes, after DNS (so a name rebound to an internal
	// address after submit is refused too); a refused delivery fails at
	// once, its LastError saying which address and why. Such deliveries
	// connect directly, not through HTTP_PROXY: the check is of the address
	// connected to. The operator's own runs (no tenant) are not checked.
	// Set it where server.Config.AllowPrivateWebhooks is set.
	AllowPrivateWebhooks bool
	// Logger receives kern's logs; River's routine Info lines are demoted
	// to Debug. Default slog.Default().
	Logger *slog.Logger

	// TracerProvider makes the worker's spans: "kern.run" per execution
	// of a run (a child of the submitter's "kern.submit", carried in the
	// run's job), "chat <model>" per model turn (GenAI semantic
	// conventions: gen_ai.request.model, gen_ai.usage.input_tokens and
	// gen_ai.usage.output_tokens as ints, gen_ai.response.finish_reasons)
	// and "execute_tool <tool>" per tool call. nil means otel's global
	// provider (a no-op one unless the application set one).
	TracerProvider trace.TracerProvider
	// MeterProvider records the worker's metrics (kern.runs, kern.tokens,
	// kern.tool_calls, kern.run.queue_wait, kern.run.time_to_first_token,
	// kern.run.duration, kern.runs.in_flight, kern.rescues; see the README's
	// "Telemetry"). nil means otel's global provider.
	MeterProvider metric.MeterProvider

	// HeartbeatInterval is how often an executing run proves it is alive,
	// how often this worker renews its registration, and how often it looks
	// for stale runs to rescue. Default 5s.
	HeartbeatInterval time.Duration
	// RetryBaseDelay is the backoff of the first retry; each further one
	// doubles it, with jitter, unless the provider sends Retry-After.
	// Default 1s.
	RetryBaseDelay time.Duration

	// FetchCooldown and FetchPollInterval tune River's fetching (see
	// river.Config): the shortest time between two fetches of new runs of
	// one agent, and the longest wait for one when no notification arrives.
	// Defaults 2ms and 1s. River's own default cooldown, 100ms, would make a
	// run wait up to that long for an idle worker and cap a worker at about
	// 10 × MaxConcurrentRuns runs/s; a fetch costs one query, and a worker
	// whose slots are all busy does not fetch at all.
	FetchCooldown     time.Duration
	FetchPollInterval time.Duration

	// FlushInterval and FlushBytes batch streamed content into the row:
	// whichever comes first after the first unflushed delta. Defaults 100ms
	// and 4 KiB.
	FlushInterval time.Duration
	FlushBytes    int

	// webhookKey is WebhookSecret's HMAC key (withDefaults).
	webhookKey []byte
	// Knobs for tests (completion_export_test.go): attempts of a webhook,
	// the delay between them, one attempt's timeout, the outbox ticker.
	webhookMaxAttempts int
	webhookBackoff     time.Duration
	webhookTimeout     time.Duration
	outboxEvery        time.Duration
	// webhookLookup resolves the hosts of tenants' webhooks; nil: the
	// system's resolver (a test knob too).
	webhookLookup netguard.Lookup
}

// Defaults that differ from River's.
const (
	// defaultRetention is how long finished runs are kept when Retention is 0.
	defaultRetention     = 24 * time.Hour
	defaultFetchCooldown = 2 * time.Millisecond
	defaultFetchPoll     = time.Second
)

func (c *WorkerConfig) withDefaults() (WorkerConfig, error) {
	out := *c
	if out.MaxConcurrentRuns < 0 || out.DefaultTimeout < 0 || out.MaxAttempts < 0 || out.FlushInterval < 0 || out.FlushBytes < 0 ||
		out.RescueAfter < 0 || out.MaxContentBytes < 0 || out.HeartbeatInterval < 0 || out.RetryBaseDelay < 0 ||
		out.FetchCooldown < 0 || out.FetchPollInterval < 0 {
		return out, fmt.Errorf("kern: %w: worker config has a negative value", run.ErrInvalidArgument)
	}
	if out.MaxRunsPerKey < 0 {
		return out, fmt.Errorf("kern: %w: WorkerConfig.MaxRunsPerKey %d is negative", run.ErrInvalidArgument, out.MaxRunsPerKey)
	}
	if out.WebhookSecret != "" {
		key, err := webhookKey(out.WebhookSecret)
		if err != nil {
			return out, err
		}
		out.webhookKey = key
	}
	if out.MaxConcurrentRuns == 0 {
		out.MaxConcurrentRuns = 5
	}
	if out.DefaultTimeout == 0 {
		out.DefaultTimeout = defaultTimeout
	}
	if out.MaxAttempts == 0 {
		out.MaxAttempts = defaultMaxAttempts
	}
	if out.RescueAfter == 0 {
		out.RescueAfter = 30 * time.Second
	}
	if out.MaxContentBytes == 0 {
		out.MaxContentBytes = defaultMaxContentBytes
	}
	if out.HeartbeatInterval == 0 {
		out.HeartbeatInterval = min(defaultHeartbeat, out.RescueAfter/3)
	}
	if out.RetryBaseDelay == 0 {
		out.RetryBaseDelay = defaultRetryBase
	}
	if out.HeartbeatInterval >= out.RescueAfter {
		return out, fmt.Errorf("kern: %w: HeartbeatInterval %v must be shorter than RescueAfter %v", run.ErrInvalidArgument, out.HeartbeatInterval, out.RescueAfter)
	}
	if out.Retention == 0 {
		out.Retention = defaultRetention
	}
	if out.FetchCooldown == 0 {
		out.FetchCooldown = defaultFetchCooldown
	}
	if out.FetchPollInterval == 0 {
		out.FetchPollInterval = defaultFetchPoll
	}
	if out.FetchPollInterval < out.FetchCooldown {
		return out, fmt.Errorf("%w: FetchPollInterval %v must not be shorter than FetchCooldown %v", run.ErrInvalidArgument, out.FetchPollInterval, out.FetchCooldown)
	}
	if out.FlushInterval == 0 {
		out.FlushInterval = defaultFlushEvery
	}
	if out.FlushBytes == 0 {
		out.FlushBytes = defaultFlushBytes
	}
	if out.Logger == nil {
		out.Logger = slog.Default()
	}
	return out, nil
}
