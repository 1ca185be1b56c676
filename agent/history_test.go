package agent

import (
	"slices"
	"testing"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/run"
)

func TestHistoryMessages(t *testing.T) {
	got := historyMessages([]db.HistoryEntry{
		{Input: "What is the capital of France?", Content: "Paris.", Status: run.StatusCompleted},
		{Input: "And of Spain?", Content: "Madr", Status: run.StatusCancelled},
		{Input: "failed", Content: "half", Status: run.StatusError},
		{Input: "nothing came", Content: "", Status: run.StatusCompleted},
		{Input: "And of Italy?", Content: "Rome.", Status: run.StatusCompleted},
	})
	want := []Message{
		{Role: "user", Content: "What is the capital of France?"},
		{Role: "assistant", Content: "Paris."},
		{Role: "user", Content: "And of Spain?"},
		{Role: "assistant", Content: "Madr\n[answer cut short: run cancelled]"},
		{Role: "user", Content: "And of Italy?"},
		{Role: "assistant", Content: "Rome."},
	}
	if !slices.EqualFunc(got, want, messagesEqual) {
		t.Fatalf("historyMessages:\n got  %+v\n want %+v", got, want)
	}
	if got := historyMessages(nil); got != nil {
		t.Fatalf("no history: %+v", got)
	}
}

func TestHistoryStartMessages(t *testing.T) {
	history := historyMessages([]db.HistoryEntry{{Input: "q1", Content: "a1", Status: run.StatusCompleted}})
	got := startMessages("Be brief.", history, "q2")
	want := []Message{
		{Role: "system", Content: "Be brief."},
		{Role: "user", Content: "q1"},
		{Role: "assistant", Content: "a1"},
		{Role: "user", Content: "q2"},
	}
	if !slices.EqualFunc(got, want, messagesEqual) {
		t.Fatalf("startMessages:\n got  %+v\n want %+v", got, want)
	}
	got = startMessages("", nil, "q")
	if !slices.EqualFunc(got, []Message{{Role: "user", Content: "q"}}, messagesEqual) {
		t.Fatalf("no instructions, no history: %+v", got)
	}
}

func messagesEqual(a, b Message) bool {
	return a.Role == b.Role && a.Content == b.Content && a.ToolCallID == b.ToolCallID && len(a.ToolCalls) == 0 && len(b.ToolCalls) == 0
}
