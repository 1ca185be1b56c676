package run_test

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/kern-go/kern/run"
)

// An accepted call id, escaped as a path segment, is one segment of the
// answer URL that a browser resolves to the same call of the same run:
// nothing in it climbs, cuts or splits the path.
func FuzzValidateToolCallID(f *testing.F) {
	for _, seed := range []string{
		"", "call_1_0", "call ok:é&x=y;z+@'", "..", ".", "...", "%2e%2E", "a/b", "a?b", "a#b", "a%b", `a\b`,
		"a\x00b", "a\nb", "\u0085", "\xff", "../../victim-run/tool-calls/call_9/approve?",
		strings.Repeat("x", run.MaxToolCallIDLength), strings.Repeat("x", run.MaxToolCallIDLength+1),
	} {
		f.Add(seed)
	}
	base, _ := url.Parse("https://kern.example/ui/runs/r1/")
	f.Fuzz(func(t *testing.T, id string) {
		err := run.ValidateToolCallID(id)
		if err != nil {
			if !errors.Is(err, run.ErrInvalidArgument) {
				t.Fatalf("ValidateToolCallID(%q) = %v, not wrapping ErrInvalidArgument", id, err)
			}
			return
		}
		ref, perr := url.Parse("/ui/runs/r1/tool-calls/" + url.PathEscape(id) + "/approve")
		if perr != nil {
			t.Fatalf("accepted %q: its URL does not parse: %v", id, perr)
		}
		u := base.ResolveReference(ref)
		segs := strings.Split(u.EscapedPath(), "/")
		if len(segs) != 7 || segs[3] != "r1" || segs[4] != "tool-calls" || segs[6] != "approve" || u.RawQuery != "" || u.Fragment != "" {
			t.Fatalf("accepted %q: its approve URL resolves to %s", id, u)
		}
		if got, _ := url.PathUnescape(segs[5]); got != id {
			t.Fatalf("accepted %q: its URL names call %q", id, got)
		}
	})
}
