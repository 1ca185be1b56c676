package logx

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// riverLike logs the way River does: a With'd logger, Info for progress.
func riverLike(l *slog.Logger) {
	l = l.With(slog.String("client", "c1")).WithGroup("river")
	l.Info("producer: Producer job counts", slog.Int("num_jobs_running", 3), slog.String("queue", "kern"))
	l.Warn("producer: queue poll failed", slog.String("err", "conn reset"))
}

func TestRiverLoggerDefaultLevelDropsInfo(t *testing.T) {
	var buf bytes.Buffer
	riverLike(RiverLogger(slog.New(slog.NewTextHandler(&buf, nil)))) // Info level
	out := buf.String()
	if strings.Contains(out, "Producer job counts") {
		t.Errorf("Info record reached an Info-level handler:\n%s", out)
	}
	if !strings.Contains(out, "level=WARN") || !strings.Contains(out, "queue poll failed") {
		t.Errorf("Warn record missing or changed:\n%s", out)
	}
	if !strings.Contains(out, "client=c1") || !strings.Contains(out, "river.err=\"conn reset\"") {
		t.Errorf("attributes or group lost:\n%s", out)
	}
}

func TestRiverLoggerDebugShowsDemoted(t *testing.T) {
	var buf bytes.Buffer
	debug := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	riverLike(RiverLogger(debug))
	var counts string
	for line := range strings.Lines(buf.String()) {
		if strings.Contains(line, "Producer job counts") {
			counts = line
		}
	}
	if counts == "" {
		t.Fatalf("demoted record missing at Debug level:\n%s", buf.String())
	}
	for _, want := range []string{"level=DEBUG", "client=c1", "river.num_jobs_running=3", "river.queue=kern"} {
		if !strings.Contains(counts, want) {
			t.Errorf("demoted record %q lacks %s", counts, want)
		}
	}
	if !strings.Contains(buf.String(), "level=WARN") {
		t.Errorf("Warn record missing at Debug level:\n%s", buf.String())
	}
}

func TestRiverLoggerLevels(t *testing.T) {
	ctx := context.Background()
	l := RiverLogger(slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil)))
	for level, want := range map[slog.Level]bool{
		slog.LevelDebug: false, slog.LevelInfo: false, slog.LevelInfo + 2: false,
		slog.LevelWarn: true, slog.LevelError: true,
	} {
		if got := l.Enabled(ctx, level); got != want {
			t.Errorf("Enabled(%v) = %v at the default level, want %v", level, got, want)
		}
	}
	// Handle called directly, bypassing Enabled, must not leak Info either.
	var buf bytes.Buffer
	h := RiverLogger(slog.New(slog.NewTextHandler(&buf, nil))).Handler()
	if err := h.Handle(ctx, slog.NewRecord(time.Now(), slog.LevelInfo, "direct", 0)); err != nil {
		t.Fatal(err)
	}
	if buf.Len() != 0 {
		t.Errorf("Handle wrote an Info record to an Info-level handler: %s", buf.String())
	}
}

func TestRiverLoggerNil(t *testing.T) {
	ctx := context.Background()
	l := RiverLogger(nil)
	if got, want := l.Enabled(ctx, slog.LevelInfo), slog.Default().Enabled(ctx, slog.LevelDebug); got != want {
		t.Errorf("RiverLogger(nil).Enabled(Info) = %v, want slog.Default's Debug answer %v", got, want)
	}
	if !l.Enabled(ctx, slog.LevelError) {
		t.Error("RiverLogger(nil) drops errors")
	}
}
