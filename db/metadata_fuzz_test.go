package db_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/run"
)

// FuzzSubmitRoundTrip submits runs whose id, session id, name, prompt and
// metadata come from the fuzzer: every submit either fails with
// run.ErrInvalidArgument and writes nothing, or stores exactly what was
// given.
func FuzzSubmitRoundTrip(f *testing.F) {
	d := kerntest.DB(f) // one database per process: the fuzz body must be fast
	var seq atomic.Int64

	long := strings.Repeat("long text ", 10_000) // 100 KB
	// Random letters do not compress: a long one must still fit the
	// session index, or be refused as an invalid argument.
	rng := rand.New(rand.NewPCG(1, 2))
	noise := make([]byte, 3000)
	for i := range noise {
		noise[i] = 'a' + byte(rng.IntN(26))
	}
	for _, s := range [][5]string{
		// runID, sessionID, name, prompt, metadata value
		{"r", "s", "n", "hello", "v"},
		{"", "", "", "hello", ""},
		{`'"\`, `'"\`, `'"\`, `'"\`, `'"\`},
		{"🙂", "שָׁלוֹם", "e\u0301\u200d", "مرحبا 🙂 e\u0301", "\u202eevil\u202c"},
		{"r", "s\x00", "n", "hello", "v"},
		{"r", "s", "n\x00", "hello", "v"},
		{"r", "s", "n", "hel\x00lo", "v"},
		{"r\x00", "s", "n", "hello", "v"}, // bug: GetRun of this id is a raw Postgres error
		{"r", "s", "n", "hello", "\x00"},  // bug: jsonb refuses \u0000 (SQLSTATE 22P05)
		{"r", "s", "n", "hello", "a\u0000b"},
		{"r", "s", "n", "hello", `\u0000`},
		{"\xff", "s", "n", "hello", "v"}, // bug: GetRun of this id is a raw Postgres error
		{"r", "\xff", "n", "hello", "v"}, // bug: invalid UTF-8 text is a raw Postgres error (22021)
		{"r", "s", "\xff", "hello", "v"},
		{"r", "s", "n", "hello\xff", "v"},
		{"r", "s", "n", "hello", "\xff"},         // bug: stored as U+FFFD, silently
		{"r", "s", "n", "hello", "\xed\xa0\x80"}, // a UTF-16 surrogate, encoded
		{"r", "s", "n", "", "v"},
		{"r", "s", "n", " \t\n\u00a0\u3000", "v"},
		{strings.Repeat("r", 300), "s", "n", "hello", "v"},
		{"r", long, long, long, long},
		{"r", string(noise), "n", "hello", "v"}, // bug: too big for kern_run_session_idx (54000)
		{"r", "s", string(noise), string(noise), string(noise)},
		{"'; DROP TABLE kern_run; --", "'; DROP TABLE kern_run; --", "'; DROP TABLE kern_run; --", "'; DROP TABLE kern_run; --", "'; DROP TABLE kern_run; --"},
		{"$1", "$2", "%s", "%!v(MISSING) {{.}}", `{"a":1}`},
		{"r", "s", "n", "hello", "</script><script>alert(1)</script>"},
		{"r", "s", "n", "hello", "\u2028\u2029<>&"},
	} {
		f.Add(s[0], s[1], s[2], s[3], s[4])
	}

	f.Fuzz(func(t *testing.T, runID, sessionID, name, prompt, metaValue string) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// A counter keeps ids unique across iterations; the fuzzed bytes
		// still decide whether the id is valid.
		id := "f" + strconv.FormatInt(seq.Add(1), 10) + "-" + runID
		metadata := map[string]any{"k": metaValue, "key:" + metaValue: "v"}
		p := db.SubmitParams{RunID: id, SessionID: sessionID, AgentName: "a", Name: name, Input: prompt, Metadata: metadata}

		out, err := d.SubmitRun(ctx, p)
		if err != nil {
			if !errors.Is(err, run.ErrInvalidArgument) {
				t.Fatalf("SubmitRun(%s) failed with an error that is not run.ErrInvalidArgument: %v", describe(p), err)
			}
			got, gerr := d.GetRun(ctx, id)
			switch {
			case errors.Is(gerr, run.ErrNotFound):
			case gerr == nil:
				t.Fatalf("SubmitRun(%s) failed (%v) but wrote run %+v", describe(p), err, got)
			case run.ValidateID(id) != nil && errors.Is(gerr, run.ErrInvalidArgument):
				// A malformed id cannot have a run; saying so is fine too.
			default:
				t.Fatalf("SubmitRun(%s) failed (%v); GetRun(%q) = %v, want run.ErrNotFound", describe(p), err, id, gerr)
			}
			return
		}

		got, err := d.GetRun(ctx, id)
		if err != nil {
			t.Fatalf("SubmitRun(%s) succeeded but GetRun: %v", describe(p), err)
		}
		for _, o := range []struct {
			what string
			out  *run.Output
		}{{"SubmitRun", out}, {"GetRun", got}} {
			if o.out.RunID != id || o.out.SessionID != sessionID || o.out.AgentName != "a" || o.out.Name != name || o.out.Input != prompt {
				t.Fatalf("%s round trip changed the run: sent %s, got RunID %q SessionID %q AgentName %q Name %q Input %q",
					o.what, describe(p), o.out.RunID, short(o.out.SessionID), o.out.AgentName, short(o.out.Name), short(o.out.Input))
			}
			if !reflect.DeepEqual(o.out.Metadata, metadata) {
				t.Fatalf("%s round trip changed the metadata: sent %q, got %q", o.what, metadata, o.out.Metadata)
			}
			if o.out.Status != run.StatusPending {
				t.Fatalf("%s: new run has status %q, want pending", o.what, o.out.Status)
			}
		}
	})
}

// describe prints submit params short enough for a failure message.
func describe(p db.SubmitParams) string {
	return "RunID " + strconv.Quote(short(p.RunID)) + ", SessionID " + strconv.Quote(short(p.SessionID)) +
		", Name " + strconv.Quote(short(p.Name)) + ", Input " + strconv.Quote(short(p.Input)) +
		", Metadata " + strconv.Quote(short(p.Metadata["k"].(string)))
}

func short(s string) string {
	if len(s) > 80 {
		return s[:80] + "…(" + strconv.Itoa(len(s)) + " bytes)"
	}
	return s
}
