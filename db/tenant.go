package db

import (
	"context"
	"errors"
	"fmt"
	"iter"

	"github.com/jackc/pgx/v5"

	"github.com/kern-go/kern/run"
)

// TenantDB is the database as one tenant sees it: the tenant's runs and
// schedules only. It is what an HTTP API key opens (package server). A run
// of another tenant reads exactly as an unknown id (run.ErrNotFound), also
// for a cancel: another tenant's run is never touched, and a cancel request
// for an id with no run applies only to a run this tenant submits with it.
//
// A run's tenant never changes, so the reads that follow a run (WaitRun,
// Events, Messages, answers) check it once, then do what DB does.
type TenantDB struct {
	d      *DB
	tenant string
}

// ForTenant returns d as tenant sees it. tenant must be non-empty: "" is
// the operator's own runs, which d itself shows with every tenant's.
func (d *DB) ForTenant(tenant string) (*TenantDB, error) {
	if tenant == "" {
		return nil, fmt.Errorf("kern: %w: tenant id is empty", run.ErrInvalidArgument)
	}
	if err := checkText("tenant id", tenant, maxKeyBytes); err != nil {
		return nil, err
	}
	return &TenantDB{d: d, tenant: tenant}, nil
}

// Tenant is the tenant this view shows.
func (t *TenantDB) Tenant() string { return t.tenant }

// SubmitRun is DB.SubmitRun for a run of this tenant: p.TenantID is set,
// and an IdempotencyKey finds only this tenant's runs.
func (t *TenantDB) SubmitRun(ctx context.Context, p SubmitParams) (*run.Output, error) {
	p.TenantID = t.tenant
	return t.d.SubmitRun(ctx, p)
}

// GetRun is DB.GetRun for this tenant's runs.
func (t *TenantDB) GetRun(ctx context.Context, runID string) (*run.Output, error) {
	if err := run.ValidateID(runID); err != nil {
		return nil, err
	}
	return t.d.readRun(ctx, runID, sqlGetRunOfTenant, runID, t.tenant)
}

// owns checks that runID is a run of this tenant: run.ErrNotFound if not.
func (t *TenantDB) owns(ctx context.Context, runID string) error {
	if err := run.ValidateID(runID); err != nil {
		return err
	}
	var ok bool
	if err := t.d.pool.QueryRow(ctx, sqlRunOfTenant, runID, t.tenant).Scan(&ok); err != nil {
		return fmt.Errorf("kern: run %q: %w", runID, err)
	}
	if !ok {
		return fmt.Errorf("kern: run %q: %w", runID, run.ErrNotFound)
	}
	return nil
}

// WaitRun is DB.WaitRun for this tenant's runs.
func (t *TenantDB) WaitRun(ctx context.Context, runID string) (*run.Output, error) {
	if err := t.owns(ctx, runID); err != nil {
		return nil, err
	}
	return t.d.WaitRun(ctx, runID)
}

// CancelRun is DB.CancelRun as this tenant asks it: another tenant's run
// answers true, as an id with no run does, and is left untouched.
func (t *TenantDB) CancelRun(ctx context.Context, runID string) (bool, error) {
	return t.d.cancelRun(ctx, runID, t.tenant)
}

// ListRuns is DB.ListRuns over this tenant's runs (p.TenantID is set).
func (t *TenantDB) ListRuns(ctx context.Context, p run.ListParams) (*run.ListResult, error) {
	p.TenantID = t.tenant
	return t.d.ListRuns(ctx, p)
}

// Events is DB.Events for this tenant's runs; another tenant's run yields
// run.ErrNotFound first, and nothing else.
func (t *TenantDB) Events(ctx context.Context, runID string, afterSeq int64) iter.Seq2[run.Event, error] {
	return func(yield func(run.Event, error) bool) {
		if err := t.owns(ctx, runID); err != nil {
			yield(run.Event{}, err)
			return
		}
		for ev, err := range t.d.Events(ctx, runID, afterSeq) {
			if !yield(ev, err) {
				return
			}
		}
	}
}

// StoredEvents is DB.StoredEvents for this tenant's runs.
func (t *TenantDB) StoredEvents(ctx context.Context, runID string, afterSeq int64) ([]run.Event, error) {
	if err := t.owns(ctx, runID); err != nil {
		return nil, err
	}
	return t.d.StoredEvents(ctx, runID, afterSeq)
}

// Messages is DB.Messages for this tenant's runs.
func (t *TenantDB) Messages(ctx context.Context, runID string) ([]run.Message, error) {
	if err := t.owns(ctx, runID); err != nil {
		return nil, err
	}
	return t.d.Messages(ctx, runID)
}

// ApproveToolCall is DB.ApproveToolCall for this tenant's runs.
func (t *TenantDB) ApproveToolCall(ctx context.Context, runID, callID string) error {
	if err := t.owns(ctx, runID); err != nil {
		return err
	}
	return t.d.ApproveToolCall(ctx, runID, callID)
}

// RejectToolCall is DB.RejectToolCall for this tenant's runs.
func (t *TenantDB) RejectToolCall(ctx context.Context, runID, callID, reason string) error {
	if err := t.owns(ctx, runID); err != nil {
		return err
	}
	return t.d.RejectToolCall(ctx, runID, callID, reason)
}

// SubmitToolResult is DB.SubmitToolResult for this tenant's runs.
func (t *TenantDB) SubmitToolResult(ctx context.Context, runID, callID, output string) error {
	if err := t.owns(ctx, runID); err != nil {
		return err
	}
	return t.d.SubmitToolResult(ctx, runID, callID, output)
}

// PutSchedule is DB.PutSchedule for a schedule of this tenant (s.TenantID
// is set): its names are its own, and the runs it fires are the tenant's.
func (t *TenantDB) PutSchedule(ctx context.Context, s run.Schedule) (*run.Schedule, error) {
	s.TenantID = t.tenant
	return t.d.PutSchedule(ctx, s)
}

// ListSchedules lists this tenant's schedules, ordered by name.
func (t *TenantDB) ListSchedules(ctx context.Context) ([]*run.Schedule, error) {
	return t.d.listSchedules(ctx, &t.tenant)
}

// GetSchedule reads one schedule of this tenant; run.ErrNotFound if it has
// none of that name.
func (t *TenantDB) GetSchedule(ctx context.Context, name string) (*run.Schedule, error) {
	if err := checkText("schedule name", name, maxKeyBytes); err != nil {
		return nil, err
	}
	rows, err := t.d.pool.Query(ctx, sqlGetSchedule, name, t.tenant)
	if err != nil {
		return nil, fmt.Errorf("kern: get schedule %q: %w", name, err)
	}
	r, err := pgx.CollectExactlyOneRow(rows, pgx.RowToAddrOfStructByPos[scheduleRow])
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("kern: schedule %q: %w", name, run.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("kern: get schedule %q: %w", name, err)
	}
	return r.schedule(), nil
}

// DeleteSchedule deletes a schedule of this tenant; run.ErrNotFound if it
// has none of that name.
func (t *TenantDB) DeleteSchedule(ctx context.Context, name string) error {
	return t.d.deleteSchedule(ctx, name, t.tenant)
}
