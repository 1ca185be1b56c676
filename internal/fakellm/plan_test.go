package fakellm

import (
	"context"
	"testing"

	openai "github.com/sashabaranov/go-openai"
)

// A plan in the prompt plays its turns, then answers with the tool results,
// through the real client: the turn due is read from the conversation.
func TestPlanPlaysTurnsThenAnswers(t *testing.T) {
	t.Parallel()
	_, client := start(t, nil) // DefaultReply
	prompt := "Add things.\n" + `fake-plan: {"turns": [[{"name": "add", "arguments": {"a": 2, "b": 3}}, {"name": "add", "arguments": {"a": 1, "b": 1}}], [{"name": "mul", "raw_arguments": "{oops"}]], "answer": "got {{results}}; last {{last}}"}`
	msgs := []openai.ChatCompletionMessage{{Role: "user", Content: prompt}}
	ask := func() openai.ChatCompletionMessage {
		t.Helper()
		resp, err := client.CreateChatCompletion(context.Background(), openai.ChatCompletionRequest{Model: "m", Messages: msgs})
		if err != nil {
			t.Fatal(err)
		}
		return resp.Choices[0].Message
	}

	first := ask()
	if len(first.ToolCalls) != 2 || first.ToolCalls[0].Function.Name != "add" || first.ToolCalls[0].Function.Arguments != `{"a": 2, "b": 3}` {
		t.Fatalf("turn 1 = %+v", first.ToolCalls)
	}
	msgs = append(msgs, first,
		openai.ChatCompletionMessage{Role: "tool", ToolCallID: first.ToolCalls[0].ID, Content: "5"},
		openai.ChatCompletionMessage{Role: "tool", ToolCallID: first.ToolCalls[1].ID, Content: "2"})
	second := ask()
	if len(second.ToolCalls) != 1 || second.ToolCalls[0].Function.Name != "mul" || second.ToolCalls[0].Function.Arguments != "{oops" {
		t.Fatalf("turn 2 = %+v", second.ToolCalls)
	}
	msgs = append(msgs, second, openai.ChatCompletionMessage{Role: "tool", ToolCallID: second.ToolCalls[0].ID, Content: "error: bad arguments"})
	if final := ask(); len(final.ToolCalls) != 0 || final.Content != "got 5; 2; error: bad arguments; last error: bad arguments" {
		t.Fatalf("answer = %q %+v", final.Content, final.ToolCalls)
	}
}

func TestParsePlanIgnoresMalformed(t *testing.T) {
	t.Parallel()
	for _, text := range []string{"no plan here", "fake-plan: {not json", "fake-plan: 42"} {
		if _, ok := ParsePlan(text); ok {
			t.Errorf("ParsePlan(%q) found a plan", text)
		}
	}
	if got := StripPlan("keep\nfake-plan: {}\nthis"); got != "keep\nthis" {
		t.Errorf("StripPlan = %q", got)
	}
}
