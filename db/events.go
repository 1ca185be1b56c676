package db

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/run"
)

// eventPage bounds one read of a follower, so a long backlog streams in
// pages instead of one huge result.
const eventPage = 500

// Events replays the run's stored events after afterSeq, then follows new
// ones live until the terminal event (run.completed, run.error or
// run.cancelled), and then ends. Resume after a dropped connection by
// passing the last Seq you saw: nothing is lost or repeated. Seqs are 1, 2,
// 3 … per run, gap-free, and a reader never sees a seq before all lower ones
// are committed.
//
// An unknown run yields run.ErrNotFound (a follower does not wait for an id
// to be submitted). When ctx ends, the iteration yields ctx's error and
// stops. Followers share the DB's one LISTEN connection.
//
// A run that is retried or handed back starts its content afresh: the
// content is the concatenation of the content.delta events after the last
// run.started, run.retrying or run.released.
func (d *DB) Events(ctx context.Context, runID string, afterSeq int64) iter.Seq2[run.Event, error] {
	return func(yield func(run.Event, error) bool) {
		key, err := d.operatorKey(ctx, runID)
		if err != nil {
			yield(run.Event{}, err)
			return
		}
		for ev, err := range d.events(ctx, key, afterSeq) {
			if !yield(ev, err) {
				return
			}
		}
	}
}

// events is Events of the run of key.
func (d *DB) events(ctx context.Context, key string, afterSeq int64) iter.Seq2[run.Event, error] {
	runID := key // the key below, the id in error texts (shown)
	return func(yield func(run.Event, error) bool) {
		if afterSeq < 0 {
			yield(run.Event{}, fmt.Errorf("kern: %w: after seq %d is negative (0 replays from the first event)", run.ErrInvalidArgument, afterSeq))
			return
		}
		sub := d.subscribeEvents(runID)
		defer sub.Close()
		for failures := 0; ; {
			sub.SetPosition(afterSeq)
			events, err := d.readEvents(ctx, runID, afterSeq)
			if transient(err) && pause(ctx, failures) {
				failures++ // Postgres is briefly away: ride it out
				continue
			}
			failures = 0
			if err != nil {
				yield(run.Event{}, err)
				return
			}
			for _, ev := range events {
				if !yield(ev, nil) {
					return
				}
				afterSeq = ev.Seq
				if ev.Type.Terminal() {
					return
				}
			}
			if len(events) == eventPage {
				continue
			}
			if len(events) == 0 {
				more, err := d.moreEventsCanCome(ctx, runID, afterSeq)
				if transient(err) && pause(ctx, failures) {
					failures++
					continue
				}
				if err != nil {
					yield(run.Event{}, err)
					return
				}
				if !more {
					return
				}
			}
			select {
			case <-ctx.Done():
				yield(run.Event{}, fmt.Errorf("kern: events of run %q: %w", idOf(runID), context.Cause(ctx)))
				return
			case <-sub.C():
			}
		}
	}
}

type eventRow struct {
	RunID string
	Seq   int64
	Type  string
	Data  json.RawMessage
	At    time.Time
}

// StoredEvents returns the events the run's log holds now after afterSeq,
// in seq order, without waiting for more (Events follows the log). An
// unknown run yields run.ErrNotFound.
func (d *DB) StoredEvents(ctx context.Context, runID string, afterSeq int64) ([]run.Event, error) {
	key, err := d.operatorKey(ctx, runID)
	if err != nil {
		return nil, err
	}
	return d.storedEvents(ctx, key, afterSeq)
}

// storedEvents is StoredEvents of the run of key.
func (d *DB) storedEvents(ctx context.Context, runID string, afterSeq int64) ([]run.Event, error) {
	if afterSeq < 0 {
		return nil, fmt.Errorf("kern: %w: after seq %d is negative (0 replays from the first event)", run.ErrInvalidArgument, afterSeq)
	}
	var all []run.Event
	for {
		page, err := d.readEvents(ctx, runID, afterSeq)
		if err != nil {
			return all, err
		}
		all = append(all, page...)
		if len(all) == 0 {
			// No events past afterSeq: an unknown run says so, as
			// Events does (a run has its run.submitted event).
			if _, err := d.moreEventsCanCome(ctx, runID, afterSeq); err != nil {
				return nil, err
			}
		}
		if len(page) < eventPage {
			return all, nil
		}
		afterSeq = page[len(page)-1].Seq
	}
}

func (d *DB) readEvents(ctx context.Context, key string, afterSeq int64) ([]run.Event, error) {
	rows, err := d.pool.Query(ctx, sqlEvents, key, afterSeq, eventPage)
	if err != nil {
		return nil, fmt.Errorf("kern: events of run %q: %w", idOf(key), err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[eventRow])
	if err != nil {
		return nil, fmt.Errorf("kern: events of run %q: %w", idOf(key), err)
	}
	events := make([]run.Event, len(got))
	for i, r := range got {
		events[i] = run.Event{RunID: engine.RunID(r.RunID), Seq: r.Seq, Type: run.EventType(r.Type), Data: r.Data, At: r.At}
	}
	return events, nil
}

// moreEventsCanCome reports whether a follower at afterSeq should wait: the
// run exists and is not terminal, or it has events the follower has not
// read. A terminal status and its event commit together, so a terminal run
// whose last seq the follower has read has nothing more to come.
func (d *DB) moreEventsCanCome(ctx context.Context, key string, afterSeq int64) (bool, error) {
	var status run.Status
	var lastSeq int64
	err := d.pool.QueryRow(ctx, sqlEventPosition, key).Scan(&status, &lastSeq)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, fmt.Errorf("kern: events of run %q: %w", idOf(key), run.ErrNotFound)
	}
	if err != nil {
		return false, fmt.Errorf("kern: events of run %q: %w", idOf(key), err)
	}
	return !status.Terminal() || lastSeq > afterSeq, nil
}
