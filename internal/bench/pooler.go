package bench

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/pgtest"
)

// PoolerConfig sizes the pooler group (a Config field).
type PoolerConfig struct {
	// Runs is the background runs of each mode's end-to-end round.
	Runs int
	// Rounds is how many interleaved rounds each mode gets: every round
	// measures every mode, in turn, so a slow spell of the machine falls on
	// all of them alike.
	Rounds int
	// Samples is the idle pickups and the WaitRun wake-ups of each mode,
	// spread over the rounds.
	Samples int
	// Kills is the worker processes SIGKILLed per mode for the recovery
	// figure, poolerKillRuns runs each (0 skips it).
	Kills int
	// HeartbeatRescueAfter is RescueAfter in the transaction mode without
	// a direct URL, whose dead workers are found by their runs' heartbeats
	// alone (0: 5s, rather than the default 30s).
	HeartbeatRescueAfter time.Duration
}

// poolerKillRuns runs are in flight on each worker process the pooler
// group kills.
const poolerKillRuns = 5

// defaultHeartbeatRescueAfter is PoolerConfig.HeartbeatRescueAfter's
// default: short enough that the group stays within minutes.
const defaultHeartbeatRescueAfter = 5 * time.Second

// poolerMode is one way the pooler group's kern reaches Postgres.
type poolerMode struct {
	name    string
	bouncer pgtest.PoolMode // "": the database URL itself
	direct  bool            // db.WithDirectURL(the database URL)
}

var poolerModes = []poolerMode{
	{name: "direct"},
	{name: "session", bouncer: pgtest.PoolSession},
	{name: "transaction", bouncer: pgtest.PoolTransaction},
	{name: "transaction+direct", bouncer: pgtest.PoolTransaction, direct: true},
}

// poolerSide is one mode's database, PgBouncer and figures.
type poolerSide struct {
	mode      poolerMode
	dbURL     string // the database itself
	url       string // what kern is given: dbURL or PgBouncer's
	counter   *db.DB // on dbURL, for counting finished runs
	d         *db.DB // on url, as an application opens it
	bouncer   *pgtest.Bouncer
	closers   []func()
	rescue    time.Duration // RescueAfter of its worker processes (0: default)
	rates     []float64
	pickups   []time.Duration
	wakes     []time.Duration
	recovered []time.Duration
	lost      int
	doubled   int
}

func (s *poolerSide) close() {
	for _, c := range slices.Backward(s.closers) {
		c()
	}
}

// pooler measures kern through PgBouncer side by side with kern on
// Postgres itself: end-to-end runs/s, idle pickup, WaitRun wake-up and
// recovery after SIGKILL, in direct, session, transaction and
// transaction+direct mode, each on a fresh database of the same server,
// the modes taking turns round by round. It starts PgBouncer itself and
// four databases, so it runs only when -only names it.
func pooler(ctx context.Context, env Env, cfg Config) ([]Result, error) {
	pc := cfg.Pooler
	if !slices.Contains(cfg.Only, "pooler") || pc.Runs <= 0 || env.DatabaseURL == nil {
		return nil, nil
	}
	pc.Rounds, pc.Samples = max(pc.Rounds, 1), max(pc.Samples, 1)
	if pc.HeartbeatRescueAfter <= 0 {
		pc.HeartbeatRescueAfter = defaultHeartbeatRescueAfter
	}
	// One script for every phase: a victim's runs stream at length, so
	// they are in flight when it is killed; every other run answers at once.
	env.Fake.Script(func(req fakellm.Request) fakellm.Reply {
		if strings.HasPrefix(req.Model, "victim") {
			return fakellm.Reply{Content: fakellm.LoremWords(2000), Drip: 50 * time.Millisecond}
		}
		return fakellm.Reply{Content: "recovered"}
	})
	var sides []*poolerSide
	defer func() {
		for _, s := range sides {
			s.close()
		}
	}()
	var skipped string
	for _, m := range poolerModes {
		if m.bouncer != "" && skipped != "" {
			continue
		}
		s, err := openSide(ctx, env, m, pc)
		if errors.Is(err, pgtest.ErrNoPgBouncer) {
			skipped = err.Error()
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("pooler %s: %w", m.name, err)
		}
		sides = append(sides, s)
	}

	// Warm-up, not counted: connections, River's clients, HTTP keep-alives.
	warm := cfg
	warm.Runs = max(pc.Runs/10, 20)
	for _, s := range sides {
		if _, err := s.throughput(ctx, env, warm); err != nil {
			return nil, fmt.Errorf("pooler %s warm-up: %w", s.mode.name, err)
		}
	}
	perRound := (pc.Samples + pc.Rounds - 1) / pc.Rounds
	tcfg := cfg
	tcfg.Runs = pc.Runs
	for round := range pc.Rounds {
		for _, s := range interleave(sides, round) {
			rate, err := s.throughput(ctx, env, tcfg)
			if err != nil {
				return nil, fmt.Errorf("pooler %s runs/s: %w", s.mode.name, err)
			}
			s.rates = append(s.rates, rate)
		}
		n := min(perRound, pc.Samples-round*perRound)
		for _, s := range interleave(sides, round) {
			if err := s.measurePickup(ctx, env, cfg, round, n); err != nil {
				return nil, fmt.Errorf("pooler %s pickup: %w", s.mode.name, err)
			}
		}
		for _, s := range interleave(sides, round) {
			for i := range n {
				lag, err := wakeLag(ctx, s.d, fmt.Sprintf("wait-%d-%d", round, i))
				if err != nil {
					return nil, fmt.Errorf("pooler %s wake-up: %w", s.mode.name, err)
				}
				s.wakes = append(s.wakes, lag)
			}
		}
	}
	if env.SpawnPooledWorker != nil {
		for round := range pc.Kills {
			for _, s := range interleave(sides, round) {
				if err := s.measureRecovery(ctx, env, round); err != nil {
					return nil, fmt.Errorf("pooler %s recovery: %w", s.mode.name, err)
				}
			}
		}
	}
	return poolerResults(sides, cfg, pc, skipped, env.SpawnPooledWorker != nil), nil
}

// interleave is the order of the sides in round: forwards, then backwards
// (ABCD DCBA), so steady drift of the machine's speed favours no mode.
func interleave(sides []*poolerSide, round int) []*poolerSide {
	if round%2 == 0 {
		return sides
	}
	out := slices.Clone(sides)
	slices.Reverse(out)
	return out
}

// poolerResults are the group's rows: each figure with the modes' values
// side by side, in the order of the first row.
func poolerResults(sides []*poolerSide, cfg Config, pc PoolerConfig, skipped string, recovered bool) []Result {
	each := func(f func(s *poolerSide) string) string {
		vals := make([]string, len(sides))
		for i, s := range sides {
			vals[i] = f(s)
		}
		return strings.Join(vals, " / ")
	}
	msAt := func(p int, get func(s *poolerSide) []time.Duration) string {
		return each(func(s *poolerSide) string { return fmt.Sprintf("%.1f", float64(pct(get(s), p).Microseconds())/1000) })
	}
	pickups := func(s *poolerSide) []time.Duration { return s.pickups }
	wakes := func(s *poolerSide) []time.Duration { return s.wakes }
	out := []Result{{"pooler: modes", each(func(s *poolerSide) string { return s.mode.name }),
		fmt.Sprintf("each on a fresh database of this server, migrated directly; PgBouncer started by the group (default_pool_size: session %d, transaction 20); "+
			"%d interleaved rounds (ABCD DCBA …); transaction+direct: db.WithDirectURL(the database URL)", sessionPoolSize, pc.Rounds)}}
	if skipped != "" {
		out = append(out, Result{"pooler: PgBouncer modes skipped", "-", skipped + " (Debian/Ubuntu: apt-get install pgbouncer)"})
	}
	out = append(out,
		Result{"pooler: end-to-end runs/s", each(func(s *poolerSide) string { return fmt.Sprintf("%.0f", median(s.rates)) }),
			fmt.Sprintf("median of %d rounds of %d runs; rounds %s; %d submitters, %d concurrent runs, FetchCooldown %v, FetchPollInterval %v, instant fake model",
				pc.Rounds, pc.Runs, each(func(s *poolerSide) string { return roundsList(s.rates) }), cfg.Submitters, cfg.Concurrency, cfg.FetchCooldown, cfg.FetchPollInterval)},
		Result{"pooler: pickup, idle worker p50 (ms)", msAt(50, pickups),
			fmt.Sprintf("Run returning → the worker calling the model; %d runs one at a time per mode, default WorkerConfig; "+
				"without LISTEN (transaction) River polls every FetchPollInterval (1s) and submits fall anywhere in its cycle", pc.Samples)},
		Result{"pooler: pickup, idle worker p99 (ms)", msAt(99, pickups), ""},
		Result{"pooler: WaitRun wake-up p50 (ms)", msAt(50, wakes),
			fmt.Sprintf("from the finishing UPDATE to WaitRun returning, %d per mode; without LISTEN waits re-read every 250ms", pc.Samples)},
		Result{"pooler: WaitRun wake-up p99 (ms)", msAt(99, wakes), ""},
	)
	if recovered && pc.Kills > 0 {
		secs := func(p int) string {
			return each(func(s *poolerSide) string { return fmt.Sprintf("%.1f", pct(s.recovered, p).Seconds()) })
		}
		hb := strings.Join(heartbeatModes(sides), ", ")
		rule := fmt.Sprintf("%s: RescueAfter %v (heartbeat rule, no session to judge by); the others: default RescueAfter 30s (session rule)",
			hb, pc.HeartbeatRescueAfter)
		out = append(out,
			Result{fmt.Sprintf("pooler: recovery after SIGKILL p50 (s; %s: RescueAfter %v)", hb, pc.HeartbeatRescueAfter), secs(50),
				fmt.Sprintf("kill → each run completed by a survivor; %d worker processes × %d runs per mode, on the mode's URL (and direct URL); %s",
					pc.Kills, poolerKillRuns, rule)},
			Result{"pooler: recovery after SIGKILL max (s)", secs(100), ""},
			Result{"pooler: runs lost / doubled", each(func(s *poolerSide) string { return fmt.Sprintf("%d+%d", s.lost, s.doubled) }),
				"lost+doubled per mode; a doubled run would have two terminal events"})
	}
	out = append(out, Result{"pooler: PgBouncer alive, log", each(func(s *poolerSide) string { h, _ := s.bouncerHealth(); return h }),
		"PgBouncer's log grepped for cancel, bad state, FATAL at the end of the group"})
	for _, s := range sides {
		if _, lines := s.bouncerHealth(); len(lines) > 0 {
			out = append(out, Result{"pooler: PgBouncer log, " + s.mode.name, fmt.Sprintf("%d shown", len(lines)), strings.Join(lines, " | ")})
		}
	}
	return out
}

// heartbeatModes names the sides whose dead workers are found by
// heartbeats alone.
func heartbeatModes(sides []*poolerSide) []string {
	var names []string
	for _, s := range sides {
		if s.rescue > 0 {
			names = append(names, s.mode.name)
		}
	}
	if len(names) == 0 {
		names = []string{"none"}
	}
	return names
}
