package tlogproof

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"

	"golang.org/x/mod/sumdb/note"
)

// algCosignatureV1 is the signed-note key type of C2SP tlog-cosignature's
// timestamped Ed25519 cosignatures (https://c2sp.org/tlog-cosignature).
const algCosignatureV1 = 0x04

// NewCosignatureVerifier parses a witness's verifier key,
// "name+hash+base64(0x04 || Ed25519 public key)", into a note.Verifier of
// cosignature/v1 signatures: each is an 8-byte big-endian timestamp and an
// Ed25519 signature of
//
//	cosignature/v1
//	time <timestamp>
//	<checkpoint text>
//
// A zero timestamp does not verify (tlog-witness forbids it).
func NewCosignatureVerifier(vkey string) (note.Verifier, error) {
	name, rest, ok1 := strings.Cut(vkey, "+")
	hash16, key64, ok2 := strings.Cut(rest, "+")
	hash, err1 := strconv.ParseUint(hash16, 16, 32)
	key, err2 := base64.StdEncoding.DecodeString(key64)
	if !ok1 || !ok2 || len(hash16) != 8 || err1 != nil || err2 != nil || name == "" ||
		strings.IndexFunc(name, unicode.IsSpace) >= 0 || strings.Contains(name, "+") {
		return nil, errors.New("malformed witness verifier key")
	}
	if len(key) != 1+ed25519.PublicKeySize || key[0] != algCosignatureV1 {
		return nil, errors.New("witness verifier key is not a cosignature/v1 (type 0x04) Ed25519 key")
	}
	h := sha256.New()
	h.Write([]byte(name + "\n"))
	h.Write(key)
	if binary.BigEndian.Uint32(h.Sum(nil)) != uint32(hash) {
		return nil, errors.New("witness verifier key hash does not match its name and key")
	}
	return &cosigVerifier{name: name, hash: uint32(hash), key: ed25519.PublicKey(key[1:])}, nil
}

type cosigVerifier struct {
	name string
	hash uint32
	key  ed25519.PublicKey
}

func (v *cosigVerifier) Name() string    { return v.name }
func (v *cosigVerifier) KeyHash() uint32 { return v.hash }
func (v *cosigVerifier) Verify(msg, sig []byte) bool {
	if len(sig) != 8+ed25519.SignatureSize {
		return false
	}
	t := binary.BigEndian.Uint64(sig)
	if t == 0 || t > 1<<63-1 {
		return false
	}
	m := fmt.Appendf(nil, "cosignature/v1\ntime %d\n%s", t, msg)
	return ed25519.Verify(v.key, m, sig[8:])
}

// CosignatureTime returns the timestamp (unix seconds) of a cosignature/v1
// signature, as note.Open returns it in note.Signature.Base64.
func CosignatureTime(sig note.Signature) (int64, error) {
	b, err := base64.StdEncoding.DecodeString(sig.Base64)
	if err != nil || len(b) != 4+8+ed25519.SignatureSize {
		return 0, errors.New("malformed cosignature")
	}
	t := binary.BigEndian.Uint64(b[4:])
	if t > 1<<63-1 {
		return 0, errors.New("malformed cosignature")
	}
	return int64(t), nil
}
