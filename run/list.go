package run

import "time"

// ListParams filters and pages ListRuns. Zero fields do not filter.
type ListParams struct {
	Statuses  []Status
	AgentName string
	SessionID string
	Name      string
	// TenantID lists only the runs of that tenant (see Output.TenantID);
	// empty lists every tenant's.
	TenantID string
	// ParentRunID lists only the children of that run (Output.ParentRunID),
	// named as a read of the run by id would name it; empty for any run.
	ParentRunID string
	Limit       int    // default 50
	Cursor      string // from ListResult.NextCursor
}

// ListResult is one page of runs, newest first.
type ListResult struct {
	Runs       []*Output
	NextCursor string // empty on the last page
}

// DeleteParams selects finished runs to delete. Only terminal runs are
// ever deleted, whatever Statuses says.
type DeleteParams struct {
	Statuses  []Status
	OlderThan time.Duration
}
