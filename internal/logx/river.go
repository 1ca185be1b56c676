// Package logx holds slog helpers shared by kern's packages.
package logx

import (
	"context"
	"log/slog"
)

// RiverLogger returns a logger for River built on l (nil: slog.Default()).
// River logs routine progress at Info — "producer: Producer job counts"
// every five seconds per queue, among others — which at the usual Info level
// drowns kern's own lines in River's bookkeeping. The returned logger
// demotes Info records to Debug, so they show only where the user asked for
// Debug, and passes Warn and Error through unchanged: those are the ones a
// user must see. Attributes and groups are kept.
func RiverLogger(l *slog.Logger) *slog.Logger {
	if l == nil {
		l = slog.Default()
	}
	return slog.New(demoteInfo{inner: l.Handler()})
}

// infoToDebug is how far an Info-range level moves down: Info becomes
// Debug, and a custom level between Info and Warn keeps its offset.
const infoToDebug = slog.LevelInfo - slog.LevelDebug

// demote maps [Info, Warn) to [Debug, Info); other levels are unchanged.
func demote(level slog.Level) slog.Level {
	if level >= slog.LevelInfo && level < slog.LevelWarn {
		return level - infoToDebug
	}
	return level
}

// demoteInfo is a slog.Handler that hands records to inner with their
// level demoted (see demote).
type demoteInfo struct {
	inner slog.Handler
}

// Enabled asks inner about the level the record will have, so that a
// demoted record costs nothing when Debug is off.
func (h demoteInfo) Enabled(ctx context.Context, level slog.Level) bool {
	return h.inner.Enabled(ctx, demote(level))
}

func (h demoteInfo) Handle(ctx context.Context, r slog.Record) error {
	level := demote(r.Level)
	if level != r.Level {
		// slog.Logger has checked Enabled already, but a caller driving the
		// handler directly may not have, and handlers such as TextHandler do
		// not filter in Handle: without this an Info line could still leak.
		if !h.inner.Enabled(ctx, level) {
			return nil
		}
		r.Level = level // r is a copy; its attributes are shared, not changed
	}
	return h.inner.Handle(ctx, r)
}

func (h demoteInfo) WithAttrs(attrs []slog.Attr) slog.Handler {
	return demoteInfo{inner: h.inner.WithAttrs(attrs)}
}

func (h demoteInfo) WithGroup(name string) slog.Handler {
	return demoteInfo{inner: h.inner.WithGroup(name)}
}
