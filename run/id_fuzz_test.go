package run_test

import (
	"errors"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/kern-go/kern/run"
)

func FuzzValidateID(f *testing.F) {
	for _, seed := range []string{
		"", "a", "run-1", "01HZX3K4", "héllo", "🙂", "\u202eevil", "e\u0301",
		"\x00", "a\x00b", "\x7f", "\u0085", "\t", "a\nb", "\xff", "\xc3", "\xed\xa0\x80",
		strings.Repeat("a", run.MaxIDLength), strings.Repeat("a", run.MaxIDLength+1),
		strings.Repeat("é", 127) + "a", strings.Repeat("é", 128),
		"'; DROP TABLE kern_run; --", ".", "..", "...", "a/..",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, id string) {
		err := run.ValidateID(id)
		if err != nil {
			if !errors.Is(err, run.ErrInvalidArgument) {
				t.Fatalf("ValidateID(%q) = %v, not wrapping ErrInvalidArgument", id, err)
			}
			if err.Error() == "" {
				t.Fatalf("ValidateID(%q) returned an empty error message", id)
			}
			return
		}
		if len(id) < 1 || len(id) > run.MaxIDLength {
			t.Fatalf("ValidateID accepted a %d-byte id %q", len(id), id)
		}
		if !utf8.ValidString(id) {
			t.Fatalf("ValidateID accepted invalid UTF-8 %q", id)
		}
		if id == "." || id == ".." {
			t.Fatalf("ValidateID accepted %q, which no URL can name", id)
		}
		for _, r := range id {
			if unicode.IsControl(r) {
				t.Fatalf("ValidateID accepted control character %U in %q", r, id)
			}
		}
	})
}
