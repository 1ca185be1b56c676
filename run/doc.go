// Package run holds kern's record types: a run's [Status], its [Output]
// (the row applications read back), its [Metrics] and [Event]s, the
// parameters of listing and clearing runs, and the sentinel errors every
// other package returns.
//
// It imports nothing of kern, so applications, the storage layer (package
// db) and the engine (package agent) can all share it without cycles.
//
// A run's status only moves forward:
//
//	pending → running → completed | error | cancelled
//	pending → cancelled                      (cancelled before it started)
//	running → pending                        (handed back for a retry)
//
// A terminal status ([Status.Terminal]) is never overwritten.
package run
