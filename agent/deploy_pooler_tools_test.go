package agent_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/kerntest"
	"github.com/kern-go/kern/internal/pgtest"
	"github.com/kern-go/kern/run"
)

// A run with two tool calls, followed live through PgBouncer from its
// submit to its end: the follower sees every event, in order, once — the
// same log a replay reads afterwards. Behind a transaction pooler without a
// direct URL the follower cannot LISTEN and polls; with one, and behind a
// session pooler, it is woken by notifications.
func TestToolsAndEventsThroughPgBouncer(t *testing.T) {
	t.Parallel()
	for _, c := range poolerCases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ctx := kerntest.Context(t, time.Minute)
			dbURL := kerntest.DatabaseURL(t)
			b := bouncerFor(t, dbURL, c, pgtest.BouncerConfig{})
			d := openThrough(t, ctx, kerntest.WithPoolSize(b.URL(), kerntest.TestPoolSize), dbURL, c)
			fake, model := kerntest.Model(t)
			var calls atomic.Int32
			a := &agent.Agent{Name: "tooler", Instructions: "Use the tools.", Model: model, DB: d, Tools: []agent.Tool{{
				Name: "get_weather", Description: "The weather in a city.",
				Parameters: map[string]any{"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}}},
				Call: func(_ context.Context, args json.RawMessage) (string, error) {
					calls.Add(1)
					var in struct{ City string }
					if err := json.Unmarshal(args, &in); err != nil {
						return "", err
					}
					return "18C in " + in.City, nil
				},
			}}}
			// Dripped, so the events come while the follower reads.
			fake.Script(byStep(
				fakellm.Reply{Content: "Let me look that up. ", Drip: 5 * time.Millisecond,
					ToolCalls: []fakellm.ToolCall{{Name: "get_weather", Arguments: `{"city":"Paris"}`}}},
				fakellm.Reply{Content: "And Lyon. ", Drip: 5 * time.Millisecond,
					ToolCalls: []fakellm.ToolCall{{Name: "get_weather", Arguments: `{"city":"Lyon"}`}}},
				fakellm.Reply{Content: "18C in Paris and in Lyon, " + fakellm.LoremWords(20), Drip: 5 * time.Millisecond},
			))
			kerntest.Worker(t, d, agent.WorkerConfig{FlushInterval: time.Millisecond, FlushBytes: 8}, a)

			out, err := a.Run(ctx, "Weather in Paris and Lyon?", agent.Background(true))
			if err != nil {
				t.Fatal(err)
			}
			live := collect(t, a, out.RunID, 0) // follows until the terminal event
			final := mustWait(t, a, out.RunID)
			if final.Status != run.StatusCompleted || !strings.HasPrefix(final.Content, "18C in Paris and in Lyon, ") || final.Attempt != 1 {
				t.Fatalf("run: %s at attempt %d, %q %s", final.Status, final.Attempt, final.Content, final.Error)
			}
			if calls.Load() != 2 || fake.Count() != 3 {
				t.Fatalf("%d tool calls and %d model requests; want 2 and 3", calls.Load(), fake.Count())
			}
			replay := checkToolLog(t, &env{db: d, model: fake, agent: a}, final, 2)
			if len(live) != len(replay) {
				t.Fatalf("the live follower saw %d events, the replay has %d", len(live), len(replay))
			}
			for i := range live {
				if live[i].Seq != replay[i].Seq || live[i].Type != replay[i].Type || string(live[i].Data) != string(replay[i].Data) {
					t.Fatalf("event %d: live %d %s %s, replay %d %s %s", i,
						live[i].Seq, live[i].Type, live[i].Data, replay[i].Seq, replay[i].Type, replay[i].Data)
				}
			}
			want := []run.EventType{run.EventRunStarted, run.EventContentDelta, run.EventToolCall, run.EventToolResult,
				run.EventContentDelta, run.EventToolCall, run.EventToolResult, run.EventContentDelta, run.EventRunCompleted}
			if got := squashedTypes(live); !slices.Equal(got, want) {
				t.Fatalf("events in the order %v; want %v", got, want)
			}
			checkBouncer(t, b)
		})
	}
}

// squashedTypes is the events' types with runs of one type written once.
func squashedTypes(events []run.Event) []run.EventType {
	var types []run.EventType
	for _, ev := range events {
		if len(types) == 0 || types[len(types)-1] != ev.Type {
			types = append(types, ev.Type)
		}
	}
	return types
}
