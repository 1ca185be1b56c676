package db

import (
	"context"
	"errors"
	"fmt"
	"iter"

	"github.com/jackc/pgx/v5"

	"github.com/kern-go/kern/internal/engine"
	"github.com/kern-go/kern/run"
)

// TenantDB is the database as one tenant sees it: the tenant's runs and
// schedules only. It is what an HTTP API key opens (package server).
//
// Run ids are the tenant's own: another tenant may have a run of the same
// id, which is another run, and a submit of an id another tenant uses
// creates this tenant's run (never run.ErrAlreadyExists). A run of another
// tenant reads exactly as an unknown id (run.ErrNotFound), also for a
// cancel: another tenant's run is never touched, and a cancel request for
// an id with no run applies only to the run this tenant submits with it.
// Every call names the run by its key (see runkey.go), so none needs a
// look-up of the run's tenant first.
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
	if err := checkTenant(tenant); err != nil {
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

// SubmitRunOrExisting is DB.SubmitRunOrExisting for a run of this tenant.
func (t *TenantDB) SubmitRunOrExisting(ctx context.Context, p SubmitParams) (*run.Output, bool, error) {
	p.TenantID = t.tenant
	return t.d.SubmitRunOrExisting(ctx, p)
}

// GetRun is DB.GetRun for this tenant's runs.
func (t *TenantDB) GetRun(ctx context.Context, runID string) (*run.Output, error) {
	key, err := t.key(runID)
	if err != nil {
		return nil, err
	}
	return t.d.getByKey(ctx, key)
}

// WaitRun is DB.WaitRun for this tenant's runs.
func (t *TenantDB) WaitRun(ctx context.Context, runID string) (*run.Output, error) {
	key, err := t.key(runID)
	if err != nil {
		return nil, err
	}
	return t.d.waitRun(ctx, key)
}

// CancelRun is DB.CancelRun as this tenant asks it: only this tenant's run
// of the id is cancelled, or the one it submits with the id later; another
// tenant's run of the same id is a run of its own, never touched.
func (t *TenantDB) CancelRun(ctx context.Context, runID string) (bool, error) {
	key, err := t.key(runID)
	if err != nil {
		return false, err
	}
	res, err := t.d.cancelRun(ctx, key)
	return err == nil && res.Outcome != CancelAlreadyFinished, err
}

// ListRuns is DB.ListRuns over this tenant's runs (p.TenantID is set).
func (t *TenantDB) ListRuns(ctx context.Context, p run.ListParams) (*run.ListResult, error) {
	p.TenantID = t.tenant
	return t.d.ListRuns(ctx, p)
}

// Events is DB.Events for this tenant's runs; another tenant's run yields
// run.ErrNotFound first, and nothing else.
func (t *TenantDB) Events(ctx context.Context, runID string, afterSeq int64) iter.Seq2[run.Event, error] {
	key, err := t.key(runID)
	if err != nil {
		return func(yield func(run.Event, error) bool) { yield(run.Event{}, err) }
	}
	return t.d.events(ctx, key, afterSeq)
}

// StoredEvents is DB.StoredEvents for this tenant's runs.
func (t *TenantDB) StoredEvents(ctx context.Context, runID string, afterSeq int64) ([]run.Event, error) {
	key, err := t.key(runID)
	if err != nil {
		return nil, err
	}
	return t.d.storedEvents(ctx, key, afterSeq)
}

// Messages is DB.Messages for this tenant's runs.
func (t *TenantDB) Messages(ctx context.Context, runID string) ([]run.Message, error) {
	key, err := t.key(runID)
	if err != nil {
		return nil, err
	}
	return t.d.messages(ctx, key)
}

// ApproveToolCall is DB.ApproveToolCall for this tenant's runs.
func (t *TenantDB) ApproveToolCall(ctx context.Context, runID, callID string) error {
	return t.answer(ctx, runID, callID, "approved", "")
}

// RejectToolCall is DB.RejectToolCall for this tenant's runs.
func (t *TenantDB) RejectToolCall(ctx context.Context, runID, callID, reason string) error {
	return t.answer(ctx, runID, callID, "rejected", reason)
}

// SubmitToolResult is DB.SubmitToolResult for this tenant's runs.
func (t *TenantDB) SubmitToolResult(ctx context.Context, runID, callID, output string) error {
	return t.answer(ctx, runID, callID, "result", output)
}

func (t *TenantDB) answer(ctx context.Context, runID, callID, kind, text string) error {
	if err := checkAnswer(runID, callID, kind, text); err != nil {
		return err
	}
	return t.d.answer(ctx, engine.RunKey(t.tenant, runID), callID, kind, text)
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
