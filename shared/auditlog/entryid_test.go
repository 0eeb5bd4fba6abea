package auditlog

import (
	"errors"
	"strings"
	"testing"
)

func TestEntryID(t *testing.T) {
	for _, tc := range []struct {
		name  string
		index int64
		want  string
	}{
		{"", 0, "0"},
		{"", 5, "5"},
		{"", 9223372036854775807, "9223372036854775807"},
		{"host-a", 5, "host-a/5"},
		{"0", 0, "0/0"},
		{strings.Repeat("a", 63), 9223372036854775807, strings.Repeat("a", 63) + "/9223372036854775807"},
	} {
		got := EntryID(tc.name, tc.index)
		if got != tc.want {
			t.Errorf("EntryID(%q, %d) = %q, want %q", tc.name, tc.index, got, tc.want)
		}
		name, index, err := ParseEntryID(got)
		if err != nil || name != tc.name || index != tc.index {
			t.Errorf("ParseEntryID(%q) = %q, %d, %v", got, name, index, err)
		}
		if len(got) > MaxEntryIDLen || len(got) > MaxIDLen {
			t.Errorf("EntryID(%q, %d) is %d bytes, more than MaxEntryIDLen %d", tc.name, tc.index, len(got), MaxEntryIDLen)
		}
	}
}

func TestParseEntryIDRefuses(t *testing.T) {
	for _, s := range []string{
		"", "/", "/5", "host-a/", "host-a", "05", "-5", "+5", " 5", "5 ", "5\n", "0x5", "1e3", "5.0",
		"host-a/05", "host-a/-5", "host-a/+5", "Host-A/5", "-host/5", "host_a/5", "host.a/5", "a/b/5", "host-a//5",
		"host-a/5/", strings.Repeat("a", 64) + "/5", "9223372036854775808", "host-a/9223372036854775808",
		"é/5", "host-a/٥", strings.Repeat("1", 1000),
	} {
		if name, index, err := ParseEntryID(s); err == nil {
			t.Errorf("ParseEntryID(%q) = %q, %d, want an error", s, name, index)
		} else if !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseEntryID(%q): %v does not wrap ErrInvalid", s, err)
		}
	}
}

// TestValidateNamedJTI: an entry's JTI may name a log, and must be an entry id.
func TestValidateNamedJTI(t *testing.T) {
	e := mintEntry()
	for jti, ok := range map[string]bool{"41": true, "host-a/41": true, "host-a/041": false, "Host/41": false, "/41": false, "41/host-a": false} {
		e.JTI = jti
		if err := e.Validate(); (err == nil) != ok {
			t.Errorf("Validate with jti %q: %v, want ok %v", jti, err, ok)
		}
	}
}

// FuzzParseEntryID: ParseEntryID never panics, and what it accepts is exactly
// what EntryID writes for the parsed name and index.
func FuzzParseEntryID(f *testing.F) {
	for _, s := range []string{"0", "5", "host-a/5", "host-a/05", "/5", "a/b/5", "9223372036854775807", "-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		name, index, err := ParseEntryID(s)
		if err != nil {
			return
		}
		if CheckLogName(name) != nil || index < 0 {
			t.Fatalf("ParseEntryID(%q) = %q, %d: not a log name and index", s, name, index)
		}
		if again := EntryID(name, index); again != s {
			t.Fatalf("ParseEntryID(%q) = %q, %d, which EntryID writes as %q", s, name, index, again)
		}
	})
}
