package stsserver

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	_ "crypto/sha256" // SHA-256 for ES256/RS256
	_ "crypto/sha512" // SHA-384/512 for ES384/ES512/RS384/RS512
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"slices"
	"strings"

	"github.com/agentkeys/broker/shared/claims"
)

// maxTokenLen is STS's limit on WebIdentityToken.
const maxTokenLen = 20000

// algorithm is a JWS algorithm AWS accepts for OIDC ID tokens.
type algorithm struct {
	hash  crypto.Hash
	kty   string         // "EC" or "RSA"
	curve elliptic.Curve // EC only
}

var algorithms = map[string]algorithm{
	"ES256": {crypto.SHA256, "EC", elliptic.P256()},
	"ES384": {crypto.SHA384, "EC", elliptic.P384()},
	"ES512": {crypto.SHA512, "EC", elliptic.P521()},
	"RS256": {crypto.SHA256, "RSA", nil},
	"RS384": {crypto.SHA384, "RSA", nil},
	"RS512": {crypto.SHA512, "RSA", nil},
}

// token is a decoded, not yet verified, compact JWS.
type token struct {
	alg          string
	kid          string
	signingInput []byte
	signature    []byte
	claims       map[string]json.RawMessage
}

var b64 = base64.RawURLEncoding.Strict()

// parseToken decodes a compact JWS with a JSON object payload. It checks
// syntax and the algorithm, nothing else.
func parseToken(s string) (*token, error) {
	if len(s) > maxTokenLen {
		return nil, errors.New("token too long")
	}
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return nil, errors.New("not three dot-separated parts")
	}
	var header struct {
		Alg  string          `json:"alg"`
		Kid  string          `json:"kid"`
		Crit json.RawMessage `json:"crit"`
	}
	if err := decodeSegment(parts[0], &header); err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	if _, ok := algorithms[header.Alg]; !ok {
		return nil, fmt.Errorf("unsupported alg %q", header.Alg)
	}
	if header.Crit != nil {
		return nil, errors.New("crit header parameters are not understood")
	}
	t := &token{alg: header.Alg, kid: header.Kid, signingInput: []byte(parts[0] + "." + parts[1])}
	if err := decodeSegment(parts[1], &t.claims); err != nil {
		return nil, fmt.Errorf("payload: %w", err)
	}
	if t.claims == nil {
		return nil, errors.New("payload is not a JSON object")
	}
	sig, err := b64.DecodeString(parts[2])
	if err != nil {
		return nil, fmt.Errorf("signature: %w", err)
	}
	t.signature = sig
	return t, nil
}

func decodeSegment(seg string, v any) error {
	raw, err := b64.DecodeString(seg)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	return nil
}

// stringClaim returns a claim that is a JSON string.
func (t *token) stringClaim(name string) (string, bool) {
	raw, ok := t.claims[name]
	if !ok {
		return "", false
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// timeClaim returns a NumericDate claim in whole seconds.
func (t *token) timeClaim(name string) (int64, bool, error) {
	raw, ok := t.claims[name]
	if !ok {
		return 0, false, nil
	}
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil || math.IsNaN(f) || f < 0 || f > 1<<53 {
		return 0, true, fmt.Errorf("claim %s is not a NumericDate", name)
	}
	return int64(f), true, nil
}

// audiences returns aud, a string or an array of strings.
func (t *token) audiences() []string {
	raw, ok := t.claims["aud"]
	if !ok {
		return nil
	}
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return []string{one}
	}
	var many []string
	if json.Unmarshal(raw, &many) == nil {
		return many
	}
	return nil
}

// decoded returns the claims as generic JSON values, for Call.Claims.
func (t *token) decoded() map[string]any {
	out := make(map[string]any, len(t.claims))
	for k, raw := range t.claims {
		var v any
		if json.Unmarshal(raw, &v) == nil {
			out[k] = v
		}
	}
	return out
}

// verify checks the signature with a public key of the token's algorithm.
func (t *token) verify(pub crypto.PublicKey) bool {
	alg := algorithms[t.alg]
	h := alg.hash.New()
	h.Write(t.signingInput)
	digest := h.Sum(nil)
	switch pub := pub.(type) {
	case *ecdsa.PublicKey:
		size := (pub.Curve.Params().BitSize + 7) / 8
		if alg.kty != "EC" || pub.Curve != alg.curve || len(t.signature) != 2*size {
			return false
		}
		r := new(big.Int).SetBytes(t.signature[:size])
		s := new(big.Int).SetBytes(t.signature[size:])
		return ecdsa.Verify(pub, digest, r, s)
	case *rsa.PublicKey:
		return alg.kty == "RSA" && rsa.VerifyPKCS1v15(pub, alg.hash, digest, t.signature) == nil
	}
	return false
}

// jwk is a public key from a JWKS.
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
	N   string `json:"n"`
	E   string `json:"e"`
}

var curves = map[string]elliptic.Curve{"P-256": elliptic.P256(), "P-384": elliptic.P384(), "P-521": elliptic.P521()}

// publicKey decodes the key, checking that it is a valid point or an RSA key
// of at least 2048 bits.
func (k jwk) publicKey() (crypto.PublicKey, error) {
	switch k.Kty {
	case "EC":
		curve, ok := curves[k.Crv]
		if !ok {
			return nil, fmt.Errorf("unsupported curve %q", k.Crv)
		}
		size := (curve.Params().BitSize + 7) / 8
		x, errX := b64.DecodeString(k.X)
		y, errY := b64.DecodeString(k.Y)
		if errX != nil || errY != nil || len(x) != size || len(y) != size {
			return nil, errors.New("malformed EC coordinates")
		}
		return ecdsa.ParseUncompressedPublicKey(curve, append(append([]byte{4}, x...), y...))
	case "RSA":
		n, errN := b64.DecodeString(k.N)
		e, errE := b64.DecodeString(k.E)
		if errN != nil || errE != nil || len(e) == 0 || len(e) > 4 {
			return nil, errors.New("malformed RSA key")
		}
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n)}
		for _, b := range e {
			pub.E = pub.E<<8 | int(b)
		}
		if pub.N.BitLen() < 2048 || pub.E < 3 || pub.E%2 == 0 {
			return nil, errors.New("RSA key too small or bad exponent")
		}
		return pub, nil
	}
	return nil, fmt.Errorf("unsupported kty %q", k.Kty)
}

// candidates returns the JWKS keys that may have signed t: a signing key of the
// algorithm's type, with the token's kid (any kid if the token has none).
func (t *token) candidates(keys []jwk) []crypto.PublicKey {
	alg := algorithms[t.alg]
	var out []crypto.PublicKey
	for _, k := range keys {
		if k.Kty != alg.kty || (k.Use != "" && k.Use != "sig") || (k.Alg != "" && k.Alg != t.alg) {
			continue
		}
		if t.kid != "" && k.Kid != t.kid {
			continue
		}
		if pub, err := k.publicKey(); err == nil {
			out = append(out, pub)
		}
	}
	return out
}

const (
	// tagsClaim is the "https://aws.amazon.com/tags" claim, whose shape is
	// claims.Tags.
	tagsClaim           = claims.AWSTags
	sourceIdentityClaim = "https://aws.amazon.com/source_identity"
)

// sessionTags reads the session tags from the token's tags claim, within
// STS's limits: at most 50 tags, each with exactly one value.
func (t *token) sessionTags() (sessionTags, error) {
	var st sessionTags
	raw, ok := t.claims[tagsClaim]
	if !ok {
		return st, nil
	}
	var tags claims.Tags
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&tags); err != nil {
		return st, fmt.Errorf("the %s claim is malformed: %v", tagsClaim, err)
	}
	if len(tags.PrincipalTags) > maxTags {
		return st, fmt.Errorf("the %s claim has more than %d principal tags", tagsClaim, maxTags)
	}
	keys := make([]string, 0, len(tags.PrincipalTags))
	for k := range tags.PrincipalTags {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		vs := tags.PrincipalTags[k]
		if len(vs) != 1 {
			return st, fmt.Errorf("principal tag %q must have exactly one value", k)
		}
		if err := checkTag(k, vs[0]); err != nil {
			return st, err
		}
		if err := st.add(k, vs[0]); err != nil {
			return st, err
		}
	}
	if err := st.setTransitive(tags.TransitiveTagKeys); err != nil {
		return st, err
	}
	return st, nil
}
