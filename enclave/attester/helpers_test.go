package attester

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/hf/nitrite"
)

// realDocTime is the timestamp of testdata/nitro-attestation-2026.b64.
var realDocTime = time.UnixMilli(0x19c2018e1ae)

// testEpoch is where the fake clock starts.
var testEpoch = time.Date(2026, time.February, 2, 20, 0, 0, 0, time.UTC)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: testEpoch} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func readRealDoc(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/nitro-attestation-2026.b64")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(b)))
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

// writeFile writes content to a new file in a test directory and returns its
// path, for use as SimulatedOptions.Executable.
func writeFile(t testing.TB, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "enclave")
	if err := os.WriteFile(path, []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// newTestSimulated returns a simulated attester on stateDir (a new temporary
// one if empty) measuring a small fake executable.
func newTestSimulated(t testing.TB, stateDir string, clock *fakeClock) *Simulated {
	t.Helper()
	if stateDir == "" {
		stateDir = t.TempDir()
	}
	s, err := NewSimulated(SimulatedOptions{
		StateDir:   stateDir,
		Executable: writeFile(t, "enclave binary v1"),
		AppData:    []byte("policy v1"),
		Now:        clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// verify calls nitrite.Verify and returns the document only when there is no
// error: nitrite returns a result together with an error.
func verify(doc []byte, roots *x509.CertPool, at time.Time) (*nitrite.Document, error) {
	res, err := nitrite.Verify(doc, nitrite.VerifyOptions{Roots: roots, CurrentTime: at})
	if err != nil {
		return nil, err
	}
	if res == nil || !res.SignatureOK || res.Document == nil {
		return nil, errors.New("nitrite returned no error but no valid result")
	}
	return res.Document, nil
}

// sign1 is an attestation document split into its four COSE_Sign1 parts.
type sign1 struct {
	protected, unprotected, payloadItem, signatureItem cbor.RawMessage
	payload, signature                                 []byte
}

func decodeSign1(t testing.TB, doc []byte) sign1 {
	t.Helper()
	var parts []cbor.RawMessage
	if err := cbor.Unmarshal(doc, &parts); err != nil {
		t.Fatalf("document is not a CBOR array: %v", err)
	}
	if len(parts) != 4 {
		t.Fatalf("COSE_Sign1 has %d parts, want 4", len(parts))
	}
	s := sign1{protected: parts[0], unprotected: parts[1], payloadItem: parts[2], signatureItem: parts[3]}
	if err := cbor.Unmarshal(parts[2], &s.payload); err != nil {
		t.Fatalf("payload is not a bstr: %v", err)
	}
	if err := cbor.Unmarshal(parts[3], &s.signature); err != nil {
		t.Fatalf("signature is not a bstr: %v", err)
	}
	return s
}

type field struct {
	key   string
	value cbor.RawMessage
}

// payloadFields returns the payload's keys and raw values in encoding order.
// It requires the NSM's indefinite-length map.
func payloadFields(t testing.TB, payload []byte) []field {
	t.Helper()
	if len(payload) < 2 || payload[0] != 0xbf || payload[len(payload)-1] != 0xff {
		t.Fatalf("payload is not an indefinite-length map: starts %#x, ends %#x", payload[0], payload[len(payload)-1])
	}
	dec := cbor.NewDecoder(bytes.NewReader(payload[1 : len(payload)-1]))
	var fields []field
	for {
		var f field
		if err := dec.Decode(&f.key); err == io.EOF {
			return fields
		} else if err != nil {
			t.Fatalf("payload key: %v", err)
		}
		if err := dec.Decode(&f.value); err != nil {
			t.Fatalf("payload value of %q: %v", f.key, err)
		}
		fields = append(fields, f)
	}
}

func fieldValue(t testing.TB, fields []field, key string) cbor.RawMessage {
	t.Helper()
	for _, f := range fields {
		if f.key == key {
			return f.value
		}
	}
	t.Fatalf("payload has no %q", key)
	return nil
}

func leafOf(t testing.TB, d *nitrite.Document) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(d.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// flipAt returns a copy of doc with one bit flipped at i.
func flipAt(doc []byte, i int) []byte {
	out := bytes.Clone(doc)
	out[i] ^= 0x01
	return out
}
