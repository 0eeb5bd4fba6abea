package tlogproof

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

var update = flag.Bool("update", false, "rewrite testdata/proof.tlog-proof")

// testSigner is a note signer with a fixed key, so the golden file is stable
// (Ed25519 signatures are deterministic).
func testSigner(t testing.TB) (note.Signer, note.Verifier) {
	seed := sha256.Sum256([]byte("tlogproof test key"))
	name := "broker.example.com/audit"
	pub := ed25519.NewKeyFromSeed(seed[:]).Public().(ed25519.PublicKey)
	h := sha256.New()
	h.Write([]byte(name + "\n"))
	h.Write(append([]byte{1}, pub...))
	hash := binary.BigEndian.Uint32(h.Sum(nil))
	skey := fmt.Sprintf("PRIVATE+KEY+%s+%08x+%s", name, hash, base64.StdEncoding.EncodeToString(append([]byte{1}, seed[:]...)))
	vkey := fmt.Sprintf("%s+%08x+%s", name, hash, base64.StdEncoding.EncodeToString(append([]byte{1}, pub...)))
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return s, v
}

// buildProof returns the proof of entry index in a tree of n entries
// "entry 0", "entry 1", ….
func buildProof(t testing.TB, n, index int64) Proof {
	var hashes []tlog.Hash
	for i := range n {
		hs, err := tlog.StoredHashes(i, []byte(fmt.Sprintf("entry %d", i)), tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
			out := make([]tlog.Hash, len(idx))
			for j, x := range idx {
				out[j] = hashes[x]
			}
			return out, nil
		}))
		if err != nil {
			t.Fatal(err)
		}
		hashes = append(hashes, hs...)
	}
	r := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for j, x := range idx {
			out[j] = hashes[x]
		}
		return out, nil
	})
	root, err := tlog.TreeHash(n, r)
	if err != nil {
		t.Fatal(err)
	}
	rp, err := tlog.ProveRecord(n, index, r)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := testSigner(t)
	cp, err := note.Sign(&note.Note{Text: fmt.Sprintf("broker.example.com/audit\n%d\n%s\n", n, root)}, s)
	if err != nil {
		t.Fatal(err)
	}
	return Proof{Index: index, Hashes: rp, Checkpoint: cp}
}

func TestGolden(t *testing.T) {
	const path = "testdata/proof.tlog-proof"
	if *update {
		if err := os.WriteFile(path, buildProof(t, 13, 6).Marshal(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p.Marshal(), data) {
		t.Errorf("Marshal(Parse(golden)) differs from golden:\n%s", p.Marshal())
	}
	_, v := testSigner(t)
	n, err := note.Open(p.Checkpoint, note.VerifierList(v))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(n.Text, "\n")
	root, err := tlog.ParseHash(lines[2])
	if err != nil {
		t.Fatal(err)
	}
	if p.Index != 6 || len(p.Hashes) != 4 || lines[1] != "13" {
		t.Fatalf("index %d, %d hashes, size %s", p.Index, len(p.Hashes), lines[1])
	}
	leaf := tlog.RecordHash([]byte("entry 6"))
	if err := tlog.CheckRecord(p.Hashes, 13, root, 6, leaf); err != nil {
		t.Errorf("golden proof does not verify: %v", err)
	}
	if err := tlog.CheckRecord(p.Hashes, 13, root, 6, tlog.RecordHash([]byte("entry 7"))); err == nil {
		t.Error("golden proof verifies another entry")
	}
}

func TestRoundTrip(t *testing.T) {
	for _, c := range []struct{ n, i int64 }{{1, 0}, {2, 1}, {256, 255}, {257, 256}, {1000, 17}} {
		p := buildProof(t, c.n, c.i)
		q, err := Parse(p.Marshal())
		if err != nil {
			t.Fatalf("n=%d i=%d: %v", c.n, c.i, err)
		}
		if q.Index != p.Index || len(q.Hashes) != len(p.Hashes) || !bytes.Equal(q.Checkpoint, p.Checkpoint) {
			t.Fatalf("n=%d i=%d: round trip changed the proof", c.n, c.i)
		}
		for k := range p.Hashes {
			if p.Hashes[k] != q.Hashes[k] {
				t.Fatalf("n=%d i=%d: hash %d changed", c.n, c.i, k)
			}
		}
	}
}

func TestParseErrors(t *testing.T) {
	h := base64.StdEncoding.EncodeToString(make([]byte, 32))
	cp := "o\n1\n" + h + "\n\n— o AAAA\n"
	for _, c := range []struct{ name, in string }{
		{"empty", ""},
		{"bad header", "c2sp.org/tlog-proof@v2\nindex 0\n\n" + cp},
		{"no index", Header + "\n\n" + cp},
		{"leading zero", Header + "\nindex 01\n\n" + cp},
		{"negative", Header + "\nindex -1\n\n" + cp},
		{"plus", Header + "\nindex +1\n\n" + cp},
		{"short hash", Header + "\nindex 0\nAAAA\n\n" + cp},
		{"non-canonical base64", Header + "\nindex 0\n" + h[:42] + "B=\n\n" + cp},
		{"no blank line", Header + "\nindex 0\n" + h},
		{"no checkpoint", Header + "\nindex 0\n\n"},
		{"empty extra", Header + "\nextra \nindex 0\n\n" + cp},
		{"bad extra", Header + "\nextra !!\nindex 0\n\n" + cp},
		{"too many hashes", Header + "\nindex 0\n" + strings.Repeat(h+"\n", 64) + "\n" + cp},
		{"too long", Header + "\nindex 0\n\n" + cp + strings.Repeat("x", MaxSize)},
	} {
		if _, err := Parse([]byte(c.in)); err == nil {
			t.Errorf("%s: Parse accepted %q", c.name, c.in)
		}
	}
	p, err := Parse([]byte(Header + "\nextra AQID\nindex 0\n\n" + cp))
	if err != nil || p.Index != 0 || string(p.Checkpoint) != cp {
		t.Errorf("extra line: %v, %+v", err, p)
	}
}

func FuzzParse(f *testing.F) {
	if data, err := os.ReadFile("testdata/proof.tlog-proof"); err == nil {
		f.Add(data)
	}
	f.Add([]byte(Header + "\nextra AQID\nindex 0\n\nx"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data)
		if err != nil {
			return
		}
		q, err := Parse(p.Marshal())
		if err != nil {
			t.Fatalf("Parse(Marshal(p)) failed: %v", err)
		}
		if !bytes.Equal(q.Marshal(), p.Marshal()) {
			t.Fatal("Marshal is not stable")
		}
	})
}
