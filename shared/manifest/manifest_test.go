package manifest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentkeys/broker/shared/jwk"
	"github.com/agentkeys/broker/shared/policy"
)

var update = flag.Bool("update", false, "rewrite testdata/manifest.json")

// key returns the JWK of the P-256 key with scalar d (fixed bytes, for a
// reproducible vector).
func key(t testing.TB, d byte) jwk.Key {
	t.Helper()
	scalar := bytes.Repeat([]byte{d}, 32)
	priv, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), scalar)
	if err != nil {
		t.Fatal(err)
	}
	k, err := jwk.FromP256(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// example is a manifest in the middle of a rotation: v1 and v2 published, v2
// signs; the enclave serves the issuer origin.
func example(t testing.TB) Manifest {
	p := policy.Default("https://broker.example.com")
	p.IssuerKeys, p.SigningKey = []string{"oidc/issuer/v1", "oidc/issuer/v2"}, "oidc/issuer/v2"
	p.APIURL = "https://api.broker.example.com"
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	k1, k2 := key(t, 1), key(t, 2)
	return Manifest{
		Version:      Version,
		Mode:         ModeSimulated,
		Issuer:       p.Issuer,
		IssuerOrigin: OriginEnclave,
		Policy:       p,
		PolicyDigest: p.Digest(),
		IssuerKeys: []IssuerKey{
			{Label: "oidc/issuer/v1", Kid: k1.Kid, Signs: false, JWK: k1},
			{Label: "oidc/issuer/v2", Kid: k2.Kid, Signs: true, JWK: k2},
		},
		CheckpointVerifierKey:     "broker.example.com/audit+0e1bdb4b+AVSeP8Yb6bk1WTiT5c+ohv1qZuDVEk7E4d4tsqAT0O9d",
		IssuerOriginTLSSPKISHA256: "5b0f4a1c3e5d7f90a2b4c6d8e0f1a3b5c7d9e1f3a5b7c9d1e3f5a7b9c1d3e5f7",
		ACMEAccountKeyThumbprint:  key(t, 3).Kid,
	}
}

// TestGolden pins the manifest's exact bytes: auditors hash what they are
// served, so a change in field order or escaping changes every document's
// user_data.
func TestGolden(t *testing.T) {
	got, err := example(t).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "manifest.json")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Marshal = %s\nwant      %s", got, want)
	}
	m, err := Parse(want)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := m.Marshal()
	if !bytes.Equal(again, want) {
		t.Fatal("Parse then Marshal does not give the same bytes")
	}
	if m.Signer().Label != "oidc/issuer/v2" || len(m.Kids()) != 2 {
		t.Fatalf("signer %+v, kids %v", m.Signer(), m.Kids())
	}
	if d := DigestHex(want); len(d) != 64 {
		t.Fatalf("digest %q", d)
	}
}

func TestInvalid(t *testing.T) {
	for _, tc := range []struct {
		name   string
		adjust func(*Manifest)
		want   string
	}{
		{"version", func(m *Manifest) { m.Version = 2 }, "version"},
		{"mode", func(m *Manifest) { m.Mode = "debug" }, "mode"},
		{"origin", func(m *Manifest) { m.IssuerOrigin = "" }, "issuer_origin"},
		{"digest", func(m *Manifest) { m.PolicyDigest = strings.Repeat("0", 64) }, "policy_digest"},
		{"issuer", func(m *Manifest) { m.Issuer = "https://evil.example" }, "issuer"},
		{"key count", func(m *Manifest) { m.IssuerKeys = m.IssuerKeys[:1] }, "lists 1 issuer keys"},
		{"label", func(m *Manifest) { m.IssuerKeys[0].Label = "oidc/issuer/v9" }, "policy lists"},
		{"kid", func(m *Manifest) { m.IssuerKeys[0].Kid = m.IssuerKeys[1].Kid }, "thumbprint"},
		{"jwk swapped", func(m *Manifest) { m.IssuerKeys[0].JWK = m.IssuerKeys[1].JWK }, "thumbprint"},
		{"two signers", func(m *Manifest) { m.IssuerKeys[0].Signs = true }, "signs=true"},
		{"no signer", func(m *Manifest) { m.IssuerKeys[1].Signs = false }, "signs=false"},
		{"no checkpoint key", func(m *Manifest) { m.CheckpointVerifierKey = "" }, "checkpoint"},
		{"enclave origin without tls key", func(m *Manifest) { m.IssuerOriginTLSSPKISHA256 = "" }, "issuer_origin_tls_spki_sha256"},
		{"tls key in capitals", func(m *Manifest) { m.IssuerOriginTLSSPKISHA256 = strings.ToUpper(m.IssuerOriginTLSSPKISHA256) }, "issuer_origin_tls_spki_sha256"},
		{"enclave origin without account key", func(m *Manifest) { m.ACMEAccountKeyThumbprint = "" }, "acme_account_key_thumbprint"},
		{"account key not a thumbprint", func(m *Manifest) { m.ACMEAccountKeyThumbprint = "x" }, "acme_account_key_thumbprint"},
		{"host origin with tls key", func(m *Manifest) { m.IssuerOrigin = OriginHost; m.ACMEAccountKeyThumbprint = "" }, "only for issuer_origin enclave"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := example(t)
			m.IssuerKeys = append([]IssuerKey(nil), m.IssuerKeys...)
			tc.adjust(&m)
			if _, err := m.Marshal(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Marshal: %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func TestParseStrict(t *testing.T) {
	good, err := example(t).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{
		"unknown field": bytes.Replace(good, []byte(`{"version":1,`), []byte(`{"version":1,"extra":true,`), 1),
		"trailing":      append(append([]byte(nil), good...), []byte(`{}`)...),
		"oversize":      append(bytes.Repeat([]byte(" "), MaxSize), good...),
		"not json":      []byte("version=1"),
	} {
		if _, err := Parse(b); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

func FuzzParse(f *testing.F) {
	good, err := example(f).Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"version":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil {
			return
		}
		// Whatever parses is valid, and encodes again.
		if _, err := m.Marshal(); err != nil {
			t.Fatalf("parsed manifest does not encode: %v", err)
		}
	})
}
