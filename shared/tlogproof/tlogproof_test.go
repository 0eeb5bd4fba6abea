package tlogproof

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/agentkeys/broker/shared/auditlog"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

type hashes map[int64]tlog.Hash

func (h hashes) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		v, ok := h[x]
		if !ok {
			return nil, fmt.Errorf("no hash %d", x)
		}
		out[i] = v
	}
	return out, nil
}

// vector builds a log of 13 fixed entries, signs its checkpoint with a key
// from a fixed seed, and proves entry 5.
func vector(t *testing.T) (Proof, []byte, note.Verifier) {
	t.Helper()
	const origin = "broker.example.com/audit"
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32))
	vkey, _ := note.NewEd25519VerifierKey(origin, priv.Public().(ed25519.PublicKey))
	verifier, _ := note.NewVerifier(vkey)
	// A signer key is "PRIVATE+KEY+name+hash+base64(0x01 || seed)".
	hash := strings.Split(vkey, "+")[1]
	signer, err := note.NewSigner("PRIVATE+KEY+" + origin + "+" + hash + "+" + base64.StdEncoding.EncodeToString(append([]byte{1}, priv.Seed()...)))
	if err != nil {
		t.Fatal(err)
	}
	h := hashes{}
	var entries [][]byte
	for i := range int64(13) {
		e := fmt.Appendf(nil, "entry %d", i)
		entries = append(entries, e)
		sh, err := tlog.StoredHashes(i, e, h)
		if err != nil {
			t.Fatal(err)
		}
		for j, v := range sh {
			h[tlog.StoredHashIndex(0, i)+int64(j)] = v
		}
	}
	root, _ := tlog.TreeHash(13, h)
	cp, err := note.Sign(&note.Note{Text: auditlog.Checkpoint{Origin: origin, Tree: tlog.Tree{N: 13, Hash: root}}.Format()}, signer)
	if err != nil {
		t.Fatal(err)
	}
	proof, err := tlog.ProveRecord(13, 5, h)
	if err != nil {
		t.Fatal(err)
	}
	return Proof{Index: 5, Hashes: proof, Checkpoint: cp}, entries[5], verifier
}

// TestGolden: the encoding of a fixed proof is fixed, parses back to the
// same proof, and verifies the way the package doc says.
func TestGolden(t *testing.T) {
	p, entry, verifier := vector(t)
	got := p.Marshal()
	path := filepath.Join("testdata", "entry5-of-13.tlog-proof")
	if *update {
		os.WriteFile(path, got, 0o644)
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("encoding changed:\n%s\nwant\n%s", got, want)
	}
	back, err := Parse(want)
	if err != nil || !reflect.DeepEqual(back, p) {
		t.Fatalf("Parse: %v\n%+v", err, back)
	}
	n, err := note.Open(back.Checkpoint, note.VerifierList(verifier))
	if err != nil {
		t.Fatal(err)
	}
	c, err := auditlog.ParseCheckpoint(n.Text)
	if err != nil {
		t.Fatal(err)
	}
	tree := c.Tree
	if err := tlog.CheckRecord(back.Hashes, tree.N, tree.Hash, back.Index, tlog.RecordHash(entry)); err != nil {
		t.Fatal(err)
	}
	if err := tlog.CheckRecord(back.Hashes, tree.N, tree.Hash, back.Index, tlog.RecordHash([]byte("entry 6"))); err == nil {
		t.Fatal("the proof of entry 5 proves entry 6")
	}
}

func TestExtra(t *testing.T) {
	p, _, _ := vector(t)
	p.Extra = []byte("context")
	b := p.Marshal()
	if !bytes.HasPrefix(b, []byte(Header+"\nextra Y29udGV4dA==\nindex 5\n")) {
		t.Fatalf("%s", b)
	}
	back, err := Parse(b)
	if err != nil || !reflect.DeepEqual(back, p) {
		t.Fatalf("Parse: %v %+v", err, back)
	}
}

func TestParseRefuses(t *testing.T) {
	p, _, _ := vector(t)
	s := string(p.Marshal())
	h0 := strings.Split(s, "\n")[2]
	for name, b := range map[string]string{
		"header":         strings.Replace(s, Header, "c2sp.org/tlog-proof@v2", 1),
		"no index":       strings.Replace(s, "index 5\n", "", 1),
		"leading zero":   strings.Replace(s, "index 5", "index 05", 1),
		"negative":       strings.Replace(s, "index 5", "index -5", 1),
		"plus":           strings.Replace(s, "index 5", "index +5", 1),
		"short hash":     strings.Replace(s, h0, h0[:40], 1),
		"unpadded hash":  strings.Replace(s, h0, strings.TrimRight(h0, "="), 1),
		"no empty line":  strings.Replace(s, "\n\n", "\n", 1),
		"no checkpoint":  s[:strings.Index(s, "\n\n")+2],
		"no final nl":    strings.TrimSuffix(s, "\n"),
		"bad extra":      strings.Replace(s, "index 5", "extra !!\nindex 5", 1),
		"extra after":    strings.Replace(s, "index 5", "index 5\nextra AA==", 1),
		"empty":          "",
		"header only":    Header,
		"crlf":           strings.Replace(s, "index 5\n", "index 5\r\n", 1),
		"space in index": strings.Replace(s, "index 5", "index  5", 1),
	} {
		if _, err := Parse([]byte(b)); err == nil {
			t.Errorf("%s: accepted %q", name, b)
		}
	}
	many := Header + "\nindex 0\n" + strings.Repeat(h0+"\n", MaxHashes+1) + "\nx\n"
	if _, err := Parse([]byte(many)); err == nil {
		t.Error("accepted more than MaxHashes hashes")
	}
}

// FuzzParse: Parse never panics, and what it accepts re-encodes to the same
// bytes (one encoding per proof).
func FuzzParse(f *testing.F) {
	f.Add([]byte(Header + "\nindex 0\n\nx\n"))
	f.Add([]byte(Header + "\nextra AA==\nindex 3\ngSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=\n\nlog\n3\nroot\n\n— log sig\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(b)
		if err != nil {
			return
		}
		if again := p.Marshal(); !bytes.Equal(again, b) {
			t.Fatalf("accepted %q, re-encodes to %q", b, again)
		}
	})
}
