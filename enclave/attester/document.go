package attester

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha512"
	"errors"
	"fmt"
	"slices"
)

// The document is encoded by hand rather than with a CBOR library so that
// every byte is pinned to what the real NSM emits (see the package
// documentation) and cannot change with a library's defaults.

// protectedHeader is the COSE protected header of every NSM document: the
// bstr-wrapped map {1: -35}, alg ES384.
var protectedHeader = []byte{0xa1, 0x01, 0x38, 0x22}

// emptyMap is the unprotected header: {}.
const emptyMap = 0xa0

// CBOR major types.
const (
	majorUint  = 0 << 5
	majorBytes = 2 << 5
	majorText  = 3 << 5
	majorArray = 4 << 5
	majorMap   = 5 << 5
)

const (
	cborNull         = 0xf6
	cborIndefMap     = 0xbf
	cborBreak        = 0xff
	sigStructContext = "Signature1"
	es384ScalarSize  = 48
)

// appendHead appends a CBOR head in its shortest form.
func appendHead(b []byte, major byte, n uint64) []byte {
	switch {
	case n < 24:
		return append(b, major|byte(n))
	case n <= 0xff:
		return append(b, major|24, byte(n))
	case n <= 0xffff:
		return append(b, major|25, byte(n>>8), byte(n))
	case n <= 0xffffffff:
		return append(b, major|26, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	default:
		return append(b, major|27, byte(n>>56), byte(n>>48), byte(n>>40), byte(n>>32),
			byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
}

func appendBytes(b, v []byte) []byte {
	return append(appendHead(b, majorBytes, uint64(len(v))), v...)
}

func appendText(b []byte, s string) []byte {
	return append(appendHead(b, majorText, uint64(len(s))), s...)
}

// appendOptionalBytes encodes nil as CBOR null, as the NSM encodes an absent
// public_key, user_data or nonce.
func appendOptionalBytes(b, v []byte) []byte {
	if v == nil {
		return append(b, cborNull)
	}
	return appendBytes(b, v)
}

// document is the payload of an attestation document.
type document struct {
	moduleID    string
	timestamp   uint64 // milliseconds since the Unix epoch
	pcrs        map[int][]byte
	certificate []byte   // leaf, DER
	cabundle    [][]byte // root first, DER
	publicKey   []byte   // nil if absent
	userData    []byte   // nil if absent
	nonce       []byte   // nil if absent
}

// marshal encodes the payload like the NSM: an indefinite-length map with the
// keys in this order, PCRs as a definite map in ascending index order.
func (d *document) marshal() []byte {
	b := make([]byte, 0, 4096)
	b = append(b, cborIndefMap)
	b = appendText(b, "module_id")
	b = appendText(b, d.moduleID)
	b = appendText(b, "digest")
	b = appendText(b, "SHA384")
	b = appendText(b, "timestamp")
	b = appendHead(b, majorUint, d.timestamp)
	b = appendText(b, "pcrs")
	b = appendHead(b, majorMap, uint64(len(d.pcrs)))
	for _, i := range sortedKeys(d.pcrs) {
		b = appendHead(b, majorUint, uint64(i))
		b = appendBytes(b, d.pcrs[i])
	}
	b = appendText(b, "certificate")
	b = appendBytes(b, d.certificate)
	b = appendText(b, "cabundle")
	b = appendHead(b, majorArray, uint64(len(d.cabundle)))
	for _, c := range d.cabundle {
		b = appendBytes(b, c)
	}
	b = appendText(b, "public_key")
	b = appendOptionalBytes(b, d.publicKey)
	b = appendText(b, "user_data")
	b = appendOptionalBytes(b, d.userData)
	b = appendText(b, "nonce")
	b = appendOptionalBytes(b, d.nonce)
	return append(b, cborBreak)
}

func sortedKeys(m map[int][]byte) []int {
	keys := make([]int, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// sigStructure returns the COSE Sig_structure for a COSE_Sign1 with the NSM's
// protected header and no external AAD:
//
//	["Signature1", protected, h'', payload]
func sigStructure(payload []byte) []byte {
	b := make([]byte, 0, len(payload)+32)
	b = appendHead(b, majorArray, 4)
	b = appendText(b, sigStructContext)
	b = appendBytes(b, protectedHeader)
	b = appendBytes(b, nil)
	return appendBytes(b, payload)
}

// signSign1 signs payload with a P-384 key and returns the untagged
// COSE_Sign1 [protected, {}, payload, r||s].
func signSign1(key *ecdsa.PrivateKey, payload []byte) ([]byte, error) {
	if key.Curve.Params().Name != "P-384" {
		return nil, errors.New("attestation signing key is not P-384")
	}
	digest := sha512.Sum384(sigStructure(payload))
	r, s, err := ecdsa.Sign(rand.Reader, key, digest[:])
	if err != nil {
		return nil, fmt.Errorf("failed to sign the attestation document: %w", err)
	}
	// COSE ES384 signatures are r||s, each left-padded to 48 bytes.
	sig := make([]byte, 2*es384ScalarSize)
	r.FillBytes(sig[:es384ScalarSize])
	s.FillBytes(sig[es384ScalarSize:])

	b := make([]byte, 0, len(payload)+128)
	b = appendHead(b, majorArray, 4)
	b = appendBytes(b, protectedHeader)
	b = append(b, emptyMap)
	b = appendBytes(b, payload)
	return appendBytes(b, sig), nil
}
