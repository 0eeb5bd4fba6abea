package kmstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"sync"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// Forger is an attester (the method set of enclave/attester.Attester) whose
// documents carry PCRs of the test's choosing, such as a debug-mode enclave's
// all-zero ones, and chain to a root of its own ([Forger.RootPool]). Its
// documents have the NSM's format and verify with hf/nitrite.
type Forger struct {
	mode     string
	pcrs     map[int][]byte
	rootKey  *ecdsa.PrivateKey
	root     *x509.Certificate
	leafKey  *ecdsa.PrivateKey
	leaf     *x509.Certificate
	mu       sync.Mutex
	closed   bool
	attested int
}

// NewForger returns a Forger reporting mode ("nitro" or "simulated") with the
// given PCRs (indexes 0 to 15; missing ones are zero).
func NewForger(t testing.TB, mode string, pcrs map[int][]byte) *Forger {
	t.Helper()
	f := &Forger{mode: mode, pcrs: map[int][]byte{}}
	for i := range 16 {
		f.pcrs[i] = make([]byte, 48)
		if v, ok := pcrs[i]; ok {
			f.pcrs[i] = append([]byte(nil), v...)
		}
	}
	now := time.Now()
	var err error
	if f.rootKey, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	rootT := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kmstest forger root"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, SignatureAlgorithm: x509.ECDSAWithSHA384}
	der, err := x509.CreateCertificate(rand.Reader, rootT, rootT, &f.rootKey.PublicKey, f.rootKey)
	if err != nil {
		t.Fatal(err)
	}
	f.root, _ = x509.ParseCertificate(der)
	if f.leafKey, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	leafT := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kmstest forger leaf"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(3 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		SignatureAlgorithm: x509.ECDSAWithSHA384}
	der, err = x509.CreateCertificate(rand.Reader, leafT, f.root, &f.leafKey.PublicKey, f.rootKey)
	if err != nil {
		t.Fatal(err)
	}
	f.leaf, _ = x509.ParseCertificate(der)
	return f
}

// RootPool holds the Forger's root only.
func (f *Forger) RootPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(f.root)
	return p
}

// Attested returns how many documents the Forger made.
func (f *Forger) Attested() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.attested
}

type forgedPayload struct {
	ModuleID    string          `cbor:"module_id"`
	Digest      string          `cbor:"digest"`
	Timestamp   uint64          `cbor:"timestamp"`
	PCRs        map[uint][]byte `cbor:"pcrs"`
	Certificate []byte          `cbor:"certificate"`
	CABundle    [][]byte        `cbor:"cabundle"`
	PublicKey   []byte          `cbor:"public_key"`
	UserData    []byte          `cbor:"user_data"`
	Nonce       []byte          `cbor:"nonce"`
}

// Attest returns a COSE_Sign1 document signed by the Forger's leaf.
func (f *Forger) Attest(nonce, userData, publicKey []byte) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, errClosed
	}
	f.attested++
	pcrs := map[uint][]byte{}
	for i, v := range f.pcrs {
		pcrs[uint(i)] = v
	}
	p, err := cbor.Marshal(forgedPayload{ModuleID: "i-kmstest-forged-enc", Digest: "SHA384",
		Timestamp: uint64(time.Now().UnixMilli()), PCRs: pcrs, Certificate: f.leaf.Raw,
		CABundle: [][]byte{f.root.Raw}, PublicKey: publicKey, UserData: userData, Nonce: nonce})
	if err != nil {
		return nil, err
	}
	protected := []byte{0xa1, 0x01, 0x38, 0x22}
	sigStruct, err := cbor.Marshal([]any{"Signature1", protected, []byte{}, p})
	if err != nil {
		return nil, err
	}
	h := sha512.Sum384(sigStruct)
	r, s, err := ecdsa.Sign(rand.Reader, f.leafKey, h[:])
	if err != nil {
		return nil, err
	}
	sig := make([]byte, 96)
	r.FillBytes(sig[:48])
	s.FillBytes(sig[48:])
	return cbor.Marshal([]any{protected, map[any]any{}, p, sig})
}

// Read fills p from crypto/rand.
func (f *Forger) Read(p []byte) (int, error) { return rand.Read(p) }

// Mode returns the mode given to NewForger.
func (f *Forger) Mode() string { return f.mode }

// PCRs returns a copy of the PCRs.
func (f *Forger) PCRs() map[int][]byte { return clonePCRs(f.pcrs) }

// Close makes Attest fail.
func (f *Forger) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

type closedError struct{}

func (closedError) Error() string { return "kmstest: forger is closed" }

var errClosed error = closedError{}
