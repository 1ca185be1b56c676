package main

import (
	"context"
	"encoding/json"
	"errors"
	"iter"
	"strings"
	"testing"
	"time"

	"github.com/kern-go/kern/run"
)

func TestHumanDuration(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]string{
		350 * time.Millisecond:  "350ms",
		1200 * time.Millisecond: "1.2s",
		42 * time.Second:        "42s",
		185 * time.Second:       "3m5s",
		130 * time.Minute:       "2h10m",
		500 * time.Microsecond:  "500µs",
	} {
		if got := humanDuration(d); got != want {
			t.Errorf("humanDuration(%s) = %q, want %q", d, got, want)
		}
	}
}

func TestAgo(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]string{
		0: "just now", 3 * time.Second: "3s ago", 5 * time.Minute: "5m ago",
		2 * time.Hour: "2h ago", 50 * time.Hour: "2d ago",
	} {
		if got := ago(d); got != want {
			t.Errorf("ago(%s) = %q, want %q", d, got, want)
		}
	}
}

func TestShortIDs(t *testing.T) {
	t.Parallel()
	runs := []*run.Output{
		{RunID: "01970c6e-8f5e-7b3a-9c1d-2e4f6a8b0c1d"},
		{RunID: "01970c6e-8f5f-7b3a-9c1d-2e4f6a8b0c1d"},
		{RunID: "01970c6f-0000-7b3a-9c1d-2e4f6a8b0c1d"},
	}
	got := strings.Join(shortIDs(runs), " ")
	if want := "01970c6e-8f5e 01970c6e-8f5f 01970c6f-0000"; got != want {
		t.Fatalf("shortIDs = %q, want %q", got, want)
	}
	if got := shortIDs(runs[2:]); got[0] != "01970c6f" {
		t.Fatalf("one id: %q", got)
	}
}

// follow reopens a failed iterator from the last seq it saw.
func TestFollowResumesBySeq(t *testing.T) {
	t.Parallel()
	all := []run.Event{
		{Seq: 1, Type: run.EventRunStarted},
		{Seq: 2, Type: run.EventContentDelta, Data: json.RawMessage(`{"delta":"Hel"}`)},
		{Seq: 3, Type: run.EventContentDelta, Data: json.RawMessage(`{"delta":"lo"}`)},
		{Seq: 4, Type: run.EventContentDelta, Data: json.RawMessage(`{"delta":"!"}`)},
		{Seq: 5, Type: run.EventRunCompleted},
	}
	var opened []int64
	events := func(_ context.Context, _ string, after int64) iter.Seq2[run.Event, error] {
		opened = append(opened, after)
		fail := len(opened) <= 2 // the first two fail after one event
		return func(yield func(run.Event, error) bool) {
			for _, ev := range all[after:] {
				if !yield(ev, nil) {
					return
				}
				if fail {
					yield(run.Event{}, errors.New("connection reset"))
					return
				}
			}
		}
	}
	var out, errw strings.Builder
	never := func(context.Context) (bool, error) { return false, nil }
	if err := followContent(context.Background(), events, never, "r", &out, &errw); err != nil {
		t.Fatal(err)
	}
	if out.String() != "Hello!" || len(opened) != 3 || opened[1] != 1 || opened[2] != 2 {
		t.Fatalf("printed %q, opened at %v", out.String(), opened)
	}
	// An unknown run is not retried.
	notFound := func(context.Context, string, int64) iter.Seq2[run.Event, error] {
		return func(yield func(run.Event, error) bool) { yield(run.Event{}, run.ErrNotFound) }
	}
	if err := followContent(context.Background(), notFound, never, "r", &out, &errw); !errors.Is(err, run.ErrNotFound) {
		t.Fatalf("err = %v", err)
	}
}
