package run

// MaxInputBytes is the largest prompt kern accepts, in bytes: a run's
// input and a schedule's prompt alike, from the Go API, the HTTP API or
// the CLI. The database layer refuses a larger one with
// ErrInvalidArgument, and the CLI says so before it writes anything. The
// HTTP API's default body bound (server.DefaultMaxBodyBytes) leaves room
// for such a prompt, so over HTTP too a prompt of MaxInputBytes is
// accepted and a longer one refused as a prompt (400), not as a body.
const MaxInputBytes = 1 << 20
