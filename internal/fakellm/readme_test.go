package fakellm

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestReadmeDirectives keeps the README's fake-model examples honest: every
// "[fake:...]" there must be understood item by item, since the parser
// silently ignores what it does not understand.
func TestReadmeDirectives(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Skipf("no README: %v", err)
	}
	examples := regexp.MustCompile(`\[fake:([^\]…]+)\]`).FindAllStringSubmatch(string(readme), -1)
	if len(examples) < 5 {
		t.Fatalf("found %d [fake:...] examples in README.md, expected the fake-model table", len(examples))
	}
	for _, ex := range examples {
		for item := range strings.SplitSeq(ex[1], ",") {
			if ParseDirectives("[fake:" + item + "]").Empty() {
				t.Errorf("README example %s: %q is ignored by ParseDirectives", ex[0], item)
			}
		}
	}

	// The ones whose effect the README spells out.
	long := ParseDirectives("[fake:words=2000,drip=20ms]")
	if got := len(strings.Fields(long.Apply(Reply{}).Content)); got != 2000 || long.Drip != 20*time.Millisecond {
		t.Errorf("words=2000,drip=20ms: %d words, drip %v", got, long.Drip)
	}
	if r := ParseDirectives("[fake:status=429,retry_after=2]").Apply(Reply{}); r.Status != 429 || r.RetryAfter != "2" {
		t.Errorf("status=429,retry_after=2: %+v", r)
	}
	if r := ParseDirectives("[fake:cut=3]").Apply(Reply{}); r.CutAfter != 3 {
		t.Errorf("cut=3: %+v", r)
	}
	if r := ParseDirectives("[fake:hang]").Apply(Reply{}); !r.Hang {
		t.Errorf("hang: %+v", r)
	}
	if r := ParseDirectives("[fake:latency=10s]").Apply(Reply{}); r.Latency != 10*time.Second {
		t.Errorf("latency=10s: %+v", r)
	}
}
