package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	"golang.org/x/text/message"

	"github.com/kern-go/kern/run"
)

// Structured output (Agent.OutputSchema): the run's final answer must be a
// JSON value valid against the schema. The rule, which outputCheck applies:
//
//  1. The schema is compiled once per agent, when the agent is first
//     validated (Run, NewWorker); one that does not compile is refused with
//     run.ErrInvalidArgument and nothing is written.
//  2. Every final answer (a model turn that asks for no tool) is validated
//     (validateAnswer): it must parse as JSON, with nothing around it but
//     white space, and be valid against the schema.
//  3. The first invalid answer is sent back once: it goes into the
//     conversation as the assistant's message, followed by a user message
//     saying what was wrong (answerRetryMessage), and the model answers
//     again. Tools stay available for that turn.
//  4. If the second answer is invalid too, the run ends as error, its Error
//     saying why: "structured output invalid after 2 answers: …".

// maxSchemaAnswers is how many final answers a run with an OutputSchema
// gets: the first, and one more after being told what was wrong with it.
// More rarely helps (a model that misread the schema twice keeps misreading
// it) and each costs a whole model turn.
const maxSchemaAnswers = 2

// Bounds on what an invalid answer's error says. It is sent to the model
// and stored as the run's Error, so it names the first few violations
// rather than every one of an answer that is wrong throughout.
const (
	maxViolations       = 5
	maxAnswerErrorBytes = 1000
)

// outputSchemaURL names the schema inside the compiler. It is hierarchical,
// so that a relative "$ref" resolves to a URL of its own, which noLoader
// refuses; .invalid (RFC 2606) can never name a real host.
const outputSchemaURL = "https://kern.invalid/output-schema.json"

// schemaPrinter renders the validator's messages (which it does not render
// without one).
var schemaPrinter = message.NewPrinter(language.English)

// compileOutputSchema compiles an agent's OutputSchema; nil for none. The
// schema is JSON Schema 2020-12 unless its "$schema" names another draft;
// "format" is asserted (an answer's "date-time" must be one). It must be
// self-contained: a "$ref" to another document is refused rather than
// fetched, so compiling never reads a file or the network. The error wraps
// run.ErrInvalidArgument and says what is wrong, readably.
func compileOutputSchema(agentName string, schema map[string]any) (*jsonschema.Schema, error) {
	if schema == nil {
		return nil, nil
	}
	invalid := func(why string) error {
		return fmt.Errorf("kern: %w: agent %q: Agent.OutputSchema %s", run.ErrInvalidArgument, agentName, why)
	}
	// Through JSON, so the compiler sees the schema as its JSON text says
	// it, whatever Go types it was written with ([]string, int, structs).
	raw, err := json.Marshal(schema)
	if err != nil {
		return nil, invalid("is not JSON: " + err.Error())
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, invalid("is not JSON: " + err.Error())
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	c.UseLoader(noLoader{})
	if err := c.AddResource(outputSchemaURL, doc); err != nil {
		return nil, invalid("cannot be added: " + err.Error())
	}
	s, err := c.Compile(outputSchemaURL)
	if err != nil {
		return nil, invalid("does not compile: " + describeCompileError(err))
	}
	return s, nil
}

// noLoader refuses every document a schema refers to by URL; the JSON
// Schema meta-schemas, which the compiler carries, still resolve.
type noLoader struct{}

func (noLoader) Load(string) (any, error) {
	return nil, errors.New("references to other documents are not supported: the schema must be self-contained")
}

// describeCompileError says briefly why a schema did not compile.
func describeCompileError(err error) string {
	var meta *jsonschema.SchemaValidationError
	var load *jsonschema.LoadURLError
	var ve *jsonschema.ValidationError
	switch {
	case errors.As(err, &meta) && errors.As(meta.Err, &ve):
		// Not a valid schema: the violations of the meta-schema, located
		// in the schema.
		return describeViolations(ve)
	case errors.As(err, &load):
		return fmt.Sprintf("refers to %q: %v", load.URL, load.Err)
	}
	return err.Error()
}

// validateAnswer checks a final answer against the compiled schema (nil:
// anything goes). The error says, in a line a person or the model can act
// on, what is wrong: not JSON, and where, or which values violate the schema.
func validateAnswer(s *jsonschema.Schema, content string) error {
	if s == nil {
		return nil
	}
	trimmed := strings.TrimSpace(content)
	switch {
	case trimmed == "":
		return errors.New("the answer is empty, not a JSON value")
	case strings.HasPrefix(trimmed, "```"):
		// The usual way a model gets it wrong; the stored content must be
		// the JSON itself, so the fence is not stripped here.
		return errors.New("the answer is wrapped in a Markdown code fence; it must be the JSON alone")
	}
	dec := json.NewDecoder(strings.NewReader(content))
	dec.UseNumber() // numbers as written: 1e400 and 2^53+1 are validated, not rounded
	var v any
	if err := dec.Decode(&v); err != nil {
		return notJSON(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("the answer is not JSON alone: more text follows the JSON value")
	}
	err := s.Validate(v)
	var ve *jsonschema.ValidationError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ve):
		return errors.New(describeViolations(ve))
	}
	return err
}

// notJSON describes a decoding error of an answer.
func notJSON(err error) error {
	var syntax *json.SyntaxError
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("the answer is not JSON: it ends before the JSON value does")
	case errors.As(err, &syntax):
		return fmt.Errorf("the answer is not JSON: %s (at byte %d)", syntax, syntax.Offset)
	}
	return fmt.Errorf("the answer is not JSON: %w", err)
}

// describeViolations lists the innermost failures of a validation, which
// say what is wrong where ("at /age: got string, want integer"), rather
// than the keywords that contain them ("allOf failed"): sorted (the
// validator's order follows Go's map order, and the same answer should get
// the same words), at most maxViolations of them, at most
// maxAnswerErrorBytes in all.
func describeViolations(e *jsonschema.ValidationError) string {
	var parts []string
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			parts = append(parts, "at "+instancePath(e.InstanceLocation)+": "+e.ErrorKind.LocalizedString(schemaPrinter))
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(e)
	slices.Sort(parts)
	parts = slices.Compact(parts)
	s := strings.Join(parts[:min(len(parts), maxViolations)], "; ")
	if more := len(parts) - maxViolations; more > 0 {
		s += fmt.Sprintf("; and %d more", more)
	}
	return truncateSchemaError(s, maxAnswerErrorBytes)
}

// pointerEscaper escapes a JSON Pointer's reference token (RFC 6901).
var pointerEscaper = strings.NewReplacer("~", "~0", "/", "~1")

// instancePath is a location in the answer as a JSON Pointer, "the top
// level" for the whole answer.
func instancePath(tokens []string) string {
	if len(tokens) == 0 {
		return "the top level"
	}
	var b strings.Builder
	for _, t := range tokens {
		b.WriteByte('/')
		b.WriteString(pointerEscaper.Replace(t))
	}
	return b.String()
}

// truncateSchemaError cuts s to at most max bytes, on a character boundary,
// marking the cut.
func truncateSchemaError(s string, max int) string {
	const more = " …"
	if len(s) <= max {
		return s
	}
	cut := max - len(more)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + more
}

// answerRetryMessage is the user message that sends an invalid answer back,
// once (see outputCheck).
func answerRetryMessage(invalid error) Message {
	why := strings.TrimRight(invalid.Error(), ". ")
	return Message{
		Role:    "user",
		Content: "Your answer did not match the required JSON schema: " + why + ". Answer again with only the JSON.",
	}
}

// outputCheck applies the structured-output rule to one execution of a
// run: create it when the execution starts, and pass it every final
// answer, in order.
type outputCheck struct {
	schema  *jsonschema.Schema // nil: every answer stands
	answers int                // judged so far
}

// judge decides on a final answer. Both results nil: the answer stands,
// finish the run completed with it. retry non-nil: append these messages
// (the answer, then what was wrong with it) to the conversation and call
// the model again. err non-nil: end the run as error, with err.Error() as
// the run's Error.
func (c *outputCheck) judge(answer string) (retry []Message, err error) {
	c.answers++
	invalid := validateAnswer(c.schema, answer)
	switch {
	case invalid == nil:
		return nil, nil
	case c.answers >= maxSchemaAnswers:
		return nil, fmt.Errorf("structured output invalid after %d answers: %w", c.answers, invalid)
	}
	return []Message{{Role: "assistant", Content: answer}, answerRetryMessage(invalid)}, nil
}

// schemaCache holds an agent's compiled OutputSchema, so that it is
// compiled once, not per run. The zero value is ready to use and safe for
// concurrent use. It recompiles when the agent's OutputSchema is another map
// than the one it compiled (changing the map in place after first use is
// not noticed, as with the rest of an Agent), and caches no failure, so a
// fixed schema is picked up by the next call.
type schemaCache struct {
	mu     sync.Mutex
	source map[string]any // what schema was compiled from
	schema *jsonschema.Schema
}

// get returns the agent's compiled schema; see compileOutputSchema.
func (c *schemaCache) get(agentName string, schema map[string]any) (*jsonschema.Schema, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.schema != nil && sameMap(c.source, schema) {
		return c.schema, nil
	}
	s, err := compileOutputSchema(agentName, schema)
	if err != nil {
		return nil, err
	}
	c.source, c.schema = schema, s
	return s, nil
}

// sameMap reports whether a and b are the same map (not equal maps).
func sameMap(a, b map[string]any) bool {
	return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}
