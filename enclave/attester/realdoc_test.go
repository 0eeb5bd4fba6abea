package attester

import (
	"bytes"
	"crypto/x509"
	"errors"
	"slices"
	"testing"

	"github.com/fxamacker/cbor/v2"
	"github.com/hf/nitrite"
)

func TestRealDocumentVerifies(t *testing.T) {
	doc := readRealDoc(t)
	d, err := verify(doc, nil, realDocTime)
	if err != nil {
		t.Fatalf("real document does not verify against the AWS root: %v", err)
	}
	if len(d.PCRs) != 16 || len(d.CABundle) != 4 || d.Digest != "SHA384" {
		t.Errorf("unexpected real document: %d PCRs, %d cabundle items, digest %q", len(d.PCRs), len(d.CABundle), d.Digest)
	}

	// Our simulated root must not vouch for it either.
	s := newTestSimulated(t, "", newFakeClock())
	var uae x509.UnknownAuthorityError
	if _, err := verify(doc, s.RootPool(), realDocTime); !errors.As(err, &uae) {
		t.Errorf("real document against the simulated root: got %v, want an unknown authority error", err)
	}
}

func TestRealDocumentTampered(t *testing.T) {
	doc := readRealDoc(t)
	d, err := verify(doc, nil, realDocTime)
	if err != nil {
		t.Fatal(err)
	}
	nonceAt := bytes.Index(doc, d.Nonce)
	pcr0At := bytes.Index(doc, d.PCRs[0])
	if len(d.Nonce) == 0 || nonceAt < 0 || pcr0At < 0 {
		t.Fatal("cannot locate the nonce or PCR0 in the real document")
	}
	for _, tc := range []struct {
		name string
		at   int
	}{
		{"payload nonce", nonceAt},
		{"payload PCR0", pcr0At + 10},
		{"signature first byte", len(doc) - 96},
		{"signature last byte", len(doc) - 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := verify(flipAt(doc, tc.at), nil, realDocTime)
			if !errors.Is(err, nitrite.ErrBadSignature) {
				t.Errorf("got %v, want %v", err, nitrite.ErrBadSignature)
			}
		})
	}
}

// TestSimulatedMatchesRealFormat compares a simulated document with the real
// one byte for byte where the format fixes the bytes.
func TestSimulatedMatchesRealFormat(t *testing.T) {
	real := decodeSign1(t, readRealDoc(t))
	s := newTestSimulated(t, "", newFakeClock())
	doc, err := s.Attest([]byte("nonce"), []byte("user data"), []byte("public key"))
	if err != nil {
		t.Fatal(err)
	}
	sim := decodeSign1(t, doc)

	if want := []byte{0x44, 0xa1, 0x01, 0x38, 0x22}; !bytes.Equal(real.protected, want) {
		t.Fatalf("real protected header is %x, want %x", real.protected, want)
	}
	if !bytes.Equal(sim.protected, real.protected) {
		t.Errorf("protected header: simulated %x, real %x", sim.protected, real.protected)
	}
	if !bytes.Equal(sim.unprotected, real.unprotected) {
		t.Errorf("unprotected header: simulated %x, real %x", sim.unprotected, real.unprotected)
	}
	if len(sim.signature) != 96 || len(real.signature) != 96 {
		t.Errorf("signature length: simulated %d, real %d, want 96", len(sim.signature), len(real.signature))
	}

	realFields := payloadFields(t, real.payload)
	simFields := payloadFields(t, sim.payload)
	keys := func(fs []field) []string {
		var ks []string
		for _, f := range fs {
			ks = append(ks, f.key)
		}
		return ks
	}
	if !slices.Equal(keys(simFields), keys(realFields)) {
		t.Errorf("payload keys: simulated %q, real %q", keys(simFields), keys(realFields))
	}

	for _, fs := range [][]field{realFields, simFields} {
		var digest string
		if err := cbor.Unmarshal(fieldValue(t, fs, "digest"), &digest); err != nil || digest != "SHA384" {
			t.Errorf("digest is %q (%v), want SHA384", digest, err)
		}
		if ts := fieldValue(t, fs, "timestamp"); ts[0] != 0x1b {
			t.Errorf("timestamp is not an 8-byte uint: %x", ts)
		}
		var pcrs map[uint][]byte
		if err := cbor.Unmarshal(fieldValue(t, fs, "pcrs"), &pcrs); err != nil {
			t.Fatal(err)
		}
		if len(pcrs) != 16 {
			t.Errorf("%d PCRs, want 16", len(pcrs))
		}
		for i := range uint(16) {
			if len(pcrs[i]) != 48 {
				t.Errorf("PCR%d is %d bytes, want 48", i, len(pcrs[i]))
			}
		}
		var bundle [][]byte
		if err := cbor.Unmarshal(fieldValue(t, fs, "cabundle"), &bundle); err != nil {
			t.Fatal(err)
		}
		root, err := x509.ParseCertificate(bundle[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := root.CheckSignatureFrom(root); err != nil {
			t.Errorf("cabundle[0] (%s) is not a self-signed root: %v", root.Subject, err)
		}
	}
}
