package siwe

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse feeds Parse hostile text. It must not panic; errors must be
// ErrMalformed and short; and whatever parses must pass Validate and
// round-trip through String.
func FuzzParse(f *testing.F) {
	for _, tc := range roundTripCases {
		m := baseMessage()
		tc.edit(m)
		f.Add(m.String())
	}
	for _, tc := range rejectCases {
		if len(tc.text) <= MaxMessageSize {
			f.Add(tc.text)
		}
	}
	files, _ := filepath.Glob("testdata/messages/*.txt")
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(data))
	}
	f.Add(full)
	f.Fuzz(func(t *testing.T, text string) {
		m, err := Parse(text)
		if err != nil {
			if m != nil || !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse = %v, %v", m, err)
			}
			if len(err.Error()) > 200 {
				t.Fatalf("error echoes too much: %d bytes", len(err.Error()))
			}
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("Parse accepted %q but Validate says %v", text, err)
		}
		s := m.String()
		m2, err := Parse(s)
		if err != nil {
			t.Fatalf("Parse(%q) ok, but its rendering %q does not parse: %v", text, s, err)
		}
		if !equalMessages(m, m2) {
			t.Fatalf("round trip changed the message:\n%+v\n%+v", m, m2)
		}
		if s2 := m2.String(); s2 != s {
			t.Fatalf("rendering is not stable: %q then %q", s, s2)
		}
		// The only difference allowed between a text and its rendering
		// is in how the times are written, which changes no line count.
		if strings.Count(s, "\n") != strings.Count(text, "\n") {
			t.Fatalf("rendering has a different layout: %q vs %q", text, s)
		}
	})
}

// FuzzRecover feeds Recover and VerifyText hostile signatures. They must not
// panic, must fail with the documented errors, and must not accept a
// malleable signature.
func FuzzRecover(f *testing.F) {
	v, key, _, sig := loadWeb3Vector(f)
	f.Add([]byte(v.Message), sig)
	f.Add([]byte(v.Message), flipS(sig))
	f.Add([]byte(v.Message), sig[:64])
	f.Add([]byte{}, make([]byte, 65))
	f.Add([]byte(v.Message), bytes.Repeat([]byte{0xff}, 65))
	text := baseMessage().String()
	f.Add([]byte(text), Sign(key, []byte(text)))
	f.Fuzz(func(t *testing.T, msg, sig []byte) {
		addr, err := Recover(msg, sig)
		if err != nil {
			if addr != "" || !errors.Is(err, ErrSignature) {
				t.Fatalf("Recover = %q, %v", addr, err)
			}
		} else {
			if len(addr) != 42 || addr != strings.ToLower(addr) || ValidateAddress(addr) != nil {
				t.Fatalf("Recover returned address %q", addr)
			}
			if _, err := Recover(msg, flipS(sig)); err == nil {
				t.Fatalf("both s and n-s accepted")
			}
		}
		m, wallet, err := VerifyText(string(msg), sig)
		if err != nil {
			if m != nil || wallet != "" {
				t.Fatalf("VerifyText returned values with error %v", err)
			}
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrSignature) && !errors.Is(err, ErrAddressMismatch) {
				t.Fatalf("VerifyText error %v is of no documented kind", err)
			}
			return
		}
		if wallet != addr || wallet != strings.ToLower(m.Address) {
			t.Fatalf("VerifyText = %q, Recover = %q, address %q", wallet, addr, m.Address)
		}
	})
}
