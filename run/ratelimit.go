package run

// RateLimit is a request and token budget of one model id, shared by every
// worker on the database (db.DB.SetRateLimit): at most RequestsPerMinute
// model requests start, and at most TokensPerMinute tokens are spent, in any
// 60 s window across the fleet. A zero field is no limit on that dimension;
// both zero remove the limit.
type RateLimit struct {
	Model             string
	RequestsPerMinute int
	TokensPerMinute   int
}

// EventRunThrottled: the run waits for its model's rate-limit budget (or a
// provider's pause), {"model","wait_ms"}; it keeps its attempt, and its
// execution timeout does not run meanwhile.
const EventRunThrottled EventType = "run.throttled"
