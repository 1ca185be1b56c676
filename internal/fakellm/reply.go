package fakellm

import (
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Reply scripts one response.
type Reply struct {
	Content string // the answer text; streamed in chunks
	// ChunkSize is the number of runes per streamed chunk; 0 streams one word
	// (with its following whitespace) per chunk. It also sizes the pieces
	// tool-call arguments are split into (default defaultArgChunk runes).
	ChunkSize int
	Latency   time.Duration // wait before the response headers / first chunk
	// Drip is the wait before each content chunk or tool-call fragment. A
	// non-streaming reply waits Drip times the number of chunks it would have
	// streamed, so both modes take about as long to "generate".
	Drip time.Duration
	// Status, when non-zero and not 200, makes the server answer with this
	// HTTP status and an OpenAI error body. Values outside 200..599 become 500.
	Status       int
	ErrorMessage string // the error body's message (default: http.StatusText)
	RetryAfter   string // sets the Retry-After header on error replies
	// CutAfter > 0 makes the server abruptly close the connection after this
	// many content chunks / tool-call fragments (no finish chunk, no [DONE]).
	// If the reply has fewer, the cut happens right after the last one, so a
	// positive CutAfter always yields a broken stream. A non-streaming reply
	// is cut halfway through its JSON body.
	CutAfter int
	// Hang sends 200 and the SSE headers (flushed), then nothing until the
	// client goes away. A non-streaming reply sends nothing at all.
	Hang      bool
	ToolCalls []ToolCall // streamed as tool_call fragments, finish_reason "tool_calls"
}

// ToolCall is one function call the model asks for. An empty ID is replaced
// by a deterministic "call_<seq>_<index>".
type ToolCall struct {
	ID, Name, Arguments string
}

// defaultArgChunk is how many runes of tool-call arguments go into one
// fragment when Reply.ChunkSize is 0: small enough that even short argument
// objects arrive in several pieces, as they do from real providers.
const defaultArgChunk = 8

// DefaultReply is the default script: a deterministic answer derived from the
// last user message.
//
//   - containing "capital of France": "The capital of France is Paris."
//   - containing "essay": a 400-word text with a 20ms drip per word, so it
//     streams for about eight seconds (long enough to cancel mid-stream);
//   - otherwise a short sentence echoing the start of the prompt.
//
// A "fake-plan:" line in the message scripts tool calls and the answer
// after them (see Plan). Directives in the message ("[fake:status=429]",
// "[fake:drip=50ms]", ..., see ParseDirectives) override the result.
// Matching is case-insensitive.
func DefaultReply(req Request) Reply {
	prompt := req.LastUserMessage()
	clean := strings.TrimSpace(StripPlan(StripDirectives(prompt)))
	lower := strings.ToLower(clean)
	var r Reply
	plan, planned := ParsePlan(prompt)
	switch {
	case planned:
		r = plan.Reply(req)
	case strings.Contains(lower, "capital of france"):
		r.Content = "The capital of France is Paris."
	case strings.Contains(lower, "essay"):
		r.Content = LoremWords(400)
		r.Drip = 20 * time.Millisecond
	case clean == "":
		r.Content = "Hello from fakellm."
	default:
		r.Content = "Fake answer to: " + firstWords(clean, 8)
	}
	return ParseDirectives(prompt).Apply(r)
}

var lorem = strings.Fields(`lorem ipsum dolor sit amet consectetur adipiscing
elit sed do eiusmod tempor incididunt ut labore et dolore magna aliqua ut enim
ad minim veniam quis nostrud exercitation ullamco laboris nisi ut aliquip ex ea
commodo consequat duis aute irure dolor in reprehenderit in voluptate velit esse
cillum dolore eu fugiat nulla pariatur`)

// LoremWords returns a deterministic text of exactly n words, in sentences of
// twelve words each.
func LoremWords(n int) string {
	const sentence = 12
	var b strings.Builder
	b.Grow(n * 7)
	for i := range n {
		w := lorem[i%len(lorem)]
		if i > 0 {
			b.WriteByte(' ')
		}
		if i%sentence == 0 {
			b.WriteString(strings.ToUpper(w[:1]))
			b.WriteString(w[1:])
		} else {
			b.WriteString(w)
		}
		if i%sentence == sentence-1 || i == n-1 {
			b.WriteByte('.')
		}
	}
	return b.String()
}

// firstWords returns the first n whitespace-separated words of s, with an
// ellipsis if s had more.
func firstWords(s string, n int) string {
	f := strings.Fields(s)
	if len(f) <= n {
		return strings.Join(f, " ")
	}
	return strings.Join(f[:n], " ") + " ..."
}

// splitContent cuts s into stream chunks: size runes each, or for size <= 0
// one word plus its trailing whitespace (leading whitespace joins the first
// word). Concatenating the chunks always yields s.
func splitContent(s string, size int) []string {
	if s == "" {
		return nil
	}
	if size > 0 {
		return splitRunes(s, size)
	}
	var out []string
	start := 0
	inSpace, seenWord := false, false
	for i, r := range s {
		sp := unicode.IsSpace(r)
		if !sp && inSpace && seenWord {
			out = append(out, s[start:i])
			start = i
		}
		if !sp {
			seenWord = true
		}
		inSpace = sp
	}
	return append(out, s[start:])
}

func splitRunes(s string, size int) []string {
	out := make([]string, 0, utf8.RuneCountInString(s)/size+1)
	for s != "" {
		i, n := 0, 0
		for i < len(s) && n < size {
			_, w := utf8.DecodeRuneInString(s[i:])
			i += w
			n++
		}
		out = append(out, s[:i])
		s = s[i:]
	}
	return out
}

// completionTokens is the usage a reply reports for its output.
func completionTokens(r Reply) int {
	n := CountTokens(r.Content)
	for _, tc := range r.ToolCalls {
		n += CountTokens(tc.Name) + CountTokens(tc.Arguments)
	}
	return n
}
