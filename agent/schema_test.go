package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kern-go/kern/run"
)

// personSchema is written with Go types that are not JSON's ([]string, int):
// compileOutputSchema must read it as its JSON says.
var personSchema = map[string]any{
	"type": "object",
	"properties": map[string]any{
		"name": map[string]any{"type": "string"},
		"age":  map[string]any{"type": "integer", "minimum": 0},
		"born": map[string]any{"type": "string", "format": "date"},
	},
	"required":             []string{"name", "age"},
	"additionalProperties": false,
}

func TestSchemaValidAnswers(t *testing.T) {
	s, err := compileOutputSchema("a", personSchema)
	if err != nil {
		t.Fatal(err)
	}
	for _, answer := range []string{
		`{"name": "Ada", "age": 36}`,
		"\n  {\"name\": \"Ada\", \"age\": 36, \"born\": \"1815-12-10\"}\n",
		`{"name": "", "age": 0}`,
		`{"name": "big", "age": 100000000000000000000000000001}`,
	} {
		if err := validateAnswer(s, answer); err != nil {
			t.Errorf("validateAnswer(%q) = %v, want nil", answer, err)
		}
	}
	if err := validateAnswer(nil, "not JSON at all"); err != nil {
		t.Errorf("without a schema every answer stands: %v", err)
	}
}

func TestSchemaInvalidAnswers(t *testing.T) {
	s, err := compileOutputSchema("a", personSchema)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, answer string
		want         []string // in the error text
	}{
		{"wrong type", `{"name": "Ada", "age": "36"}`, []string{"at /age", "got string, want integer"}},
		{"missing required", `{"name": "Ada"}`, []string{"at the top level", "missing property 'age'"}},
		{"several", `{"name": 7, "age": -1, "x": true}`, []string{"at /name: got number, want string", "at /age: minimum", "'x' not allowed"}},
		{"not an object", `["Ada", 36]`, []string{"at the top level: got array, want object"}},
		{"format", `{"name": "Ada", "age": 36, "born": "10 Dec 1815"}`, []string{"at /born", "date"}},
		{"not JSON", `Ada is 36.`, []string{"not JSON", "invalid character 'A'", "at byte 1"}},
		{"cut short", `{"name": "Ada", "ag`, []string{"not JSON", "ends before"}},
		{"text after", `{"name": "Ada", "age": 36} Hope this helps!`, []string{"more text follows"}},
		{"two values", `{"name": "Ada", "age": 36} {}`, []string{"more text follows"}},
		{"code fence", "```json\n{\"name\": \"Ada\", \"age\": 36}\n```", []string{"code fence"}},
		{"empty", "  \n", []string{"empty"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel() // one compiled schema, validating concurrently (-race)
			err := validateAnswer(s, c.answer)
			if err == nil {
				t.Fatalf("validateAnswer(%q) = nil, want an error", c.answer)
			}
			msg := err.Error()
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not say %q", msg, w)
				}
			}
			// Sent to the model as is: one short line, no library jargon.
			if strings.Contains(msg, "\n") || len(msg) > maxAnswerErrorBytes || strings.Contains(msg, "jsonschema") || strings.Contains(msg, "kern.invalid") {
				t.Errorf("error is not a short readable line: %q", msg)
			}
		})
	}
}

// An answer wrong everywhere names a few violations, within the bound.
func TestSchemaManyViolationsAreBounded(t *testing.T) {
	props := map[string]any{}
	var answer strings.Builder
	answer.WriteString("{")
	for i := range 50 {
		name := strings.Repeat("field", 10) + string(rune('a'+i%26)) + string(rune('a'+i/26))
		props[name] = map[string]any{"type": "integer"}
		if i > 0 {
			answer.WriteString(",")
		}
		answer.WriteString(`"` + name + `": "x"`)
	}
	answer.WriteString("}")
	s, err := compileOutputSchema("a", map[string]any{"type": "object", "properties": props})
	if err != nil {
		t.Fatal(err)
	}
	err = validateAnswer(s, answer.String())
	if err == nil {
		t.Fatal("want an error")
	}
	msg := err.Error()
	if n := strings.Count(msg, "got string, want integer"); n == 0 || n > maxViolations || !strings.Contains(msg, "more") {
		t.Errorf("%d violations named in %q; want 1..%d and how many more", n, msg, maxViolations)
	}
	if len(msg) > maxAnswerErrorBytes {
		t.Errorf("error of %d bytes, more than %d", len(msg), maxAnswerErrorBytes)
	}
}

func TestSchemaThatDoesNotCompile(t *testing.T) {
	dir := t.TempDir()
	local := filepath.Join(dir, "local.json")
	if err := os.WriteFile(local, []byte(`{"type": "string"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		schema map[string]any
		want   string
	}{
		{"unknown type", map[string]any{"type": "objekt"}, "at /type"},
		{"bad regexp", map[string]any{"type": "string", "pattern": "(("}, "not valid regex"},
		{"required not a list", map[string]any{"required": "name"}, "at /required"},
		{"dangling ref", map[string]any{"$ref": "#/$defs/missing"}, "missing"},
		{"relative ref", map[string]any{"$ref": "other.json"}, "self-contained"},
		{"file ref", map[string]any{"$ref": "file://" + local}, "self-contained"},
		{"http ref", map[string]any{"$ref": "https://example.com/s.json"}, "self-contained"},
		{"not JSON", map[string]any{"type": func() {}}, "not JSON"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, err := compileOutputSchema("writer", c.schema)
			if err == nil {
				t.Fatalf("compiled %v", c.schema)
			}
			if s != nil {
				t.Error("a schema came back with the error")
			}
			msg := err.Error()
			if !errors.Is(err, run.ErrInvalidArgument) {
				t.Errorf("err = %v, want run.ErrInvalidArgument", err)
			}
			if !strings.HasPrefix(msg, "kern: invalid argument: agent \"writer\": Agent.OutputSchema ") || strings.Count(msg, "kern:") != 1 {
				t.Errorf("error %q does not say once which agent and what", msg)
			}
			if !strings.Contains(msg, c.want) {
				t.Errorf("error %q does not say %q", msg, c.want)
			}
		})
	}
	if s, err := compileOutputSchema("a", nil); s != nil || err != nil {
		t.Errorf("no schema: %v, %v; want nil, nil", s, err)
	}
}

func TestSchemaRetryOnce(t *testing.T) {
	s, err := compileOutputSchema("a", personSchema)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("valid first", func(t *testing.T) {
		c := outputCheck{schema: s}
		if retry, err := c.judge(`{"name": "Ada", "age": 36}`); retry != nil || err != nil {
			t.Fatalf("judge = %v, %v; want the answer to stand", retry, err)
		}
	})
	t.Run("valid second", func(t *testing.T) {
		c := outputCheck{schema: s}
		retry, err := c.judge(`{"name": "Ada"}`)
		if err != nil || len(retry) != 2 {
			t.Fatalf("judge = %v, %v; want a retry", retry, err)
		}
		if !messagesEqual(retry[0], Message{Role: "assistant", Content: `{"name": "Ada"}`}) {
			t.Errorf("first retry message %+v, want the invalid answer", retry[0])
		}
		want := "Your answer did not match the required JSON schema: at the top level: missing property 'age'. Answer again with only the JSON."
		if !messagesEqual(retry[1], Message{Role: "user", Content: want}) {
			t.Errorf("retry message %+v,\nwant %q", retry[1], want)
		}
		if retry, err := c.judge(`{"name": "Ada", "age": 36}`); retry != nil || err != nil {
			t.Fatalf("second answer: %v, %v; want it to stand", retry, err)
		}
	})
	t.Run("invalid twice", func(t *testing.T) {
		c := outputCheck{schema: s}
		if retry, err := c.judge("Ada, 36"); err != nil || retry == nil {
			t.Fatalf("first answer: %v, %v; want a retry", retry, err)
		}
		retry, err := c.judge(`{"name": "Ada", "age": "36"}`)
		if retry != nil || err == nil {
			t.Fatalf("second answer: %v, %v; want the run to fail", retry, err)
		}
		if want := "structured output invalid after 2 answers: at /age: got string, want integer"; err.Error() != want {
			t.Errorf("error %q, want %q", err, want)
		}
	})
	t.Run("no schema", func(t *testing.T) {
		var c outputCheck
		for range 3 {
			if retry, err := c.judge("anything"); retry != nil || err != nil {
				t.Fatalf("judge = %v, %v; want the answer to stand", retry, err)
			}
		}
	})
}

func TestSchemaCompiledOncePerAgent(t *testing.T) {
	var c schemaCache
	s1, err := c.get("a", personSchema)
	if err != nil {
		t.Fatal(err)
	}
	if s2, _ := c.get("a", personSchema); s2 != s1 {
		t.Error("the same schema was compiled again")
	}
	other := map[string]any{"type": "string"}
	s3, err := c.get("a", other)
	if err != nil || s3 == s1 || validateAnswer(s3, `"text"`) != nil {
		t.Errorf("a replaced schema was not recompiled: %v", err)
	}
	if _, err := c.get("a", map[string]any{"type": 7}); !errors.Is(err, run.ErrInvalidArgument) {
		t.Errorf("a bad replacement: %v, want run.ErrInvalidArgument", err)
	}
	if s4, err := c.get("a", other); err != nil || s4 != s3 {
		t.Errorf("after a failure, the last good schema: %v, %v", s4, err)
	}
}
