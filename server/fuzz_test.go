package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"testing"
	"time"
)

// The bodies of POST .../reject and .../result, as runs.go declares them.
type (
	rejectRequest struct {
		Reason string `json:"reason"`
	}
	resultRequest struct {
		Output *string `json:"output"`
	}
)

// fuzzLimit bounds the bodies the fuzzers decode, as decodeBody bounds a
// request's.
const fuzzLimit = 4 << 10

// fuzzDecode is the property every body type keeps: decodeJSON does not
// panic; a body over the limit is errBodyTooLarge and nothing else is; and
// a value it accepts encodes to JSON that it accepts again, as the same
// value. It returns the decoded value and whether decoding succeeded.
func fuzzDecode[T any](t *testing.T, data []byte, optional bool) (*T, bool) {
	body := http.MaxBytesReader(nil, io.NopCloser(bytes.NewReader(data)), fuzzLimit)
	var v T
	err := decodeJSON(body, "application/json", &v, optional)
	if tooLarge := errors.Is(err, errBodyTooLarge); tooLarge != (len(data) > fuzzLimit) {
		t.Fatalf("%d bytes (limit %d): error %v", len(data), fuzzLimit, err)
	}
	if err != nil {
		if err.Error() == "" {
			t.Fatal("an error with no text")
		}
		return nil, false
	}
	again, err := json.Marshal(&v)
	if err != nil {
		t.Fatalf("decoded %q into %#v, which does not encode: %v", data, v, err)
	}
	var w T
	if err := decodeJSON(bytes.NewReader(again), "application/json", &w, false); err != nil {
		t.Fatalf("decoded %q into %#v; its encoding %s does not decode: %v", data, v, again, err)
	}
	if !reflect.DeepEqual(v, w) {
		t.Fatalf("decoded %q into %#v; its encoding %s decodes as %#v", data, v, again, w)
	}
	return &v, true
}

var submitSeeds = []string{
	`{"agent": "assistant", "prompt": "hi"}`,
	`{"agent": "a", "prompt": "p", "run_id": "r1", "session_id": "s", "name": "n", "metadata": {"n": 12345678901234567890, "f": 1.5e300, "x": [1, "two", null, {"d": -0}]},
	  "timeout": "1m", "idempotency_key": "k", "concurrency_key": "c", "delay": "90s", "wait_timeout": "1h30m", "webhook": "https://example.com/h", "priority": 4}`,
	`{"agent": "a", "prompt": "p", "start_at": "2026-12-01T07:00:00Z", "priority": null, "metadata": null}`,
	`{"agent": "a", "prompt": "p", "delay": "5s", "start_at": "2026-12-01T07:00:00.123456789+02:00"}`,
	`{"agent": "a", "prompt": "p", "delay": "-5s", "timeout": "9223372036854775807ns", "priority": 0}`,
	`{"agent": "a", "prompt": "p", "delay": "2562047h47m16.854775807s", "start_at": "9999-12-31T23:59:59Z"}`,
	`{"prompt": 5}`,
	`{"priority": 1.5}`,
	`{"priority": 99999999999999999999}`,
	`{"metadata": "x"}`,
	`{"unknown": 1}`,
	`{"agent": "\u0000\ud800", "prompt": "\xff"}`,
	`{"metadata": {"a": {"b": {"c": [[[]]]}}}}`,
	`[]`, `{} {}`, `{}x`, `null`, ``, ` `, `{`, `"agent"`, `1`,
}

func FuzzDecodeSubmit(f *testing.F) {
	for _, s := range submitSeeds {
		f.Add([]byte(s))
	}
	now := time.Now()
	f.Fuzz(func(t *testing.T, data []byte) {
		q, ok := fuzzDecode[submitRequest](t, data, false)
		if !ok {
			return
		}
		p, err := q.params(now)
		if err != nil {
			return
		}
		if p.RunID == "" || (q.RunID != "" && p.RunID != q.RunID) {
			t.Fatalf("run id %q from %q", p.RunID, q.RunID)
		}
		if p.Timeout < 0 || p.WaitTimeout < 0 || (!p.StartAt.IsZero() && q.Delay != "" && p.StartAt.Before(now)) {
			t.Fatalf("%q gave negative durations: %+v", data, p)
		}
		if q.Priority != nil && p.Priority == 0 {
			t.Fatalf("priority %d read as the default", *q.Priority)
		}
		// The metadata handed to the database encodes.
		if _, err := json.Marshal(p.Metadata); err != nil {
			t.Fatalf("metadata %#v does not encode: %v", p.Metadata, err)
		}
	})
}

func FuzzDecodeSchedule(f *testing.F) {
	for _, s := range []string{
		`{"agent": "assistant", "prompt": "p", "cron": "@daily"}`,
		`{"agent": "a", "prompt": "p", "cron": "0 7 * * 1-5", "timezone": "Europe/Berlin", "session_id": "s", "metadata": {"k": 1}, "paused": true}`,
		`{"paused": "yes"}`, `{"cron": 5}`, `{"metadata": []}`, `{"name": "x"}`,
		`[]`, `{} {}`, `null`, ``, `{`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		q, ok := fuzzDecode[scheduleRequest](t, data, false)
		if ok {
			if _, err := json.Marshal(numbersAsGiven(q.Metadata)); err != nil {
				t.Fatalf("metadata %#v does not encode: %v", q.Metadata, err)
			}
		}
	})
}

func FuzzDecodeAnswer(f *testing.F) {
	for _, s := range []string{
		`{"reason": "too much"}`, `{"output": "by hand"}`, `{"output": ""}`, `{"output": null}`,
		`{"reason": 1}`, `{"output": {}}`, `{"reason": "a", "output": "b"}`,
		`{}`, `[]`, `{} {}`, `null`, ``, `  `, `{`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		_, rejectOK := fuzzDecode[rejectRequest](t, data, true)
		_, resultOK := fuzzDecode[resultRequest](t, data, false)
		if len(bytes.TrimSpace(data)) == 0 && (!rejectOK || resultOK) {
			t.Fatalf("empty body %q: reject decodes %v (want true), result %v (want false)", data, rejectOK, resultOK)
		}
	})
}
