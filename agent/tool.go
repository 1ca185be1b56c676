package agent

import (
	"context"
	"encoding/json"
)

// Tool is a function the model may call. Tool calling in a loop arrives
// with a later release; the type is part of the API already, but an Agent
// with Tools is refused with run.ErrInvalidArgument until then, rather than
// run without them.
type Tool struct {
	Name        string
	Description string
	Parameters  map[string]any // JSON Schema of the arguments object
	// Call runs the tool. ctx is cancelled with the run.
	Call func(ctx context.Context, args json.RawMessage) (string, error)
}
