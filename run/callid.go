package run

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxToolCallIDLength is the longest tool call id kern stores, in bytes.
// Providers' ids are far shorter ("call_" and 24 characters at OpenAI).
const MaxToolCallIDLength = 128

// ValidateToolCallID checks a tool call id: 1 to MaxToolCallIDLength bytes
// of valid UTF-8 without control characters, '/', '?', '#', '%' or '\',
// and not "." or "..". A call id is a path segment of the answer routes
// (/v1/runs/{run_id}/tool-calls/{call_id}/approve) and of the dashboard's
// forms: these are the characters that, even escaped, a browser or proxy
// may read as structure (a ".." segment climbs to another run's call), so
// ids holding them are never stored (the agent loop replaces such a
// model-given id with its own "call_<turn>_<index>") and never answered.
// The error wraps ErrInvalidArgument.
func ValidateToolCallID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("kern: %w: tool call id is empty", ErrInvalidArgument)
	case len(id) > MaxToolCallIDLength:
		return fmt.Errorf("kern: %w: tool call id is %d bytes, more than %d", ErrInvalidArgument, len(id), MaxToolCallIDLength)
	case !utf8.ValidString(id):
		return fmt.Errorf("kern: %w: tool call id is not valid UTF-8", ErrInvalidArgument)
	case id == "." || id == "..":
		return fmt.Errorf("kern: %w: tool call id %q is a relative path segment", ErrInvalidArgument, id)
	case strings.ContainsAny(id, `/?#%\`):
		return fmt.Errorf("kern: %w: tool call id %q contains one of / ? # %% \\", ErrInvalidArgument, id)
	}
	for _, r := range id {
		if unicode.IsControl(r) {
			return fmt.Errorf("kern: %w: tool call id contains control character %U", ErrInvalidArgument, r)
		}
	}
	return nil
}
