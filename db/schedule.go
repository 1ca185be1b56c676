package db

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	_ "time/tzdata" // zone names must not depend on the host's zoneinfo: every worker reads them alike

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/robfig/cron/v3"

	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/run"
)

// maxCronBytes bounds a schedule's cron text.
const maxCronBytes = 255

// PutSchedule creates the schedule s.Name of s.TenantID (names are per
// tenant; "" is the operator's), or replaces it: from the next
// due time after now (in s.Timezone, UTC when empty), every worker that
// serves s.AgentName may fire it, and exactly one run is made per due time
// (see the package doc, "Recurring schedules"). A replace keeps LastRunID
// and computes NextRunAt afresh; NextRunAt and LastRunID in s are ignored.
// A cron text that does not parse, an unknown zone, an empty Name,
// AgentName or Prompt, or metadata over the limit is
// run.ErrInvalidArgument, and nothing is written. It returns the schedule
// as stored, NextRunAt in its zone.
func (d *DB) PutSchedule(ctx context.Context, s run.Schedule) (*run.Schedule, error) {
	spec, metadata, err := validateSchedule(&s)
	if err != nil {
		return nil, err
	}
	tx, err := d.pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("kern: put schedule: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, sqlLockScheduleName, s.Name, s.TenantID); err != nil {
		return nil, fmt.Errorf("kern: put schedule: %w", err)
	}
	var now time.Time
	var exists bool
	if err := tx.QueryRow(ctx, sqlLockSchedule, s.Name, s.TenantID).Scan(&now, &exists); err != nil {
		return nil, fmt.Errorf("kern: put schedule: %w", err)
	}
	next := spec.next(now)
	rows, err := tx.Query(ctx, sqlPutSchedule, s.Name, s.AgentName, s.Prompt, s.Cron, s.Timezone,
		s.SessionID, metadata, s.Paused, next, s.TenantID)
	if err != nil {
		return nil, fmt.Errorf("kern: put schedule: %w", err)
	}
	row, err := pgx.CollectExactlyOneRow(rows, pgx.RowToAddrOfStructByPos[scheduleRow])
	if err != nil {
		return nil, fmt.Errorf("kern: put schedule: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("kern: put schedule: commit: %w", err)
	}
	return row.schedule(), nil
}

// ListSchedules returns every schedule, of every tenant, ordered by tenant
// and name.
func (d *DB) ListSchedules(ctx context.Context) ([]*run.Schedule, error) {
	return d.listSchedules(ctx, nil)
}

// listSchedules is ListSchedules for one tenant, or all (nil).
func (d *DB) listSchedules(ctx context.Context, tenant *string) ([]*run.Schedule, error) {
	rows, err := d.pool.Query(ctx, sqlListSchedules, tenant)
	if err != nil {
		return nil, fmt.Errorf("kern: list schedules: %w", err)
	}
	list, err := pgx.CollectRows(rows, pgx.RowToAddrOfStructByPos[scheduleRow])
	if err != nil {
		return nil, fmt.Errorf("kern: list schedules: %w", err)
	}
	out := make([]*run.Schedule, len(list))
	for i, r := range list {
		out[i] = r.schedule()
	}
	return out, nil
}

// DeleteSchedule deletes the operator's schedule name (TenantID ""; a
// tenant's are deleted through ForTenant): it fires no more runs (a pass
// firing it right now commits first). The runs it fired stay. An unknown
// name is run.ErrNotFound.
func (d *DB) DeleteSchedule(ctx context.Context, name string) error {
	return d.deleteSchedule(ctx, name, "")
}

func (d *DB) deleteSchedule(ctx context.Context, name, tenant string) error {
	if err := checkText("schedule name", name, maxKeyBytes); err != nil {
		return err
	}
	tag, err := d.pool.Exec(ctx, sqlDeleteSchedule, name, tenant)
	if err != nil {
		return fmt.Errorf("kern: delete schedule %q: %w", name, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("kern: schedule %q: %w", name, run.ErrNotFound)
	}
	return nil
}

// FireSchedules implements engine.Store. When nothing is due it costs one
// statement, which also says when to look again.
func (d engineDB) FireSchedules(ctx context.Context, agents []string, limit int) (engine.FiredSchedules, error) {
	next, has, err := d.nextScheduleDue(ctx, agents)
	if err != nil || !has || next > 0 {
		return engine.FiredSchedules{Next: next, HasNext: has}, err
	}
	fired, fireErr := d.fireDue(ctx, agents, max(limit, 1))
	next, has, err = d.nextScheduleDue(ctx, agents)
	return engine.FiredSchedules{Runs: fired, Next: next, HasNext: has}, errors.Join(fireErr, err)
}

func (d engineDB) nextScheduleDue(ctx context.Context, agents []string) (time.Duration, bool, error) {
	var secs *float64
	if err := d.pool.QueryRow(ctx, sqlNextScheduleDue, agents).Scan(&secs); err != nil {
		return 0, false, fmt.Errorf("kern: schedules: next due time: %w", err)
	}
	if secs == nil {
		return 0, false, nil
	}
	return time.Duration(*secs * float64(time.Second)), true, nil
}

// fireDue is one firing transaction: it locks the due schedules, submits
// each one's run (row and job, submitOne) and moves each to its next due
// time after now, and commits all of it at once. A schedule that cannot
// make its run (its stored text no longer validates) still moves on, so it
// does not hold up the others; the error says why.
func (d engineDB) fireDue(ctx context.Context, agents []string, limit int) ([]string, error) {
	tx, err := d.pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("kern: fire schedules: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	rows, err := tx.Query(ctx, sqlLockDueSchedules, agents, limit)
	if err != nil {
		return nil, fmt.Errorf("kern: fire schedules: %w", err)
	}
	due, err := pgx.CollectRows(rows, pgx.RowToStructByPos[dueSchedule])
	if err != nil {
		return nil, fmt.Errorf("kern: fire schedules: %w", err)
	}
	if len(due) == 0 {
		return nil, nil
	}
	var errs []error
	names, runIDs, nexts, tenants := make([]string, len(due)), make([]string, len(due)), make([]time.Time, len(due)), make([]string, len(due))
	var fired []string
	for i, s := range due {
		names[i], tenants[i] = s.Name, s.TenantID
		spec, err := parseCron(s.Cron, s.Timezone)
		if err == nil {
			nexts[i] = spec.next(s.Now)
		}
		if nexts[i].IsZero() {
			// Not for a schedule PutSchedule took; an hour keeps it from
			// firing (or failing) on every pass.
			nexts[i] = s.Now.Add(time.Hour)
			errs = append(errs, fmt.Errorf("kern: schedule %q: no next due time (%v); looked at again in an hour", s.Name, err))
		}
		id, err := s.submit(ctx, d.DB, tx)
		if err != nil {
			if !errors.Is(err, run.ErrInvalidArgument) {
				return nil, fmt.Errorf("kern: fire schedule %q: %w", s.Name, err)
			}
			errs = append(errs, fmt.Errorf("kern: schedule %q fired no run: %w", s.Name, err))
			continue
		}
		runIDs[i] = id
		fired = append(fired, id)
	}
	if _, err := tx.Exec(ctx, sqlScheduleFired, names, runIDs, nexts, tenants); err != nil {
		return nil, fmt.Errorf("kern: fire schedules: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("kern: fire schedules: commit: %w", err)
	}
	return fired, errors.Join(errs...)
}

// dueSchedule mirrors sqlLockDueSchedules' columns.
type dueSchedule struct {
	Name, AgentName, Prompt, Cron, Timezone, SessionID string
	Metadata                                           string // JSON text
	Now                                                time.Time
	TenantID                                           string
}

// submit makes the schedule's run in tx: a background run, like SubmitRun's,
// validated the same way.
func (s dueSchedule) submit(ctx context.Context, d *DB, tx pgx.Tx) (string, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return "", fmt.Errorf("run id: %w", err)
	}
	var meta map[string]any
	dec := json.NewDecoder(strings.NewReader(s.Metadata))
	dec.UseNumber() // the numbers as stored, not as float64
	if err := dec.Decode(&meta); err != nil {
		return "", fmt.Errorf("kern: %w: stored metadata: %w", run.ErrInvalidArgument, err)
	}
	p := SubmitParams{
		RunID:     id.String(),
		SessionID: s.SessionID,
		AgentName: s.AgentName,
		Name:      s.Name,
		Input:     s.Prompt,
		Metadata:  meta,
		Enqueue:   true,
		TenantID:  s.TenantID,
	}
	metadata, err := p.validate()
	if err != nil {
		return "", err
	}
	if _, err := d.submitOne(ctx, tx, submitItem{SubmitParams: p, metadata: metadata}); err != nil {
		return "", err
	}
	return p.RunID, nil
}

// scheduleRow mirrors scheduleColumns, in order.
type scheduleRow struct {
	Name, AgentName, Prompt, Cron, Timezone, SessionID string
	Metadata                                           map[string]any
	Paused                                             bool
	NextRunAt                                          time.Time
	LastRunID                                          string
	CreatedAt, UpdatedAt                               time.Time
	TenantID                                           string
}

func (r *scheduleRow) schedule() *run.Schedule {
	next := r.NextRunAt.UTC()
	if loc, err := loadZone(r.Timezone); err == nil {
		next = next.In(loc)
	}
	return &run.Schedule{
		Name: r.Name, AgentName: r.AgentName, Prompt: r.Prompt, Cron: r.Cron, Timezone: r.Timezone,
		SessionID: r.SessionID, Metadata: r.Metadata, Paused: r.Paused, NextRunAt: next,
		LastRunID: r.LastRunID, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt, TenantID: r.TenantID,
	}
}

// validateSchedule checks s, filling in its defaults (Timezone UTC, Cron
// without surrounding spaces), and returns its parsed cron and its
// metadata as JSON.
func validateSchedule(s *run.Schedule) (cronSpec, string, error) {
	s.Cron = strings.TrimSpace(s.Cron)
	if s.Timezone == "" {
		s.Timezone = "UTC"
	}
	switch {
	case s.Name == "":
		return cronSpec{}, "", fmt.Errorf("kern: %w: schedule name is empty", run.ErrInvalidArgument)
	case s.AgentName == "":
		return cronSpec{}, "", fmt.Errorf("kern: %w: schedule %q: agent name is empty", run.ErrInvalidArgument, s.Name)
	case strings.TrimSpace(s.Prompt) == "":
		return cronSpec{}, "", fmt.Errorf("kern: %w: schedule %q: prompt is empty", run.ErrInvalidArgument, s.Name)
	}
	for _, f := range []struct {
		name  string
		value string
		max   int
	}{
		{"schedule name", s.Name, maxKeyBytes},
		{"agent name", s.AgentName, maxKeyBytes},
		{"prompt", s.Prompt, maxPromptBytes},
		{"session id", s.SessionID, maxKeyBytes},
		{"cron", s.Cron, maxCronBytes},
		{"time zone", s.Timezone, maxKeyBytes},
	} {
		if err := checkText(f.name, f.value, f.max); err != nil {
			return cronSpec{}, "", err
		}
	}
	if err := checkTenant(s.TenantID); err != nil {
		return cronSpec{}, "", err
	}
	spec, err := parseCron(s.Cron, s.Timezone)
	if err != nil {
		return cronSpec{}, "", fmt.Errorf("kern: %w: schedule %q: %w", run.ErrInvalidArgument, s.Name, err)
	}
	if spec.next(time.Now()).IsZero() {
		return cronSpec{}, "", fmt.Errorf("kern: %w: schedule %q: cron %q never comes due", run.ErrInvalidArgument, s.Name, s.Cron)
	}
	metadata := "{}"
	if s.Metadata != nil {
		if err := checkMetadata(s.Metadata); err != nil {
			return cronSpec{}, "", err
		}
		meta, err := json.Marshal(s.Metadata)
		if err != nil {
			return cronSpec{}, "", fmt.Errorf("kern: %w: metadata is not JSON-encodable: %w", run.ErrInvalidArgument, err)
		}
		if len(meta) > maxMetadataBytes {
			return cronSpec{}, "", fmt.Errorf("kern: %w: metadata is %d bytes as JSON, more than %d", run.ErrInvalidArgument, len(meta), maxMetadataBytes)
		}
		metadata = string(meta)
	}
	return spec, metadata, nil
}

// cronSpec is a parsed schedule: its due times, read in its zone.
type cronSpec struct {
	sched cron.Schedule
	loc   *time.Location
}

// next is the first due time strictly after t; zero when there is none in
// the next five years.
func (c cronSpec) next(t time.Time) time.Time { return c.sched.Next(t.In(c.loc)) }

// parseCron parses a schedule's cron text (robfig/cron's standard parser:
// 5 fields or a descriptor; "@every" is checked here, so that a duration it
// would round is refused rather than changed) and its zone.
func parseCron(text, zone string) (_ cronSpec, err error) {
	loc, err := loadZone(zone)
	if err != nil {
		return cronSpec{}, err
	}
	text = strings.TrimSpace(text)
	switch {
	case text == "":
		return cronSpec{}, errors.New("cron is empty")
	case strings.HasPrefix(text, "TZ=") || strings.HasPrefix(text, "CRON_TZ="):
		return cronSpec{}, fmt.Errorf("cron %q names a time zone: set Timezone instead", text)
	case strings.HasPrefix(text, "@every"):
		arg := strings.TrimSpace(strings.TrimPrefix(text, "@every"))
		every, err := time.ParseDuration(arg)
		switch {
		case err != nil:
			return cronSpec{}, fmt.Errorf("cron %q: %q is not a duration (say \"@every 30s\", \"@every 1h30m\")", text, arg)
		case every < time.Second:
			return cronSpec{}, fmt.Errorf("cron %q: the interval must be at least 1s", text)
		case every%time.Second != 0:
			return cronSpec{}, fmt.Errorf("cron %q: the interval must be whole seconds", text)
		}
		return cronSpec{sched: cron.Every(every), loc: loc}, nil
	}
	defer func() {
		if r := recover(); r != nil { // the parser's bug, not the caller's
			err = fmt.Errorf("cron %q does not parse", text)
		}
	}()
	sched, err := cron.ParseStandard(text)
	if err != nil {
		return cronSpec{}, fmt.Errorf("cron %q does not parse (5 fields \"min hour dom month dow\", @hourly, @daily, @weekly, @monthly, @yearly or \"@every <duration>\"): %w", text, err)
	}
	return cronSpec{sched: sched, loc: loc}, nil
}

// loadZone is time.LoadLocation for an IANA zone name; "Local", which would
// differ from host to host, is refused.
func loadZone(zone string) (*time.Location, error) {
	if zone == "" || zone == "UTC" {
		return time.UTC, nil
	}
	if zone == "Local" {
		return nil, errors.New(`time zone "Local" differs from host to host: name an IANA zone ("Europe/Paris")`)
	}
	loc, err := time.LoadLocation(zone)
	if err != nil {
		return nil, fmt.Errorf("unknown time zone %q (an IANA name, such as \"Europe/Paris\")", zone)
	}
	return loc, nil
}
