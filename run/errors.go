package run

import "errors"

var (
	// ErrNotFound is returned for a run id that has no run.
	ErrNotFound = errors.New("run not found")
	// ErrAlreadyExists is returned when WithRunID names an id that already
	// has a run; the existing run is left untouched.
	ErrAlreadyExists = errors.New("run already exists")
	// ErrInvalidArgument marks bad input (empty prompt, malformed id, …).
	// Errors that wrap it say which argument and why.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrNotRunning is returned to an executing worker whose write was
	// refused because the run is no longer running under its attempt: it was
	// cancelled, timed out elsewhere, or taken over by a later attempt.
	ErrNotRunning = errors.New("run is no longer running for this execution")
	// ErrNotWaiting is returned by an answer (ApproveToolCall,
	// RejectToolCall, SubmitToolResult) to a run that is not waiting on that
	// call: the call was answered already (the first answer stands), was
	// never asked, or the run is not waiting at all (running, finished).
	// Nothing was changed.
	ErrNotWaiting = errors.New("run is not waiting on that tool call")
)
