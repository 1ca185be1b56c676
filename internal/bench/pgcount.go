package bench

import (
	"context"
	"fmt"
)

// PostgresCounters are server-wide counters read between rounds, so the
// end-to-end figure can say what a run costs the server besides CPU.
type PostgresCounters struct {
	// Xacts is the next transaction id to be assigned: its difference is
	// the number of transactions that wrote (a read-only one takes no id).
	Xacts int64
	// WALBytes is the current WAL insert position in bytes.
	WALBytes int64
	// WALSyncs is pg_stat_wal's count of WAL flushes to disk (backends
	// report it when they go idle or exit, so a round's figure is
	// approximate at its edges).
	WALSyncs int64
}

// counterSamples collects the counters' differences per run over rounds.
type counterSamples struct{ xacts, walBytes, walSyncs []float64 }

func (c *counterSamples) add(from, to PostgresCounters, ok bool, runs int) {
	if !ok {
		return
	}
	n := float64(runs)
	c.xacts = append(c.xacts, float64(to.Xacts-from.Xacts)/n)
	c.walBytes = append(c.walBytes, float64(to.WALBytes-from.WALBytes)/n)
	c.walSyncs = append(c.walSyncs, float64(to.WALSyncs-from.WALSyncs)/n)
}

func (env Env) countersNow(ctx context.Context) (PostgresCounters, bool) {
	if env.PostgresCounters == nil {
		return PostgresCounters{}, false
	}
	c, err := env.PostgresCounters(ctx)
	return c, err == nil
}

// counterResults prints the counters per run of kern against the floor's.
func counterResults(kern, floor counterSamples) []Result {
	if len(kern.xacts) == 0 || len(floor.xacts) == 0 {
		return nil
	}
	return []Result{
		{"writing transactions per run: kern / floor", fmt.Sprintf("%.2f / %.2f", median(kern.xacts), median(floor.xacts)),
			"transaction ids assigned per run (each is a commit), median of rounds, including the round's setup"},
		{"WAL per run: kern / floor", fmt.Sprintf("%.0f / %.0f bytes", median(kern.walBytes), median(floor.walBytes)), ""},
		{"WAL flushes per run: kern / floor", fmt.Sprintf("%.3f / %.3f", median(kern.walSyncs), median(floor.walSyncs)),
			"pg_stat_wal.wal_sync; commits that share a flush count once"},
	}
}

// PostgresCountersQuery reads PostgresCounters (in field order) on any
// connection to the server; it assigns no transaction id itself.
const PostgresCountersQuery = `SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint,
	(pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint, (SELECT wal_sync FROM pg_stat_wal)`
