package keys

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/golden-labels.json from the current code")

func TestLabelPath(t *testing.T) {
	for _, tt := range []struct {
		label string
		want  []uint32
	}{
		{LabelOIDCIssuer, []uint32{0xcdcdefd0, 0xd35c6f8e, 0xbbfc2695}},
		{LabelSessionJWT, []uint32{0xd35c6f8e, 0xfc93cb07, 0xbbfc2695}},
		{LabelAuditCheckpoint, []uint32{0xb81f37a0, 0xc7320987, 0xbbfc2695}},
		{"oidc/issuer/v2", []uint32{0xcdcdefd0, 0xd35c6f8e, 0xfb04dcb6}},
		{"a", []uint32{0xca978112}},
		{"x.y_z-0", nil}, // checked against the formula only
	} {
		got, err := LabelPath(tt.label)
		if err != nil {
			t.Errorf("LabelPath(%q): %v", tt.label, err)
			continue
		}
		if tt.want != nil && !slices.Equal(got, tt.want) {
			t.Errorf("LabelPath(%q) = %#x, want %#x", tt.label, got, tt.want)
		}
		// The formula, written out independently.
		segs := strings.Split(tt.label, "/")
		if len(got) != len(segs) {
			t.Fatalf("LabelPath(%q) has %d indices for %d segments", tt.label, len(got), len(segs))
		}
		for i, seg := range segs {
			h := sha256.Sum256([]byte(seg))
			want := 0x80000000 | binary.BigEndian.Uint32(h[0:4])&0x7fffffff
			if got[i] != want {
				t.Errorf("LabelPath(%q)[%d] = %#x, want %#x from SHA-256(%q)", tt.label, i, got[i], want, seg)
			}
		}
	}
}

func TestLabelPathErrors(t *testing.T) {
	for _, label := range []string{
		"", "/", "//", "/oidc/issuer/v1", "oidc/issuer/v1/", "oidc//v1",
		"OIDC/issuer/v1", "oidc/issuer/V1", "oidc issuer", "oidc/issuer/v1\n", "oidc\\issuer",
		"oidc/iss+uer", "oidc/éssuer", "oidc/issuer/v1\x00", "\u00a0",
	} {
		if got, err := LabelPath(label); err == nil {
			t.Errorf("LabelPath(%q) = %#x, want an error", label, got)
		}
	}
	if _, err := P256(make([]byte, SeedSize), "Bad"); err == nil {
		t.Error("P256 accepted an invalid label")
	}
	if _, err := Ed25519(make([]byte, SeedSize), ""); err == nil {
		t.Error("Ed25519 accepted an empty label")
	}
}

var labelRE = regexp.MustCompile(`^[a-z0-9._-]+(/[a-z0-9._-]+)*$`)

func FuzzLabelPath(f *testing.F) {
	for _, s := range []string{LabelOIDCIssuer, LabelSessionJWT, LabelAuditCheckpoint, "a", "/a", "a//b", "A"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, label string) {
		path, err := LabelPath(label)
		if valid := labelRE.MatchString(label); valid != (err == nil) {
			t.Fatalf("LabelPath(%q): error %v, but label valid = %v", label, err, valid)
		}
		if err != nil {
			return
		}
		if len(path) != strings.Count(label, "/")+1 {
			t.Fatalf("LabelPath(%q) = %#x: wrong length", label, path)
		}
		for _, index := range path {
			if index < Hardened {
				t.Fatalf("LabelPath(%q) = %#x: not hardened", label, path)
			}
		}
	})
}

// The fixed seed of the golden values: 0x00, 0x01, …, 0x1f.
func goldenSeed() []byte {
	seed := make([]byte, SeedSize)
	for i := range seed {
		seed[i] = byte(i)
	}
	return seed
}

type goldenKey struct {
	Label   string `json:"label"`
	Curve   string `json:"curve"`
	Path    string `json:"path"`
	Private string `json:"private"`            // P-256: scalar; ed25519: 32-byte seed
	PublicX string `json:"public_x,omitempty"` // P-256 only
	PublicY string `json:"public_y,omitempty"` // P-256 only
	Public  string `json:"public,omitempty"`   // ed25519 only: the 32-byte public key
}

type goldenFile struct {
	Description string      `json:"description"`
	Seed        string      `json:"seed"`
	Keys        []goldenKey `json:"keys"`
}

func computeGolden(t *testing.T) goldenFile {
	t.Helper()
	seed := goldenSeed()
	g := goldenFile{
		Description: "Keys derived by enclave/keys from the fixed seed 000102…1f for the three labels. Regenerate with: go test ./enclave/keys/ -run TestGolden -update",
		Seed:        hex.EncodeToString(seed),
	}
	for _, l := range []struct {
		label string
		curve Curve
	}{
		{LabelOIDCIssuer, CurveP256},
		{LabelSessionJWT, CurveP256},
		{LabelAuditCheckpoint, CurveEd25519},
	} {
		path, err := LabelPath(l.label)
		if err != nil {
			t.Fatal(err)
		}
		k := goldenKey{Label: l.label, Curve: l.curve.String(), Path: formatPath(path)}
		switch l.curve {
		case CurveP256:
			priv, err := P256(seed, l.label)
			if err != nil {
				t.Fatal(err)
			}
			d, err := priv.Bytes()
			if err != nil {
				t.Fatal(err)
			}
			u, err := priv.PublicKey.Bytes()
			if err != nil {
				t.Fatal(err)
			}
			k.Private = hex.EncodeToString(d)
			k.PublicX = hex.EncodeToString(u[1:33])
			k.PublicY = hex.EncodeToString(u[33:])
		case CurveEd25519:
			priv, err := Ed25519(seed, l.label)
			if err != nil {
				t.Fatal(err)
			}
			k.Private = hex.EncodeToString(priv.Seed())
			k.Public = hex.EncodeToString(priv.Public().(ed25519.PublicKey))
		}
		g.Keys = append(g.Keys, k)
	}
	return g
}

func TestGolden(t *testing.T) {
	const file = "testdata/golden-labels.json"
	got := computeGolden(t)
	if *update {
		data, err := json.MarshalIndent(got, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, append(data, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	var want goldenFile
	if err := json.Unmarshal(data, &want); err != nil {
		t.Fatal(err)
	}
	if want.Seed != got.Seed || len(want.Keys) != len(got.Keys) {
		t.Fatalf("%s does not describe the fixed seed and three labels", file)
	}
	for i := range got.Keys {
		if got.Keys[i] != want.Keys[i] {
			t.Errorf("label %s:\n got  %+v\n want %+v", got.Keys[i].Label, got.Keys[i], want.Keys[i])
		}
	}

	// DeriveSet must give the same keys.
	set, err := DeriveSet(goldenSeed())
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []struct {
		priv *ecdsa.PrivateKey
		want goldenKey
	}{{set.Issuer, want.Keys[0]}, {set.Session, want.Keys[1]}} {
		d, err := k.priv.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		if hex.EncodeToString(d) != k.want.Private {
			t.Errorf("DeriveSet key for %s differs from the golden value", k.want.Label)
		}
	}
	if hex.EncodeToString(set.Checkpoint.Seed()) != want.Keys[2].Private {
		t.Errorf("DeriveSet checkpoint key differs from the golden value")
	}
}

func TestDeriveSetSeedSize(t *testing.T) {
	for _, size := range []int{0, 16, 31, 33, 64} {
		if _, err := DeriveSet(make([]byte, size)); err == nil {
			t.Errorf("DeriveSet accepted a %d-byte seed", size)
		}
	}
	if _, err := DeriveSet(nil); err == nil {
		t.Error("DeriveSet accepted a nil seed")
	}
}

func TestDistinctKeys(t *testing.T) {
	seed := goldenSeed()
	set, err := DeriveSet(seed)
	if err != nil {
		t.Fatal(err)
	}
	v2, err := P256(seed, "oidc/issuer/v2")
	if err != nil {
		t.Fatal(err)
	}
	other := bytes.Clone(seed)
	other[0] ^= 1
	otherSet, err := DeriveSet(other)
	if err != nil {
		t.Fatal(err)
	}
	p256 := map[string]*ecdsa.PrivateKey{
		"issuer": set.Issuer, "session": set.Session, "issuer v2": v2,
		"issuer, other seed": otherSet.Issuer, "session, other seed": otherSet.Session,
	}
	seen := map[string]string{}
	for name, k := range p256 {
		d, err := k.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		if prev, ok := seen[string(d)]; ok {
			t.Errorf("%s and %s have the same key", name, prev)
		}
		seen[string(d)] = name
	}
	if bytes.Equal(set.Checkpoint, otherSet.Checkpoint) {
		t.Error("checkpoint key does not depend on the seed")
	}

	// The two curves use independent trees: the same label gives unrelated keys.
	path, err := LabelPath(LabelOIDCIssuer)
	if err != nil {
		t.Fatal(err)
	}
	a, err := Derive(CurveP256, seed, path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Derive(CurveEd25519, seed, path)
	if err != nil {
		t.Fatal(err)
	}
	if a.Key == b.Key || a.ChainCode == b.ChainCode {
		t.Error("nist256p1 and ed25519 trees share a key or chain code")
	}

	// The labels in use must map to distinct paths.
	paths := map[string]string{}
	for _, l := range []string{LabelOIDCIssuer, LabelSessionJWT, LabelAuditCheckpoint} {
		p, err := LabelPath(l)
		if err != nil {
			t.Fatal(err)
		}
		if prev, ok := paths[fmt.Sprint(p)]; ok {
			t.Errorf("%s and %s map to the same path", l, prev)
		}
		paths[fmt.Sprint(p)] = l
	}
}

func BenchmarkDeriveSet(b *testing.B) {
	seed := goldenSeed()
	for b.Loop() {
		if _, err := DeriveSet(seed); err != nil {
			b.Fatal(err)
		}
	}
}
