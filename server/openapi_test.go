package server_test

import (
	"bytes"
	"net/http"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/kern-go/kern/server"
)

// TestResponsesMatchOpenAPI validates real answers of every route against
// the schemas of openapi.json (served by the API itself): a field the code
// writes that the document lacks, or the other way round, fails here, as
// the schemas forbid additional properties and require every field.
func TestResponsesMatchOpenAPI(t *testing.T) {
	t.Parallel()
	e := newEnv(t, server.Config{})
	doc := e.do(t, "", "GET", "/v1/openapi.json", nil).expect(t, http.StatusOK)
	parsed, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc.body))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource("openapi.json", parsed); err != nil {
		t.Fatal(err)
	}
	check := func(r response, schema string) {
		t.Helper()
		sch, err := c.Compile("openapi.json#/components/schemas/" + schema)
		if err != nil {
			t.Fatalf("compile %s: %v", schema, err)
		}
		v, err := jsonschema.UnmarshalJSON(bytes.NewReader(r.body))
		if err != nil {
			t.Fatalf("%s: %v: %s", schema, err, r.body)
		}
		if err := sch.Validate(v); err != nil {
			t.Errorf("answer is not a %s: %v\n%s", schema, err, r.body)
		}
	}

	check(e.do(t, "", "GET", "/healthz", nil).expect(t, http.StatusOK), "Health")
	sub := e.do(t, e.acme, "POST", "/v1/runs", map[string]any{"agent": "assistant", "prompt": "hello",
		"metadata": map[string]any{"k": []any{1, "two"}}}).expect(t, http.StatusAccepted)
	check(sub, "Run")
	id := sub.object(t)["run_id"].(string)
	check(e.do(t, e.acme, "GET", "/v1/runs/"+id+"/wait?timeout=10s", nil).expect(t, http.StatusOK), "Run")
	check(e.do(t, e.acme, "GET", "/v1/runs/"+id, nil).expect(t, http.StatusOK), "Run")
	check(e.do(t, e.acme, "GET", "/v1/runs?limit=5", nil).expect(t, http.StatusOK), "RunList")
	check(e.do(t, e.acme, "GET", "/v1/runs/"+id+"/messages", nil).expect(t, http.StatusOK), "MessageList")
	check(e.do(t, e.acme, "POST", "/v1/runs/"+id+"/cancel", nil).expect(t, http.StatusOK), "CancelResult")
	check(e.do(t, e.acme, "POST", "/v1/runs/not-yet/cancel", nil).expect(t, http.StatusOK), "CancelResult")

	// A run with tool calls, waiting, then answered.
	wid := e.submit(t, e.acme, approvalPrompt)
	e.wait(t, e.acme, wid)
	waiting := e.do(t, e.acme, "GET", "/v1/runs/"+wid, nil).expect(t, http.StatusOK)
	check(waiting, "Run")
	var w struct {
		Waiting []struct{ ID string } `json:"waiting"`
	}
	waiting.json(t, &w)
	check(e.do(t, e.acme, "POST", "/v1/runs/"+wid+"/tool-calls/"+w.Waiting[0].ID+"/approve", nil).expect(t, http.StatusOK), "Run")
	e.wait(t, e.acme, wid)
	check(e.do(t, e.acme, "GET", "/v1/runs/"+wid+"/messages", nil).expect(t, http.StatusOK), "MessageList")

	check(e.do(t, e.acme, "PUT", "/v1/schedules/nightly", map[string]any{"agent": "assistant", "prompt": "p", "cron": "@daily",
		"timezone": "Europe/Paris", "metadata": map[string]any{"a": 1}}).expect(t, http.StatusOK), "Schedule")
	check(e.do(t, e.acme, "GET", "/v1/schedules/nightly", nil).expect(t, http.StatusOK), "Schedule")
	check(e.do(t, e.acme, "GET", "/v1/schedules", nil).expect(t, http.StatusOK), "ScheduleList")

	check(e.do(t, e.acme, "POST", "/v1/webhook-secret", nil).expect(t, http.StatusOK), "WebhookSecret")

	for _, r := range []response{
		e.do(t, "", "GET", "/v1/runs", nil),
		e.do(t, e.acme, "GET", "/v1/runs/nope", nil),
		e.do(t, e.acme, "POST", "/v1/runs", `{"agent":""}`),
		e.do(t, e.acme, "POST", "/v1/runs/"+wid+"/tool-calls/x/approve", nil),
	} {
		check(r, "Problem")
	}
}
