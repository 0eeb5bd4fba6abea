// Package jwk encodes the issuer's public keys as JSON Web Keys (RFC 7517) and
// computes their RFC 7638 thumbprints, which serve as the keys' kid.
//
// Only what the broker publishes is supported: EC P-256 public keys for ES256.
// Both halves use this package — the enclave to name the key it signs with, the
// host to publish the JWKS and the auditor to check that the two agree — so a kid
// means the same thing everywhere.
package jwk

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
)

// Key is a public JWK as published in the JWKS.
type Key struct {
	Kty string `json:"kty" cbor:"kty"`
	Crv string `json:"crv" cbor:"crv"`
	X   string `json:"x" cbor:"x"`
	Y   string `json:"y" cbor:"y"`
	Kid string `json:"kid" cbor:"kid"`
	Alg string `json:"alg" cbor:"alg"`
	Use string `json:"use" cbor:"use"`
}

// Set is a JWK Set document.
type Set struct {
	Keys []Key `json:"keys"`
}

var b64 = base64.RawURLEncoding

// FromP256 returns the JWK of a P-256 public key, with kid set to its thumbprint.
func FromP256(pub *ecdsa.PublicKey) (Key, error) {
	if pub == nil || pub.Curve != elliptic.P256() {
		return Key{}, errors.New("jwk: key is not a P-256 public key")
	}
	raw, err := pub.Bytes() // 0x04 || X || Y, 32 bytes each
	if err != nil {
		return Key{}, fmt.Errorf("jwk: %w", err)
	}
	k := Key{Kty: "EC", Crv: "P-256", X: b64.EncodeToString(raw[1:33]), Y: b64.EncodeToString(raw[33:65]), Alg: "ES256", Use: "sig"}
	k.Kid = k.Thumbprint()
	return k, nil
}

// Thumbprint is the RFC 7638 SHA-256 thumbprint of the key, base64url without
// padding: the hash of the required members in lexicographic order with no
// whitespace, {"crv":…,"kty":…,"x":…,"y":…}.
func (k Key) Thumbprint() string {
	// The members are base64url strings and fixed names, which need no JSON escaping.
	canon := `{"crv":"` + k.Crv + `","kty":"` + k.Kty + `","x":"` + k.X + `","y":"` + k.Y + `"}`
	sum := sha256.Sum256([]byte(canon))
	return b64.EncodeToString(sum[:])
}

// PublicKey parses the JWK back into a P-256 public key, checking that the
// point is on the curve and that kid, when present, is the key's thumbprint.
func (k Key) PublicKey() (*ecdsa.PublicKey, error) {
	if k.Kty != "EC" || k.Crv != "P-256" {
		return nil, fmt.Errorf("jwk: unsupported key type %q/%q (want EC/P-256)", k.Kty, k.Crv)
	}
	x, err := b64.DecodeString(k.X)
	if err != nil || len(x) != 32 {
		return nil, errors.New("jwk: x must be 32 bytes of base64url")
	}
	y, err := b64.DecodeString(k.Y)
	if err != nil || len(y) != 32 {
		return nil, errors.New("jwk: y must be 32 bytes of base64url")
	}
	raw := append(append([]byte{4}, x...), y...)
	if _, err := ecdh.P256().NewPublicKey(raw); err != nil {
		return nil, errors.New("jwk: point is not on P-256")
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), raw)
	if err != nil {
		return nil, fmt.Errorf("jwk: %w", err)
	}
	if k.Kid != "" && k.Kid != k.Thumbprint() {
		return nil, errors.New("jwk: kid is not the key's RFC 7638 thumbprint")
	}
	return pub, nil
}
