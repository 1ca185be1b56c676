package fakellm

import (
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestParseDirectives(t *testing.T) {
	t.Parallel()
	base := Reply{Content: "base", Drip: time.Second, ChunkSize: 2}
	for _, tc := range []struct {
		prompt string
		want   Reply
	}{
		{"no directives", base},
		{"[fake:status=429]", Reply{Content: "base", Drip: time.Second, ChunkSize: 2, Status: 429}},
		{"x [fake:drip=50ms] y", Reply{Content: "base", Drip: 50 * time.Millisecond, ChunkSize: 2}},
		{"[fake:drip=0]", Reply{Content: "base", ChunkSize: 2}},
		{"[fake:drip=7]", Reply{Content: "base", Drip: 7 * time.Millisecond, ChunkSize: 2}},
		{"[fake:latency=1s]", Reply{Content: "base", Drip: time.Second, ChunkSize: 2, Latency: time.Second}},
		{"[fake:cut=3]", Reply{Content: "base", Drip: time.Second, ChunkSize: 2, CutAfter: 3}},
		{"[fake:hang]", Reply{Content: "base", Drip: time.Second, ChunkSize: 2, Hang: true}},
		{"[fake:words=3]", Reply{Content: "Lorem ipsum dolor.", Drip: time.Second, ChunkSize: 2}},
		{"[fake:words=0]", Reply{Drip: time.Second, ChunkSize: 2}},
		{"[fake:chunk=0]", Reply{Content: "base", Drip: time.Second}},
		{"[fake:status=503, retry_after=7; HANG]", Reply{Content: "base", Drip: time.Second, ChunkSize: 2, Status: 503, RetryAfter: "7", Hang: true}},
		{"[fake:status=429][fake:cut=2]", Reply{Content: "base", Drip: time.Second, ChunkSize: 2, Status: 429, CutAfter: 2}},
		{"[fake:status=4299 [fake:cut=2]", Reply{Content: "base", Drip: time.Second, ChunkSize: 2, CutAfter: 2}},
		// Malformed or out of range: ignored.
		{"[fake:status=abc][fake:status=99][fake:status=600][fake:status=]", base},
		{"[fake:drip=-5ms][fake:drip=1h][fake:drip=fast][fake:latency=99999999999]", base},
		{"[fake:cut=0][fake:cut=-1][fake:words=20001][fake:words=x][fake:chunk=-2]", base},
		{"[fake:hang=maybe][fake:retry_after=a\nb][fake:unknown=1][fake:][fake:status=429", base},
		{"[FAKE:status=429] [fake status=429]", base},
	} {
		if got := ParseDirectives(tc.prompt).Apply(base); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q:\n got %+v\nwant %+v", tc.prompt, got, tc.want)
		}
	}
	if !ParseDirectives("plain").Empty() || ParseDirectives("[fake:hang]").Empty() {
		t.Error("Empty is wrong")
	}
}

func TestDefaultReply(t *testing.T) {
	t.Parallel()
	req := func(prompt string) Request {
		return Request{Messages: []Message{
			{Role: "system", Content: "be brief"},
			{Role: "user", Content: prompt},
			{Role: "assistant", Content: "..."},
			{Role: "tool", Content: "ignored"},
		}}
	}
	if r := DefaultReply(req("What is the Capital of France?")); r.Content != "The capital of France is Paris." || r.Drip != 0 {
		t.Errorf("France: %+v", r)
	}
	essay := DefaultReply(req("Write an essay about durability"))
	if n := len(strings.Fields(essay.Content)); n != 400 || essay.Drip != 20*time.Millisecond {
		t.Errorf("essay: %d words, drip %v", n, essay.Drip)
	}
	if got := len(splitContent(essay.Content, 0)); got != 400 {
		t.Errorf("essay streams in %d chunks, want 400", got)
	}
	fast := DefaultReply(req("essay please [fake:drip=0,words=5]"))
	if fast.Content != "Lorem ipsum dolor sit amet." || fast.Drip != 0 {
		t.Errorf("essay with directives: %+v", fast)
	}
	echo := DefaultReply(req("tell me [fake:latency=5ms] one two three four five six seven eight nine"))
	if echo.Content != "Fake answer to: tell me one two three four five six ..." || echo.Latency != 5*time.Millisecond {
		t.Errorf("echo: %+v", echo)
	}
	if r := DefaultReply(Request{}); r.Content != "Hello from fakellm." {
		t.Errorf("no user message: %+v", r)
	}
	if a, b := DefaultReply(req("same prompt")), DefaultReply(req("same prompt")); !reflect.DeepEqual(a, b) {
		t.Error("DefaultReply is not deterministic")
	}
}

func TestSplitContent(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		size int
		want []string
	}{
		{"", 0, nil},
		{"one", 0, []string{"one"}},
		{" lead  two\tthree \n", 0, []string{" lead  ", "two\t", "three \n"}},
		{"   ", 0, []string{"   "}},
		{"héllo", 2, []string{"hé", "ll", "o"}},
	} {
		got := splitContent(tc.in, tc.size)
		if strings.Join(got, "|") != strings.Join(tc.want, "|") || len(got) != len(tc.want) {
			t.Errorf("splitContent(%q, %d) = %q, want %q", tc.in, tc.size, got, tc.want)
		}
	}
}

func FuzzParseDirectives(f *testing.F) {
	for _, seed := range []string{
		"", "[fake:status=429]", "[fake:drip=50ms,words=3;cut=1]", "[fake:hang", "[fake:[fake:]]",
		"[fake:latency=1e99h]", "[fake:retry_after=\x00]", "[fake:words=-0]", "\xff[fake:chunk=\xfe]",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, prompt string) {
		d := ParseDirectives(prompt)
		r := d.Apply(Reply{})
		if r.Latency < 0 || r.Latency > maxDirectiveDuration || r.Drip < 0 || r.Drip > maxDirectiveDuration ||
			r.CutAfter < 0 || r.ChunkSize < 0 || (r.Status != 0 && (r.Status < 200 || r.Status > 599)) {
			t.Fatalf("out-of-range reply %+v from %q", r, prompt)
		}
		if !printableASCII(r.RetryAfter) {
			t.Fatalf("unsafe Retry-After %q", r.RetryAfter)
		}
		def := DefaultReply(Request{Messages: []Message{{Role: "user", Content: prompt}}})
		if utf8.ValidString(prompt) && !utf8.ValidString(def.Content) {
			t.Fatalf("invalid UTF-8 answer %q", def.Content)
		}
		// Long answers ([fake:words=20000]) are legal but would starve the
		// fuzzer; the reassembly property does not depend on length.
		if len(def.Content) > 4096 {
			return
		}
		if chunks := splitContent(def.Content, def.ChunkSize); strings.Join(chunks, "") != def.Content {
			t.Fatalf("chunks do not reassemble the content")
		}
	})
}
