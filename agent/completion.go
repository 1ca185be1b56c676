package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/riverqueue/river"

	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/internal/netguard"
	"github.com/kern-go/kern/run"
)

// Completion hooks (WorkerConfig.OnComplete) and webhooks (WithWebhook).
//
// Every run that becomes terminal gets a row in kern_run_outbox, written by
// a trigger in the transaction of the terminal transition (see db's package
// doc). Each worker drains its agents' rows into River jobs — kern_complete
// on the agent's completion queue, worked only by workers with an
// OnComplete, and kern_webhook on its webhook queue, worked by every worker
// of the agent — deleting the rows in the transaction that inserts the
// jobs. The callbacks and the POSTs run as those jobs, on queues of their
// own: they never take a run's slot, and River retries them after an error,
// a panic or a crash.

// Tuning of the outbox drain and of the hook jobs.
const (
	// outboxEvery is how often a worker drains the outbox when nothing
	// nudges it: the latency of an OnComplete for a run that another process
	// ended (a cancel, a foreground run, another worker's rescue).
	outboxEvery = 250 * time.Millisecond
	// outboxLimit is how many outbox rows one drain statement takes.
	outboxLimit = 500
	// outboxGap is the least time between two drains: at high throughput
	// the nudges after each run coalesce into one drain of many rows.
	outboxGap = 20 * time.Millisecond
	// completeDropAfter is how long a completion row waits for a worker of
	// its agent that has an OnComplete before a worker without one deletes
	// it: a fleet with no OnComplete does not keep rows forever, and during
	// a rolling deploy the workers with one have a minute to take them.
	completeDropAfter = time.Minute
	// completeTimeout bounds one OnComplete call (its ctx ends then).
	completeTimeout = 5 * time.Minute
	// minHookWorkers is the least number of callbacks (and, separately,
	// webhook deliveries) a worker runs at once per agent.
	minHookWorkers = 10
)

// hooks is a worker's side of completions: the nudge that drains the
// outbox early and what the webhook jobs need.
type hooks struct {
	w     *Worker
	nudge chan struct{}
	http  *http.Client
	// guarded delivers tenants' webhooks: it connects only to public
	// addresses (netguard.Control checks each connection's address).
	guarded *http.Client
}

// setupHooks adds the completion and webhook queues of the worker's agents
// and their River workers.
func (w *Worker) setupHooks(queues map[string]river.QueueConfig, workers *river.Workers) error {
	// A webhook is answered where it was sent: a redirect is a non-2xx
	// answer, not a second POST somewhere else.
	noRedirect := func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	guarded := http.DefaultTransport.(*http.Transport).Clone()
	guarded.Proxy = nil // a proxy's address is not the receiver's: the check needs the real one
	guarded.DialContext = netguard.DialContext(w.cfg.webhookLookup)
	plain := &http.Client{CheckRedirect: noRedirect}
	if w.cfg.webhookLookup != nil { // tests: their names resolve for every delivery
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.DialContext = netguard.DialWith(&net.Dialer{}, w.cfg.webhookLookup)
		plain.Transport = t
	}
	w.hooks = &hooks{w: w, nudge: make(chan struct{}, 1),
		http:    plain,
		guarded: &http.Client{CheckRedirect: noRedirect, Transport: guarded},
	}
	n := max(w.cfg.MaxConcurrentRuns, minHookWorkers)
	for name := range w.agents {
		queues[engine.WebhookQueueFor(name)] = river.QueueConfig{MaxWorkers: n}
		if w.cfg.OnComplete != nil {
			queues[engine.CompleteQueueFor(name)] = river.QueueConfig{MaxWorkers: n}
		}
	}
	if err := river.AddWorkerSafely(workers, &completeWorker{w: w}); err != nil {
		return err
	}
	return river.AddWorkerSafely(workers, &webhookWorker{w: w})
}

// poke asks the drainer for a pass now: this worker may just have ended a
// run. Only a worker with an OnComplete hurries; webhooks go out at the
// next tick.
func (h *hooks) poke() {
	if h == nil || h.w.cfg.OnComplete == nil {
		return
	}
	select {
	case h.nudge <- struct{}{}:
	default:
	}
}

// drain moves the outbox rows of the worker's agents into River jobs,
// every outboxEvery and whenever poked, until ctx ends.
func (h *hooks) drain(ctx context.Context) {
	w := h.w
	p := engine.OutboxDrain{
		Agents:             w.agentNames(),
		Complete:           w.cfg.OnComplete != nil,
		DropAfter:          completeDropAfter,
		Limit:              outboxLimit,
		WebhookMaxAttempts: w.cfg.webhookMaxAttempts,
	}
	every := outboxEvery
	if w.cfg.outboxEvery > 0 {
		every = w.cfg.outboxEvery
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-h.nudge:
		}
		for ctx.Err() == nil {
			res, err := w.store.DrainOutbox(ctx, p)
			if err != nil {
				if ctx.Err() == nil {
					w.cfg.Logger.WarnContext(ctx, "kern: draining the completion outbox failed", slog.Any("error", err))
				}
				break
			}
			if res.Dropped > 0 {
				w.cfg.Logger.DebugContext(ctx, "kern: dropped completions no worker with OnComplete took",
					slog.Int("dropped", res.Dropped), slog.Duration("after", completeDropAfter))
			}
			if res.Completions+res.Dropped < p.Limit && res.Webhooks < p.Limit {
				break
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(outboxGap):
		}
	}
}

// completeWorker calls the worker's OnComplete for one terminal run.
type completeWorker struct {
	river.WorkerDefaults[engine.CompleteJobArgs]
	w *Worker
}

func (*completeWorker) Timeout(*river.Job[engine.CompleteJobArgs]) time.Duration {
	return completeTimeout
}

func (cw *completeWorker) Work(ctx context.Context, job *river.Job[engine.CompleteJobArgs]) error {
	w := cw.w
	if w.cfg.OnComplete == nil || w.agents[job.Args.AgentName] == nil {
		// Only workers of the agent with an OnComplete work its completion
		// queue; a job that reaches another one (a queue name collision,
		// a job inserted by hand) is put back for them.
		return river.JobSnooze(notServedDelay)
	}
	out, err := w.store.ReadRun(ctx, job.Args.RunID)
	switch {
	case errors.Is(err, run.ErrNotFound):
		return nil // deleted (Retention) before its completion was taken
	case err != nil:
		return err
	case !out.Status.Terminal():
		return fmt.Errorf("kern: completion of run %q, which is %s", out.RunID, out.Status)
	}
	w.cfg.OnComplete(ctx, out)
	return nil
}
