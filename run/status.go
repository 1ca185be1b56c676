package run

// Status is where a run is in its life.
type Status string

const (
	StatusPending Status = "pending" // accepted, waiting for a worker
	StatusRunning Status = "running" // a worker is executing it
	// StatusWaiting: paused until a person or a system answers the tool
	// calls in Output.Waiting; it holds no worker. Not terminal.
	StatusWaiting   Status = "waiting"
	StatusCompleted Status = "completed" // the model answered
	StatusError     Status = "error"     // it failed; Output.Error says why
	StatusCancelled Status = "cancelled" // CancelRun stopped it
)

// Terminal reports whether s is final: completed, error or cancelled.
func (s Status) Terminal() bool {
	switch s {
	case StatusCompleted, StatusError, StatusCancelled:
		return true
	}
	return false
}

// Valid reports whether s is one of the six known statuses.
func (s Status) Valid() bool {
	switch s {
	case StatusPending, StatusRunning, StatusWaiting, StatusCompleted, StatusError, StatusCancelled:
		return true
	}
	return false
}
