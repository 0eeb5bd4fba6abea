package service

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
)

// The enclave writes its JWTs itself (compact JWS, ES256) so that each token
// has one encoding: base64url without padding, and a low-s signature. Without
// the low-s rule anyone holding a token could make a second valid spelling of
// it (s → n−s), and a bearer hash would no longer name one session.

var b64 = base64.RawURLEncoding

// p256HalfOrder is n/2 for P-256: a signature's s must not exceed it.
var p256HalfOrder = new(big.Int).Rsh(elliptic.P256().Params().N, 1)

// jwsHeader is the header of every token the enclave signs; json.Marshal
// writes its keys in this order, the order golang-jwt writes them in.
type jwsHeader struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	Typ string `json:"typ"`
}

// signES256 returns the compact JWS of claims (JSON-encoded) signed with key
// under kid, with s normalised to the lower half of the group order.
func signES256(key *ecdsa.PrivateKey, kid string, claims any) (string, error) {
	h, err := json.Marshal(jwsHeader{Alg: "ES256", Kid: kid, Typ: "JWT"})
	if err != nil {
		return "", err
	}
	p, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("failed to encode claims: %w", err)
	}
	input := b64.EncodeToString(h) + "." + b64.EncodeToString(p)
	digest := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, key, digest[:])
	if err != nil {
		return "", fmt.Errorf("failed to sign: %w", err)
	}
	if s.Cmp(p256HalfOrder) > 0 {
		s.Sub(key.Curve.Params().N, s)
	}
	var sig [64]byte
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return input + "." + b64.EncodeToString(sig[:]), nil
}

// checkCanonical refuses a compact JWS that is not in the one encoding
// signES256 writes: three segments, each base64url without padding whose
// decoding encodes back to the same text (no padding, no line breaks, no
// nonzero trailing bits), and a 64-byte signature whose s is at most n/2.
func checkCanonical(token string) error {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return errors.New("malformed")
	}
	var sig []byte
	for i, seg := range parts {
		b, err := b64.Strict().DecodeString(seg)
		if err != nil || b64.EncodeToString(b) != seg {
			return errors.New("not in canonical base64url")
		}
		if i == 2 {
			sig = b
		}
	}
	if len(sig) != 64 {
		return errors.New("bad signature")
	}
	s := new(big.Int).SetBytes(sig[32:])
	if s.Cmp(p256HalfOrder) > 0 {
		return errors.New("signature is not in low-s form")
	}
	return nil
}
