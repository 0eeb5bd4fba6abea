package attest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/golang-jwt/jwt/v5"

	"github.com/agentkeys/broker/enclave/attester"
	"github.com/agentkeys/broker/shared/jwk"
	"github.com/agentkeys/broker/shared/manifest"
	"github.com/agentkeys/broker/shared/policy"
)

// realDocTime is the timestamp of testdata/nitro-attestation-2026.b64.
var realDocTime = time.UnixMilli(0x19c2018e1ae)

func readRealDoc(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/nitro-attestation-2026.b64")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := DecodeDocumentFile(b)
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

// testManifest is a valid manifest for issuer with one fresh signing key.
type testManifest struct {
	bytes []byte
	m     manifest.Manifest
	key   *ecdsa.PrivateKey
	// tlsKey is the issuer origin's TLS key with issuer_origin enclave.
	tlsKey *ecdsa.PrivateKey
}

func newTestManifest(t testing.TB, issuer, origin string) testManifest {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := jwk.FromP256(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pol := policy.Default(issuer)
	if err := pol.Normalize(); err != nil {
		t.Fatal(err)
	}
	m := manifest.Manifest{
		Version: manifest.Version, Mode: manifest.ModeSimulated, Issuer: pol.Issuer, IssuerOrigin: origin,
		Policy: pol, PolicyDigest: pol.Digest(),
		IssuerKeys:            []manifest.IssuerKey{{Label: pol.SigningKey, Kid: k.Kid, Signs: true, JWK: k}},
		CheckpointVerifierKey: "issuer.example/audit+00000000+AQ",
	}
	var tlsKey *ecdsa.PrivateKey
	if origin == manifest.OriginEnclave {
		if tlsKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			t.Fatal(err)
		}
		der, _ := x509.MarshalPKIXPublicKey(&tlsKey.PublicKey)
		sum := sha256.Sum256(der)
		m.IssuerOriginTLSSPKISHA256 = hex.EncodeToString(sum[:])
		m.ACMEAccountKeyThumbprint = k.Kid // any RFC 7638 thumbprint
	}
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return testManifest{bytes: b, m: m, key: key, tlsKey: tlsKey}
}

func (tm testManifest) jwks() jwk.Set { return jwk.Set{Keys: []jwk.Key{tm.m.IssuerKeys[0].JWK}} }

func (tm testManifest) jwt(t testing.TB, iss string) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{"iss": iss, "sub": "0xabc", "exp": time.Now().Add(time.Hour).Unix()})
	tok.Header["kid"] = tm.m.IssuerKeys[0].Kid
	s, err := tok.SignedString(tm.key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (tm testManifest) digest() []byte {
	s := sha256.Sum256(tm.bytes)
	return s[:]
}

// newSimulated is the enclave's simulated attester with a fresh root.
func newSimulated(t testing.TB) *attester.Simulated {
	t.Helper()
	dir := t.TempDir()
	exe := filepath.Join(dir, "enclave")
	if err := os.WriteFile(exe, []byte("a stand-in enclave binary"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := attester.NewSimulated(attester.SimulatedOptions{StateDir: filepath.Join(dir, "state"), Executable: exe, AppData: []byte("policy")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func rootPool(t testing.TB, pemBytes []byte) *x509.CertPool {
	t.Helper()
	c, err := ParseRootPEM(pemBytes)
	if err != nil {
		t.Fatal(err)
	}
	p := x509.NewCertPool()
	p.AddCert(c)
	return p
}

// forger builds attestation documents the simulated attester would never
// make: other leaf curves, chosen validity, chosen PCRs and timestamps. Its
// root is P-384 like AWS's.
type forger struct {
	key  *ecdsa.PrivateKey
	root *x509.Certificate
}

func newForger(t testing.TB) *forger {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "forger root"},
		NotBefore: time.Unix(0, 0), NotAfter: time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		SignatureAlgorithm: x509.ECDSAWithSHA384,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(der)
	return &forger{key: key, root: root}
}

func (f *forger) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(f.root)
	return p
}

type forgeOpts struct {
	curve               elliptic.Curve // leaf curve, default P-384
	notBefore, notAfter time.Time      // leaf validity, default ts±3h
	ts                  time.Time      // document timestamp, default now
	pcrs                map[uint][]byte
	userData, nonce     []byte
}

// goodPCRs are 16 non-zero PCRs.
func goodPCRs() map[uint][]byte {
	p := map[uint][]byte{}
	for i := range uint(16) {
		p[i] = make([]byte, 48)
		if i <= 2 {
			for j := range p[i] {
				p[i][j] = byte(i + 1)
			}
		}
	}
	return p
}

func (f *forger) doc(t testing.TB, o forgeOpts) []byte {
	t.Helper()
	if o.curve == nil {
		o.curve = elliptic.P384()
	}
	if o.ts.IsZero() {
		o.ts = time.Now()
	}
	if o.notBefore.IsZero() {
		o.notBefore = o.ts.Add(-time.Hour)
	}
	if o.notAfter.IsZero() {
		o.notAfter = o.ts.Add(3 * time.Hour)
	}
	if o.pcrs == nil {
		o.pcrs = goodPCRs()
	}
	leafKey, err := ecdsa.GenerateKey(o.curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "forged leaf"},
		NotBefore: o.notBefore, NotAfter: o.notAfter, SignatureAlgorithm: x509.ECDSAWithSHA384,
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	leaf, err := x509.CreateCertificate(rand.Reader, tmpl, f.root, &leafKey.PublicKey, f.key)
	if err != nil {
		t.Fatal(err)
	}
	p, err := cbor.Marshal(payload{
		ModuleID: "i-forged-enc0000", Timestamp: uint64(o.ts.UnixMilli()), Digest: "SHA384",
		PCRs: o.pcrs, Certificate: leaf, CABundle: [][]byte{f.root.Raw},
		UserData: o.userData, Nonce: o.nonce,
	})
	if err != nil {
		t.Fatal(err)
	}
	protected := []byte{0xa1, 0x01, 0x38, 0x22}
	sigStruct, err := cbor.Marshal([]any{"Signature1", protected, []byte{}, p})
	if err != nil {
		t.Fatal(err)
	}
	var digest []byte
	switch o.curve {
	case elliptic.P521():
		h := sha512.Sum512(sigStruct)
		digest = h[:]
	case elliptic.P256():
		h := sha256.Sum256(sigStruct)
		digest = h[:]
	default:
		h := sha512.Sum384(sigStruct)
		digest = h[:]
	}
	r, s, err := ecdsa.Sign(rand.Reader, leafKey, digest)
	if err != nil {
		t.Fatal(err)
	}
	n := (o.curve.Params().BitSize + 7) / 8
	sig := make([]byte, 2*n)
	r.FillBytes(sig[:n])
	s.FillBytes(sig[n:])
	doc, err := cbor.Marshal([]any{protected, map[any]any{}, p, sig})
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
