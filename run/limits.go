package run

// MaxInputBytes is the largest prompt kern accepts, in bytes: a run's
// input and a schedule's prompt alike, from the Go API, the HTTP API or
// the CLI. The database layer refuses a larger one with
// ErrInvalidArgument, and the CLI says so before it writes anything. The
// HTTP API's default body bound (server.DefaultMaxBodyBytes) is the same
// size, so there a prompt that near the limit is refused as too large a
// body (413) already.
const MaxInputBytes = 1 << 20
