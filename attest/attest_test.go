package attest

import (
	"bytes"
	"crypto/elliptic"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hf/nitrite"

	"github.com/agentkeys/broker/shared/jwk"
	"github.com/agentkeys/broker/shared/manifest"
)

func TestAWSRootPinned(t *testing.T) {
	if fingerprint(AWSRoot()) != AWSRootSHA256 {
		t.Fatal("AWS root fingerprint mismatch")
	}
	// The embedded PEM is the one nitrite uses by default.
	if !bytes.Equal(bytes.TrimSpace(awsRootPEM), bytes.TrimSpace([]byte(nitrite.DefaultCARoots))) {
		t.Error("the embedded AWS root differs from nitrite's")
	}
}

// TestRealDocument verifies a real AWS Nitro document at its own time against
// the embedded AWS root. It carries no agentkeys manifest, so only the document
// checks apply: format and P-384 leaf, COSE signature, chain to the AWS root,
// and the presence of (non-debug) PCR0..2; no PCR is pinned and no nonce sent.
func TestRealDocument(t *testing.T) {
	d, r := VerifyDocument(readRealDoc(t), DocumentOptions{AtDocument: true})
	if !r.OK() {
		t.Fatalf("the real AWS document does not verify: %+v", r.Checks)
	}
	for _, name := range []string{"document", "signature", "chain", "age", "debug mode"} {
		if c := r.Find(name); c == nil || c.Status != StatusPass {
			t.Errorf("check %s: %+v, want pass", name, c)
		}
	}
	if !strings.Contains(r.Find("chain").Detail, AWSRootName) {
		t.Errorf("chain detail does not name the AWS root: %s", r.Find("chain").Detail)
	}
	if len(d.PCRs) != 16 || len(d.CABundle) != 4 || !d.Timestamp.Equal(realDocTime) {
		t.Errorf("unexpected document: %d PCRs, %d cabundle, timestamp %s", len(d.PCRs), len(d.CABundle), d.Timestamp)
	}
	// Pinning its own PCR0 passes; a different PCR0 fails.
	_, r = VerifyDocument(readRealDoc(t), DocumentOptions{AtDocument: true, PCRs: map[uint][]byte{0: d.PCRs[0]}})
	if !r.OK() {
		t.Errorf("pinning the real PCR0 fails: %+v", r.FirstFailure())
	}
	// It is not an agentkeys document: the manifest step says so.
	if _, mr := VerifyManifest(d, []byte("{}")); mr.OK() || mr.FirstFailure().Name != "user_data" {
		t.Errorf("the manifest step accepted a non-agentkeys document: %+v", mr.Checks)
	}
	// Verified now (its leaf lasts 3 hours), the chain is expired.
	_, r = VerifyDocument(readRealDoc(t), DocumentOptions{At: realDocTime.Add(24 * time.Hour), MaxAge: 0})
	if f := r.FirstFailure(); f == nil || f.Name != "chain" || !strings.Contains(f.Detail, "expired") {
		t.Errorf("the real document a day later: %+v, want an expired chain", f)
	}
}

func TestSimulatedDocumentVerifies(t *testing.T) {
	s := newSimulated(t)
	tm := newTestManifest(t, "https://issuer.example", manifest.OriginEnclave)
	nonce := []byte("0123456789abcdef")
	doc, err := s.Attest(nonce, tm.digest(), nil)
	if err != nil {
		t.Fatal(err)
	}
	pcrs := map[uint][]byte{}
	for i, v := range s.PCRs() {
		if i <= 2 || i == 8 {
			pcrs[uint(i)] = v
		}
	}
	set := tm.jwks()
	r := VerifyOffline(Offline{Document: doc, Manifest: tm.bytes, JWKS: &set, JWT: tm.jwt(t, "https://issuer.example")},
		DocumentOptions{Roots: rootPool(t, s.RootPEM()), MaxAge: 5 * time.Minute, Nonce: nonce, PCRs: pcrs})
	if !r.OK() {
		t.Fatalf("a good simulated document fails: %+v", r.FirstFailure())
	}
	want := []string{"document", "signature", "chain", "age", "nonce", "pcr0", "pcr1", "pcr2", "pcr8", "debug mode",
		"user_data", "manifest", "issuer origin", "jwks", "jwt", "issuer"}
	var got []string
	for _, c := range r.Checks {
		got = append(got, c.Name)
		if c.Status != StatusPass {
			t.Errorf("check %s: %s", c.Name, c.Status)
		}
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("checks %v, want %v", got, want)
	}
	var buf bytes.Buffer
	r.WriteText(&buf)
	if !strings.HasSuffix(buf.String(), "PASS: 16 checks passed\n") || !strings.Contains(buf.String(), "✓ chain: ") {
		t.Errorf("report:\n%s", buf.String())
	}
}

// TestForged: every variant fails, at the named check, with a reason a person
// can act on.
func TestForged(t *testing.T) {
	s := newSimulated(t)
	simRoots := rootPool(t, s.RootPEM())
	f := newForger(t)
	tm := newTestManifest(t, "https://issuer.example", manifest.OriginEnclave)
	other := newTestManifest(t, "https://issuer.example", manifest.OriginEnclave)
	nonce := []byte("0123456789abcdef")
	simDoc, err := s.Attest(nonce, tm.digest(), nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	good := forgeOpts{ts: now, userData: tm.digest(), nonce: nonce}
	with := func(mod func(*forgeOpts)) []byte {
		o := good
		mod(&o)
		return f.doc(t, o)
	}
	flip := func(b []byte, at int) []byte {
		c := bytes.Clone(b)
		c[at] ^= 1
		return c
	}
	noPCR8 := goodPCRs()
	delete(noPCR8, 8)
	zero := goodPCRs()
	for i := range uint(3) {
		zero[i] = make([]byte, 48)
	}
	set := tm.jwks()
	extra := jwk.Set{Keys: append(tm.jwks().Keys, other.jwks().Keys...)}
	fopts := DocumentOptions{Roots: f.pool(), At: now, MaxAge: 5 * time.Minute, MaxSkew: time.Minute, Nonce: nonce}
	sopts := DocumentOptions{Roots: simRoots, MaxAge: 5 * time.Minute, Nonce: nonce}

	tests := []struct {
		name     string
		in       Offline
		opts     DocumentOptions
		check    string // the first failing check
		reason   string // in its detail
		mutateOp func(*DocumentOptions)
	}{
		{"simulated document, AWS root", Offline{Document: simDoc, Manifest: tm.bytes}, DocumentOptions{Nonce: nonce, MaxAge: time.Hour}, "chain", "not AWS's", nil},
		{"simulated document, another root", Offline{Document: simDoc, Manifest: tm.bytes}, DocumentOptions{Roots: f.pool(), RootName: "forger root", Nonce: nonce}, "chain", "does not lead to forger root", nil},
		{"flipped byte in the payload", Offline{Document: flip(simDoc, bytes.Index(simDoc, nonce)), Manifest: tm.bytes}, sopts, "signature", "altered", nil},
		{"flipped byte in the signature", Offline{Document: flip(simDoc, len(simDoc)-1), Manifest: tm.bytes}, sopts, "signature", "does not verify", nil},
		{"stale document", Offline{Document: with(func(o *forgeOpts) { o.ts = now.Add(-time.Hour) }), Manifest: tm.bytes}, fopts, "age", "more than the 5m0s allowed", nil},
		{"timestamp in the future", Offline{Document: with(func(o *forgeOpts) { o.ts = now.Add(time.Hour) }), Manifest: tm.bytes}, fopts, "age", "after the verification time", nil},
		{"wrong nonce", Offline{Document: with(func(o *forgeOpts) { o.nonce = []byte("another nonce!!!") }), Manifest: tm.bytes}, fopts, "nonce", "not the nonce sent", nil},
		{"no nonce", Offline{Document: with(func(o *forgeOpts) { o.nonce = nil }), Manifest: tm.bytes}, fopts, "nonce", "null is not the nonce sent", nil},
		{"PCR mismatch", Offline{Document: with(func(o *forgeOpts) {}), Manifest: tm.bytes}, fopts, "pcr0", "a different enclave image",
			func(o *DocumentOptions) { o.PCRs = map[uint][]byte{0: bytes.Repeat([]byte{9}, 48)} }},
		{"missing PCR", Offline{Document: with(func(o *forgeOpts) { o.pcrs = noPCR8 }), Manifest: tm.bytes}, fopts, "pcr8", "the document has no PCR8",
			func(o *DocumentOptions) { o.PCRs = map[uint][]byte{8: make([]byte, 48)} }},
		{"all-zero PCRs (debug mode)", Offline{Document: with(func(o *forgeOpts) { o.pcrs = zero }), Manifest: tm.bytes}, fopts, "debug mode", "debug-mode enclave", nil},
		{"manifest for another key", Offline{Document: simDoc, Manifest: other.bytes}, sopts, "user_data", "did not attest this manifest", nil},
		{"JWKS with a key of its own", Offline{Document: simDoc, Manifest: tm.bytes, JWKS: &extra}, sopts, "jwks", "does not list", nil},
		{"JWKS without the manifest key", Offline{Document: simDoc, Manifest: tm.bytes, JWKS: &jwk.Set{}}, sopts, "jwks", "lacks the manifest's kids", nil},
		{"JWT signed by another key", Offline{Document: simDoc, Manifest: tm.bytes, JWKS: &set, JWT: other.jwt(t, "https://issuer.example")}, sopts, "jwt", "is not a manifest key", nil},
		{"JWT of another issuer", Offline{Document: simDoc, Manifest: tm.bytes, JWKS: &set, JWT: tm.jwt(t, "https://evil.example")}, sopts, "issuer", `names issuer "https://evil.example"`, nil},
		{"P-521 leaf", Offline{Document: with(func(o *forgeOpts) { o.curve = elliptic.P521() }), Manifest: tm.bytes}, fopts, "document", "ECDSA P-521, not P-384", nil},
		{"P-256 leaf", Offline{Document: with(func(o *forgeOpts) { o.curve = elliptic.P256() }), Manifest: tm.bytes}, fopts, "document", "ECDSA P-256, not P-384", nil},
		{"truncated CBOR", Offline{Document: simDoc[:len(simDoc)/2], Manifest: tm.bytes}, sopts, "document", "not a CBOR COSE_Sign1", nil},
		{"empty document", Offline{Document: nil, Manifest: tm.bytes}, sopts, "document", "not a CBOR COSE_Sign1", nil},
		{"certificate expired at --at", Offline{Document: with(func(o *forgeOpts) { o.notAfter = now.Add(-time.Minute) }), Manifest: tm.bytes}, fopts, "chain", "expired or not yet valid", nil},
		{"archived document, leaf expired at --at", Offline{Document: simDoc, Manifest: tm.bytes}, sopts, "chain", "expired",
			func(o *DocumentOptions) { o.At = time.Now().Add(48 * time.Hour); o.MaxAge = 0 }},
		{"real AWS document with an agentkeys manifest", Offline{Document: readRealDoc(t), Manifest: tm.bytes}, DocumentOptions{AtDocument: true}, "user_data", "not an agentkeys document", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := tt.opts
			if tt.mutateOp != nil {
				tt.mutateOp(&opts)
			}
			r := VerifyOffline(tt.in, opts)
			fc := r.FirstFailure()
			if fc == nil {
				t.Fatalf("verified: %+v", r.Checks)
			}
			if fc.Name != tt.check || !strings.Contains(fc.Detail, tt.reason) {
				t.Fatalf("first failure %s: %s\nwant %s containing %q", fc.Name, fc.Detail, tt.check, tt.reason)
			}
		})
	}
}

// TestDebugAllowed: --allow-debug turns the debug-mode failure into a warning.
func TestDebugAllowed(t *testing.T) {
	f := newForger(t)
	zero := goodPCRs()
	for i := range uint(3) {
		zero[i] = make([]byte, 48)
	}
	doc := f.doc(t, forgeOpts{pcrs: zero})
	_, r := VerifyDocument(doc, DocumentOptions{Roots: f.pool(), AllowDebug: true, MaxAge: time.Minute})
	if !r.OK() || r.Find("debug mode").Status != StatusWarn {
		t.Fatalf("%+v", r.Checks)
	}
}

// TestP521PanicsNitrite shows the P-521 guard is needed: nitrite itself panics
// on the forged document that VerifyDocument rejects.
func TestP521PanicsNitrite(t *testing.T) {
	f := newForger(t)
	doc := f.doc(t, forgeOpts{curve: elliptic.P521()})
	_, _, panicked := callNitrite(doc, nitrite.VerifyOptions{Roots: f.pool()})
	if panicked == nil {
		t.Fatal("nitrite no longer panics on a P-521 leaf; the guard can be revisited")
	}
}

func TestHostOriginWarns(t *testing.T) {
	s := newSimulated(t)
	tm := newTestManifest(t, "https://issuer.example", manifest.OriginHost)
	doc, err := s.Attest([]byte("0123456789abcdef"), tm.digest(), nil)
	if err != nil {
		t.Fatal(err)
	}
	r := VerifyOffline(Offline{Document: doc, Manifest: tm.bytes}, DocumentOptions{Roots: rootPool(t, s.RootPEM()), MaxAge: time.Hour})
	if !r.OK() {
		t.Fatalf("%+v", r.FirstFailure())
	}
	if c := r.Find("issuer origin"); c == nil || c.Status != StatusWarn || !strings.Contains(c.Detail, "could add a key") {
		t.Fatalf("issuer origin: %+v", c)
	}
}

func TestDecodeDocumentFile(t *testing.T) {
	raw := readRealDoc(t)
	b64s, _ := os.ReadFile("testdata/nitro-attestation-2026.b64")
	for name, in := range map[string][]byte{
		"raw": raw, "base64 file": b64s, "base64 wrapped": []byte(wrap(b64(raw))),
	} {
		got, err := DecodeDocumentFile(in)
		if err != nil || !bytes.Equal(got, raw) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := DecodeDocumentFile([]byte("not a document!")); err == nil {
		t.Error("accepted garbage")
	}
}

func wrap(s string) string {
	var b strings.Builder
	for len(s) > 64 {
		b.WriteString(s[:64] + "\n")
		s = s[64:]
	}
	return b.String() + s + "\n"
}

func TestParseMeasurements(t *testing.T) {
	pcr := strings.Repeat("ab", 48)
	tests := []struct {
		name, in, err string
		n             int
	}{
		{"nitro-cli", `{"Measurements": {"HashAlgorithm": "Sha384 { ... }", "PCR0": "` + pcr + `", "PCR1": "` + pcr + `", "PCR2": "` + pcr + `", "PCR8": "` + pcr + `"}}`, "", 4},
		{"inner", `{"HashAlgorithm": "Sha384 { ... }", "PCR0": "` + pcr + `", "PCR1": "` + pcr + `", "PCR2": "` + pcr + `"}`, "", 3},
		{"missing PCR1", `{"HashAlgorithm": "Sha384 { ... }", "PCR0": "` + pcr + `"}`, "PCR1 is missing", 0},
		{"sha256", `{"HashAlgorithm": "Sha256", "PCR0": "` + pcr + `"}`, "Sha384", 0},
		{"short PCR", `{"HashAlgorithm": "Sha384 { ... }", "PCR0": "abcd"}`, "96 hex digits", 0},
		{"unknown", `{"HashAlgorithm": "Sha384 { ... }", "PCR0": "` + pcr + `", "PCR99": "` + pcr + `"}`, "unexpected key", 0},
		{"empty", `{"Measurements": {}}`, "Sha384", 0},
		{"not json", `PCR0=ab`, "not a JSON object", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseMeasurements([]byte(tt.in))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || len(got) != tt.n {
				t.Fatalf("%v %v", got, err)
			}
		})
	}
}

func TestParseRootPEM(t *testing.T) {
	if _, err := ParseRootPEM(awsRootPEM); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseRootPEM(append(bytes.Clone(awsRootPEM), awsRootPEM...)); err == nil {
		t.Error("accepted two roots")
	}
	if _, err := ParseRootPEM([]byte("nope")); err == nil {
		t.Error("accepted garbage")
	}
}

// FuzzVerifyDocument: arbitrary bytes never panic, whatever nitrite would do
// with them, and always give a report with a verdict.
func FuzzVerifyDocument(f *testing.F) {
	f.Add(readRealDoc(f))
	fo := newForger(f)
	f.Add(fo.doc(f, forgeOpts{curve: elliptic.P521()}))
	f.Add(fo.doc(f, forgeOpts{}))
	f.Add([]byte{0x84, 0x40, 0xa0, 0x40, 0x40})
	f.Fuzz(func(t *testing.T, b []byte) {
		d, r := VerifyDocument(b, DocumentOptions{At: realDocTime, MaxAge: time.Minute})
		if len(r.Checks) == 0 || (d == nil && r.OK()) {
			t.Fatalf("no verdict: %+v", r.Checks)
		}
	})
}
