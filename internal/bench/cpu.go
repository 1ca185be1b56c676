package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of CPU times in /proc/<pid>/stat on Linux.
const userHZ = 100

// ProcessTreeCPU is the CPU time (user and system) that process pid and
// all its children have used so far: the children that exited (which the
// process reaped) and those alive. For a postmaster, that is the whole
// Postgres server. It reads /proc, so it works on Linux only.
func ProcessTreeCPU(pid int) (time.Duration, bool) {
	own, ok := procStat(strconv.Itoa(pid))
	if !ok {
		return 0, false
	}
	total := own.utime + own.stime + own.cutime + own.cstime
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, false
	}
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		if st, ok := procStat(e.Name()); ok && st.ppid == pid {
			total += st.utime + st.stime
		}
	}
	return time.Duration(total) * time.Second / userHZ, true
}

type procStatFields struct {
	ppid                         int
	utime, stime, cutime, cstime int64
}

func procStat(pid string) (procStatFields, bool) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return procStatFields{}, false
	}
	// The command name, in parentheses, may hold spaces: fields start after it.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 15 {
		return procStatFields{}, false
	}
	num := func(i int) int64 { n, _ := strconv.ParseInt(f[i], 10, 64); return n }
	// f[0] is field 3 (state): ppid is field 4, utime..cstime fields 14-17.
	return procStatFields{ppid: int(num(1)), utime: num(11), stime: num(12), cutime: num(13), cstime: num(14)}, true
}

// cpuReading is the CPU used so far by this process and by Postgres; a
// zero ok field means that side cannot be read here.
type cpuReading struct {
	self, postgres     time.Duration
	selfOK, postgresOK bool
}

func (env Env) cpuNow() cpuReading {
	var r cpuReading
	r.self, r.selfOK = selfCPU()
	if env.PostgresCPU != nil {
		r.postgres, r.postgresOK = env.PostgresCPU()
	}
	return r
}

// cpuSamples collects CPU per run over rounds, for each side.
type cpuSamples struct{ self, postgres []float64 }

func (c *cpuSamples) add(from, to cpuReading, runs int) {
	if from.selfOK && to.selfOK {
		c.self = append(c.self, float64(to.self-from.self)/float64(runs))
	}
	if from.postgresOK && to.postgresOK {
		c.postgres = append(c.postgres, float64(to.postgres-from.postgres)/float64(runs))
	}
}

// cpuResults prints CPU per run of kern against the floor's: the bench
// process (submitters, worker, fake model server) and Postgres.
func cpuResults(kern, floor cpuSamples) []Result {
	var out []Result
	for _, side := range []struct {
		name, note  string
		kern, floor []float64
	}{
		{"CPU per run, this process: kern / floor", "submitters, worker and (kern only) the fake model server; median of rounds", kern.self, floor.self},
		{"CPU per run, Postgres: kern / floor", "all backends of the throwaway server", kern.postgres, floor.postgres},
	} {
		if len(side.kern) == 0 || len(side.floor) == 0 {
			continue
		}
		k, f := time.Duration(median(side.kern)), time.Duration(median(side.floor))
		out = append(out, Result{side.name, fmt.Sprintf("%s / %s", ms(k), ms(f)), side.note})
	}
	return out
}
