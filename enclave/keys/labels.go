package keys

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// The labels of the keys the enclave uses. Rotating a key means adding a new
// label (for example "oidc/issuer/v2"), never changing what a label derives.
const (
	// LabelOIDCIssuer is the nist256p1 key that signs OIDC JWTs (ES256). Its
	// public key is published in the JWKS.
	LabelOIDCIssuer = "oidc/issuer/v1"
	// LabelSessionJWT is the nist256p1 key that signs session tokens. It is
	// internal to the enclave; its public key is not published.
	LabelSessionJWT = "issuer/jwt/v1"
	// LabelAuditCheckpoint is the ed25519 key that signs audit checkpoints.
	// Its public key is published as a note verifier key.
	LabelAuditCheckpoint = "audit/checkpoint/v1"
)

// SeedSize is the size of the enclave's seed, in bytes.
const SeedSize = 32

// LabelPath maps a label to its SLIP-0010 path: one hardened index per
// slash-separated segment,
//
//	index(segment) = 0x80000000 | (big-endian uint32 of SHA-256(segment)[0:4] & 0x7fffffff)
//
// A label must be non-empty, must not start or end with a slash or contain
// an empty segment, and each segment may contain only a-z, 0-9, '.', '_' and
// '-'.
//
// Distinct segments can in principle map to the same 31-bit index; the labels
// in use are a fixed, reviewed set whose paths are checked to differ.
func LabelPath(label string) ([]uint32, error) {
	if label == "" {
		return nil, errors.New("keys: empty label")
	}
	var path []uint32
	for seg := range strings.SplitSeq(label, "/") {
		if seg == "" {
			return nil, fmt.Errorf("keys: label %q has an empty segment (leading, trailing or doubled \"/\")", label)
		}
		for _, r := range seg {
			if !('a' <= r && r <= 'z' || '0' <= r && r <= '9' || r == '.' || r == '_' || r == '-') {
				return nil, fmt.Errorf("keys: label %q: segment %q contains %q; only a-z, 0-9, '.', '_' and '-' are allowed", label, seg, r)
			}
		}
		h := sha256.Sum256([]byte(seg))
		path = append(path, Hardened|binary.BigEndian.Uint32(h[:4])&0x7fffffff)
	}
	return path, nil
}

// P256 derives the nist256p1 key for label from seed (16 to 64 bytes).
func P256(seed []byte, label string) (*ecdsa.PrivateKey, error) {
	n, err := deriveLabel(CurveP256, seed, label)
	if err != nil {
		return nil, err
	}
	defer n.wipe()
	k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), n.Key[:])
	if err != nil {
		// Unreachable: Derive only returns keys in [1, n-1].
		return nil, fmt.Errorf("keys: failed to load nist256p1 key for label %q: %w", label, err)
	}
	return k, nil
}

// Ed25519 derives the ed25519 key for label from seed (16 to 64 bytes).
func Ed25519(seed []byte, label string) (ed25519.PrivateKey, error) {
	n, err := deriveLabel(CurveEd25519, seed, label)
	if err != nil {
		return nil, err
	}
	defer n.wipe()
	return ed25519.NewKeyFromSeed(n.Key[:]), nil
}

func deriveLabel(c Curve, seed []byte, label string) (Node, error) {
	path, err := LabelPath(label)
	if err != nil {
		return Node{}, err
	}
	n, err := Derive(c, seed, path)
	if err != nil {
		return Node{}, fmt.Errorf("keys: failed to derive %v key for label %q: %w", c, label, err)
	}
	return n, nil
}

// Set holds the enclave's keys.
type Set struct {
	Issuer     *ecdsa.PrivateKey  // LabelOIDCIssuer: signs OIDC JWTs, public in the JWKS
	Session    *ecdsa.PrivateKey  // LabelSessionJWT: signs session tokens, internal
	Checkpoint ed25519.PrivateKey // LabelAuditCheckpoint: signs audit checkpoints, public
}

// DeriveSet derives the enclave's keys from its seed, which must be exactly
// [SeedSize] bytes.
func DeriveSet(seed []byte) (*Set, error) {
	if len(seed) != SeedSize {
		return nil, fmt.Errorf("keys: seed is %d bytes, want %d", len(seed), SeedSize)
	}
	issuer, err := P256(seed, LabelOIDCIssuer)
	if err != nil {
		return nil, err
	}
	session, err := P256(seed, LabelSessionJWT)
	if err != nil {
		return nil, err
	}
	checkpoint, err := Ed25519(seed, LabelAuditCheckpoint)
	if err != nil {
		return nil, err
	}
	return &Set{Issuer: issuer, Session: session, Checkpoint: checkpoint}, nil
}
