package fakellm

import (
	"strconv"
	"strings"
	"time"
)

// directivePrefix opens a directive; it is closed by the next ']'.
const directivePrefix = "[fake:"

// Bounds keep prompt-supplied values from turning a typo into a
// ten-hour sleep or a gigabyte answer.
const (
	maxDirectiveDuration = 10 * time.Minute
	maxDirectiveWords    = 20_000
	maxDirectiveCount    = 1_000_000
	maxRetryAfterLen     = 64
)

// Directives are the "[fake:...]" overrides found in a prompt. Only fields
// that were given (and valid) are applied; see ParseDirectives.
type Directives struct {
	Status     int
	RetryAfter string
	Latency    time.Duration
	Drip       time.Duration
	Cut        int
	Hang       bool
	Words      int
	Chunk      int
	set        directiveSet
}

type directiveSet uint16

const (
	setStatus directiveSet = 1 << iota
	setRetryAfter
	setLatency
	setDrip
	setCut
	setHang
	setWords
	setChunk
)

// ParseDirectives extracts the directives embedded in text:
//
//	[fake:status=429]       answer with this HTTP status (200..599)
//	[fake:retry_after=2]    Retry-After header for error replies
//	[fake:latency=1s]       wait before the first byte
//	[fake:drip=50ms]        wait between chunks (a bare number means ms)
//	[fake:cut=3]            cut the connection after 3 chunks
//	[fake:hang]             send headers, then nothing
//	[fake:words=N]          answer with N lorem-ipsum words
//	[fake:chunk=N]          N runes per chunk
//
// Several may be combined in one bracket, separated by ',' or ';'
// ("[fake:drip=10ms,words=200]"). Keys are case-insensitive. Anything
// malformed or out of range is ignored: prompts come from demos and fuzzers,
// and a typo must never crash or wedge the server.
func ParseDirectives(text string) Directives {
	var d Directives
	for {
		i := strings.Index(text, directivePrefix)
		if i < 0 {
			return d
		}
		text = text[i+len(directivePrefix):]
		j := strings.IndexByte(text, ']')
		if j < 0 {
			return d
		}
		body := text[:j]
		// An unclosed directive followed by another one: restart at the inner
		// one rather than swallowing it as a malformed value.
		if k := strings.Index(body, directivePrefix); k >= 0 {
			text = text[k:]
			continue
		}
		text = text[j+1:]
		for item := range strings.FieldsFuncSeq(body, func(r rune) bool { return r == ',' || r == ';' }) {
			d.parseItem(item)
		}
	}
}

func (d *Directives) parseItem(item string) {
	key, val, _ := strings.Cut(item, "=")
	key = strings.ToLower(strings.TrimSpace(key))
	val = strings.TrimSpace(val)
	switch key {
	case "status":
		if n, ok := boundedInt(val, 200, 599); ok {
			d.Status, d.set = n, d.set|setStatus
		}
	case "retry_after", "retry-after":
		if val != "" && len(val) <= maxRetryAfterLen && printableASCII(val) {
			d.RetryAfter, d.set = val, d.set|setRetryAfter
		}
	case "latency":
		if v, ok := parseDirectiveDuration(val); ok {
			d.Latency, d.set = v, d.set|setLatency
		}
	case "drip":
		if v, ok := parseDirectiveDuration(val); ok {
			d.Drip, d.set = v, d.set|setDrip
		}
	case "cut":
		if n, ok := boundedInt(val, 1, maxDirectiveCount); ok {
			d.Cut, d.set = n, d.set|setCut
		}
	case "hang":
		if val == "" || strings.EqualFold(val, "true") {
			d.Hang, d.set = true, d.set|setHang
		}
	case "words":
		if n, ok := boundedInt(val, 0, maxDirectiveWords); ok {
			d.Words, d.set = n, d.set|setWords
		}
	case "chunk":
		if n, ok := boundedInt(val, 0, maxDirectiveCount); ok {
			d.Chunk, d.set = n, d.set|setChunk
		}
	}
}

// Empty reports whether no directive was found.
func (d Directives) Empty() bool { return d.set == 0 }

// Apply returns r with the given directives overriding its fields.
func (d Directives) Apply(r Reply) Reply {
	if d.set&setStatus != 0 {
		r.Status = d.Status
	}
	if d.set&setRetryAfter != 0 {
		r.RetryAfter = d.RetryAfter
	}
	if d.set&setLatency != 0 {
		r.Latency = d.Latency
	}
	if d.set&setDrip != 0 {
		r.Drip = d.Drip
	}
	if d.set&setCut != 0 {
		r.CutAfter = d.Cut
	}
	if d.set&setHang != 0 {
		r.Hang = d.Hang
	}
	if d.set&setWords != 0 {
		r.Content = LoremWords(d.Words)
	}
	if d.set&setChunk != 0 {
		r.ChunkSize = d.Chunk
	}
	return r
}

// StripDirectives returns text without its well-formed "[fake:...]" parts,
// so that echoes of a prompt do not repeat the steering.
func StripDirectives(text string) string {
	var b strings.Builder
	for {
		i := strings.Index(text, directivePrefix)
		if i < 0 {
			break
		}
		j := strings.IndexByte(text[i:], ']')
		if j < 0 {
			break
		}
		b.WriteString(text[:i])
		text = text[i+j+1:]
	}
	if b.Len() == 0 {
		return text
	}
	b.WriteString(text)
	return b.String()
}

func boundedInt(s string, lo, hi int) (int, bool) {
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, false
	}
	return n, true
}

func parseDirectiveDuration(s string) (time.Duration, bool) {
	if n, err := strconv.Atoi(s); err == nil {
		if n < 0 || int64(n) > int64(maxDirectiveDuration/time.Millisecond) {
			return 0, false
		}
		return time.Duration(n) * time.Millisecond, true
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 || v > maxDirectiveDuration {
		return 0, false
	}
	return v, true
}

func printableASCII(s string) bool {
	for i := range len(s) {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
