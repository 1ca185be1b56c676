package engine

import (
	"crypto/md5"
	"encoding/hex"
	"strings"

	"github.com/riverqueue/river"
)

// RunJobArgs is the River job of a background run. It carries ids only:
// everything else is in the run's row, the one source of truth.
type RunJobArgs struct {
	RunID     string `json:"run_id"`
	AgentName string `json:"agent"`
}

// Kind implements river.JobArgs.
func (RunJobArgs) Kind() string { return "kern_run" }

// InsertOpts puts every run on its agent's queue, whoever inserts it, so
// only workers that serve the agent ever fetch it.
func (a RunJobArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueFor(a.AgentName), Priority: DefaultPriority}
}

// DefaultPriority is the River priority of a run's job when its submit
// named none (WithPriority): 2, so that 1 can run before it.
const DefaultPriority = 2

// LegacyQueue is the one queue every run used before runs were routed per
// agent; db.Migrate moves what is left on it to the agents' queues.
const LegacyQueue = "kern"

// QueueFor is the River queue of an agent's runs: "kern_", the name made
// safe for River (lower-case ASCII letters and digits, other runs of
// characters as one "_", at most 40 bytes), "_", and 8 hex digits of the
// name's MD5, so names that read the same once made safe ("Writer",
// "writer", "wrïter") still get queues of their own. At most 54 bytes; River
// allows 64.
func QueueFor(agentName string) string {
	var b strings.Builder
	b.WriteString("kern_")
	gap := false
	for _, c := range []byte(agentName) {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c >= 'A' && c <= 'Z':
			c += 'a' - 'A'
		default:
			gap = true
			continue
		}
		if b.Len() >= len("kern_")+40 {
			break
		}
		if gap && b.Len() > len("kern_") {
			b.WriteByte('_')
		}
		gap = false
		b.WriteByte(c)
	}
	sum := md5.Sum([]byte(agentName))
	if b.Len() > len("kern_") {
		b.WriteByte('_')
	}
	b.WriteString(hex.EncodeToString(sum[:4]))
	return b.String()
}
