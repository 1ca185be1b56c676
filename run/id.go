package run

import (
	"fmt"
	"unicode"
	"unicode/utf8"
)

// MaxIDLength is the longest run id kern accepts, in bytes.
const MaxIDLength = 255

// ValidateID checks a caller-chosen run id: 1 to MaxIDLength bytes of valid
// UTF-8 with no control characters, and not "." or "..", which no URL path
// can name. The error wraps ErrInvalidArgument.
func ValidateID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("kern: %w: run id is empty", ErrInvalidArgument)
	case len(id) > MaxIDLength:
		return fmt.Errorf("kern: %w: run id is %d bytes, more than %d", ErrInvalidArgument, len(id), MaxIDLength)
	case !utf8.ValidString(id):
		return fmt.Errorf("kern: %w: run id is not valid UTF-8", ErrInvalidArgument)
	case id == "." || id == "..":
		// A URL path segment of "." or ".." means "this" or "up" to every
		// browser and router, even escaped: no API route could name it.
		return fmt.Errorf("kern: %w: run id %q is not allowed", ErrInvalidArgument, id)
	}
	for _, r := range id {
		if unicode.IsControl(r) {
			return fmt.Errorf("kern: %w: run id contains control character %U", ErrInvalidArgument, r)
		}
	}
	return nil
}
