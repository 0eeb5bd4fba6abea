package witness

import (
	"crypto/ed25519"
	"crypto/sha256"
	"net/http"
	"strings"
	"testing"

	"filippo.io/torchwood"
	"golang.org/x/mod/sumdb/note"

	"github.com/agentkeys/broker/host/tiles/tilestest"
	"github.com/agentkeys/broker/shared/tlogproof"
)

// FuzzParseResponse feeds parseResponse arbitrary witness answers: it must
// never panic, and what it keeps from a 200 must verify with the witness key
// over the submitted checkpoint.
func FuzzParseResponse(f *testing.F) {
	seed := sha256.Sum256([]byte("fuzz witness"))
	s, err := torchwood.NewCosignatureSigner("w.example", ed25519.NewKeyFromSeed(seed[:]))
	if err != nil {
		f.Fatal(err)
	}
	v, err := tlogproof.NewCosignatureVerifier(s.Verifier().String())
	if err != nil {
		f.Fatal(err)
	}
	l := tilestest.New(nil)
	l.AppendN(3)
	cp, _ := l.Checkpoint(f.Context())
	text := string(cp[:strings.Index(string(cp), "\n\n")+1])
	signed, err := note.Sign(&note.Note{Text: text}, s)
	if err != nil {
		f.Fatal(err)
	}
	good := signed[len(text)+1:]
	f.Add(200, good)
	f.Add(409, []byte("3\n"))
	f.Add(409, []byte("-1\n"))
	f.Add(422, []byte("bad proof\n"))
	f.Add(200, []byte("— w.example AAAA\n"))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		sigs, conflict, err := parseResponse(status, body, cp, v)
		if err == nil {
			if status != http.StatusOK || len(sigs) == 0 {
				t.Fatalf("status %d accepted with %d signatures", status, len(sigs))
			}
			for _, sig := range sigs {
				if sig.Name != "w.example" {
					t.Fatalf("kept a signature by %q", sig.Name)
				}
			}
		}
		if conflict >= 0 && status != http.StatusConflict {
			t.Fatalf("conflict %d from status %d", conflict, status)
		}
	})
}

func TestParseWitness(t *testing.T) {
	seed := sha256.Sum256([]byte("parse witness"))
	s, err := torchwood.NewCosignatureSigner("w.example/witness", ed25519.NewKeyFromSeed(seed[:]))
	if err != nil {
		t.Fatal(err)
	}
	key := s.Verifier().String()
	for _, c := range []struct {
		in, url, err string
	}{
		{"https://w.example/w=" + key, "https://w.example/w", ""},
		{"http://127.0.0.1:9/a?b=c=" + key, "http://127.0.0.1:9/a?b=c", ""},
		{" https://w.example = " + key + " ", "https://w.example", ""},
		{"https://w.example", "", "is not URL=VKEY"},
		{"w.example=" + key, "", "is not http(s)"},
		{"https://w.example=" + tilestest.VerifierKey(), "", "not a cosignature/v1"},
		{"https://w.example=", "", "not a cosignature/v1"},
	} {
		w, err := ParseWitness(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseWitness(%q) = %+v, %v; want an error %q", c.in, w, err, c.err)
			}
			continue
		}
		if err != nil || w.URL != c.url || w.VerifierKey != key {
			t.Errorf("ParseWitness(%q) = %+v, %v", c.in, w, err)
		}
	}
}
