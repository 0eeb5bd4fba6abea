package tlogproof

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"filippo.io/torchwood"
	"golang.org/x/mod/sumdb/note"
)

// TestCosignatureVerifier checks cosignatures made by torchwood's
// (litewitness's) signer.
func TestCosignatureVerifier(t *testing.T) {
	seed := sha256.Sum256([]byte("witness"))
	s, err := torchwood.NewCosignatureSigner("witness.example/w1", ed25519.NewKeyFromSeed(seed[:]))
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewCosignatureVerifier(s.Verifier().String())
	if err != nil {
		t.Fatal(err)
	}
	if v.Name() != "witness.example/w1" || v.KeyHash() != s.KeyHash() {
		t.Fatalf("name %q hash %08x", v.Name(), v.KeyHash())
	}
	text := "example.com/log\n3\nRcCI1Nk56ZcSmIEfIn0SleqtV7uvrlXNccFx595Iwl0=\n"
	signed, err := note.Sign(&note.Note{Text: text}, s)
	if err != nil {
		t.Fatal(err)
	}
	n, err := note.Open(signed, note.VerifierList(v))
	if err != nil {
		t.Fatal(err)
	}
	if ts, err := CosignatureTime(n.Sigs[0]); err != nil || ts < 1700000000 {
		t.Errorf("timestamp %d, %v", ts, err)
	}
	forged := []byte(strings.Replace(string(signed), "\n3\n", "\n4\n", 1))
	if _, err := note.Open(forged, note.VerifierList(v)); err == nil {
		t.Error("a cosignature verified for another checkpoint")
	}
	for _, bad := range []string{
		"",
		"w+00000000+BAAA",
		ed25519Key(t, "witness.example/w1", seed[:]), // a note (0x01) key
		"other" + s.Verifier().String(),              // hash mismatch
	} {
		if _, err := NewCosignatureVerifier(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func ed25519Key(t *testing.T, name string, seed []byte) string {
	pub := ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)
	key := append([]byte{1}, pub...)
	h := sha256.Sum256(append([]byte(name+"\n"), key...))
	vkey := fmt.Sprintf("%s+%08x+%s", name, binary.BigEndian.Uint32(h[:]), base64.StdEncoding.EncodeToString(key))
	if _, err := note.NewVerifier(vkey); err != nil {
		t.Fatal(err)
	}
	return vkey
}
