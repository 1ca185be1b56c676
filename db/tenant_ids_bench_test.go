package db_test

import (
	"testing"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/kerntest"
)

// BenchmarkGetRunByTenant is what per-tenant run ids cost a read: the
// operator's own run (one statement, as before), a tenant's run through its
// TenantDB (one statement: the key is derived, no look-up of the tenant),
// and a tenant's run read by the operator (a second statement finds the
// tenant's key after the first found no run of the operator's).
//
//	go test -run '^$' -bench GetRunByTenant -benchtime 2000x ./db
func BenchmarkGetRunByTenant(b *testing.B) {
	d := kerntest.DB(b)
	ctx := b.Context()
	acme, err := d.ForTenant("acme")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := d.SubmitRun(ctx, db.SubmitParams{RunID: "own", AgentName: "x", Input: "hi"}); err != nil {
		b.Fatal(err)
	}
	if _, err := acme.SubmitRun(ctx, db.SubmitParams{RunID: "theirs", AgentName: "x", Input: "hi"}); err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		get  func() error
	}{
		{"operator_own_run", func() error { _, err := d.GetRun(ctx, "own"); return err }},
		{"tenant_own_run", func() error { _, err := acme.GetRun(ctx, "theirs"); return err }},
		{"operator_reads_tenant_run", func() error { _, err := d.GetRun(ctx, "theirs"); return err }},
	} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if err := c.get(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
