package db

import (
	"encoding/json"
	"time"

	"github.com/kern-go/kern/run"
)

// MarshalRun is a run in JSON as kern shows it outside Go (webhook bodies,
// the HTTP API): snake_case, RFC 3339 times, durations in milliseconds.
//
//	{"run_id","session_id","parent_run_id","agent","name","status","input","content","error","metadata",
//	 "metrics":{"input_tokens","output_tokens","total_tokens","time_to_first_token_ms","duration_ms",
//	 "model_turns","tool_calls"},"attempt","waiting":[{"id","name","arguments"}],
//	 "created_at","started_at","finished_at"}
//
// started_at and finished_at are null until set; waiting is [] unless the
// run waits; metadata is {} when there is none; parent_run_id, like
// session_id, is "" when there is none (a top-level run).
func MarshalRun(out *run.Output) ([]byte, error) {
	return json.Marshal(toRunJSON(out))
}

type runJSON struct {
	RunID      string         `json:"run_id"`
	SessionID  string         `json:"session_id"`
	ParentRun  string         `json:"parent_run_id"`
	Agent      string         `json:"agent"`
	Name       string         `json:"name"`
	Status     run.Status     `json:"status"`
	Input      string         `json:"input"`
	Content    string         `json:"content"`
	Error      string         `json:"error"`
	Metadata   map[string]any `json:"metadata"`
	Metrics    metricsJSON    `json:"metrics"`
	Attempt    int            `json:"attempt"`
	Waiting    []toolCallJSON `json:"waiting"`
	CreatedAt  time.Time      `json:"created_at"`
	StartedAt  *time.Time     `json:"started_at"`
	FinishedAt *time.Time     `json:"finished_at"`
}

type metricsJSON struct {
	InputTokens      int   `json:"input_tokens"`
	OutputTokens     int   `json:"output_tokens"`
	TotalTokens      int   `json:"total_tokens"`
	TimeToFirstToken int64 `json:"time_to_first_token_ms"`
	Duration         int64 `json:"duration_ms"`
	ModelTurns       int   `json:"model_turns"`
	ToolCalls        int   `json:"tool_calls"`
}

type toolCallJSON struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

func toRunJSON(o *run.Output) runJSON {
	j := runJSON{
		RunID: o.RunID, SessionID: o.SessionID, ParentRun: o.ParentRunID, Agent: o.AgentName, Name: o.Name, Status: o.Status,
		Input: o.Input, Content: o.Content, Error: o.Error, Metadata: o.Metadata,
		Metrics: metricsJSON{
			InputTokens: o.Metrics.InputTokens, OutputTokens: o.Metrics.OutputTokens, TotalTokens: o.Metrics.TotalTokens,
			TimeToFirstToken: o.Metrics.TimeToFirstToken.Milliseconds(), Duration: o.Metrics.Duration.Milliseconds(),
			ModelTurns: o.Metrics.ModelTurns, ToolCalls: o.Metrics.ToolCalls,
		},
		Attempt:   o.Attempt,
		Waiting:   make([]toolCallJSON, len(o.Waiting)),
		CreatedAt: o.CreatedAt.UTC(), StartedAt: utc(o.StartedAt), FinishedAt: utc(o.FinishedAt),
	}
	if j.Metadata == nil {
		j.Metadata = map[string]any{}
	}
	for i, c := range o.Waiting {
		j.Waiting[i] = toolCallJSON{ID: c.ID, Name: c.Name, Arguments: c.Arguments}
	}
	return j
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}
