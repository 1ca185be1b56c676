package engine

import "strings"

// A run's key is how kern's tables name it: kern_run.id, the run_id of its
// events, steps, answers, cancel requests and outbox rows, its River jobs'
// run_id, and the LISTEN/NOTIFY payloads about it.
//
// Run ids are per tenant (two tenants may each have a run "order-7"), while
// every table keeps a one-column key, so the key carries the tenant:
//
//   - the operator's own runs (tenant "") are keyed by their id, unchanged;
//   - tenant t's run of id is keyed t + RunKeySep + id.
//
// Neither run ids nor tenant ids may contain control characters
// (run.ValidateID, db's tenant check), so RunKeySep appears in a key only
// between a tenant and an id: the mapping is one to one, and no operator's
// id can ever be a tenant's key. RunKeySep is not \x1f, which kern's event
// notifications use to mark a run's end.
//
// Keys stay inside kern: what an application reads (run.Output.RunID,
// run.Event.RunID, error texts, ToolCallID, webhook bodies) is the id.
const RunKeySep = "\x1e"

// RunKey is the key of tenant's run of id.
func RunKey(tenant, id string) string {
	if tenant == "" {
		return id
	}
	return tenant + RunKeySep + id
}

// RunID is the id a key names: the key itself for an operator's run.
func RunID(key string) string {
	if i := strings.LastIndex(key, RunKeySep); i >= 0 {
		return key[i+len(RunKeySep):]
	}
	return key
}

// KeyTenant is the tenant a key names: "" for an operator's run.
func KeyTenant(key string) string {
	if i := strings.LastIndex(key, RunKeySep); i >= 0 {
		return key[:i]
	}
	return ""
}
