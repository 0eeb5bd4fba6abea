// Package manifest is the key manifest: the one document that ties an enclave's
// attestation to what it publishes.
//
// Every attestation document an enclave produces carries, as its user_data,
// exactly the 32-byte SHA-256 of the manifest's bytes. The enclave encodes the
// manifest once at start ([Manifest.Marshal]); the host serves those bytes
// unchanged at /.well-known/agentkeys-manifest.json and with every attestation
// document; an auditor hashes the bytes it was given, compares the hash with the
// document's user_data, and only then reads them ([Parse]).
//
// # What it names
//
// The mode (nitro or simulated), the issuer URL, the full policy and its digest,
// every issuer key the JWKS may publish (its kid, its SLIP-0010 label and whether it
// signs), the audit checkpoint verifier key (of the default log; it binds every
// named log of the enclave too, see [Manifest.CheckpointVerifierKey]), and who terminates TLS for the issuer
// origin. When the enclave does (issuer_origin "enclave"), the manifest also names
// the TLS key it serves the issuer origin with (the SHA-256 of its
// SubjectPublicKeyInfo, which an auditor compares with the certificate a TLS
// client sees at the issuer URL) and its ACME account key (RFC 7638 thumbprint;
// the account URI a CAA record names is assigned by the CA at the first
// registration, after the manifest is encoded, so it is not here). During a key rotation two issuer keys are listed and the manifest of each
// image shows auditors the lineage.
//
// # Encoding
//
// JSON as encoding/json writes this struct: fields in declaration order, no
// insignificant whitespace, no HTML escaping. The bytes are what count; a
// verifier never re-encodes a manifest to compare it, it hashes what it received.
package manifest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/agentkeys/broker/shared/jwk"
	"github.com/agentkeys/broker/shared/policy"
)

// Version is the manifest format version.
const Version = 1

// MaxSize bounds a manifest a verifier will read.
const MaxSize = 64 << 10

// Modes.
const (
	ModeNitro     = "nitro"
	ModeSimulated = "simulated"
)

// Issuer origin modes: who terminates TLS for the issuer URL, and so decides
// which JWKS relying parties such as AWS see.
const (
	OriginEnclave = "enclave" // TLS for the issuer origin ends inside the enclave
	OriginHost    = "host"    // the host serves discovery and JWKS: it could add a key
)

// Manifest is the key manifest.
type Manifest struct {
	Version      int           `json:"version"`
	Mode         string        `json:"mode"`
	Issuer       string        `json:"issuer"`
	IssuerOrigin string        `json:"issuer_origin"`
	Policy       policy.Policy `json:"policy"`
	PolicyDigest string        `json:"policy_digest"`
	IssuerKeys   []IssuerKey   `json:"issuer_keys"`
	// CheckpointVerifierKey is the C2SP signed-note verifier key of the audit
	// log's checkpoints ("name+hash+base64") for the default log, whose
	// origin is its name ("broker.example.com/audit"). It binds every log of
	// this enclave: the log named N (chosen by the host at audit_resume) is
	// verified by the same key under the name "<name>/N", which
	// auditlog.LogVerifierKey and auditlog.OriginVerifierKey give and
	// auditlog.VerifierKeyLog checks.
	CheckpointVerifierKey string `json:"checkpoint_verifier_key"`
	// IssuerOriginTLSSPKISHA256 is, with issuer_origin enclave, the hex SHA-256
	// of the DER SubjectPublicKeyInfo of the issuer origin's TLS key: every
	// certificate served at the issuer URL must carry this key.
	IssuerOriginTLSSPKISHA256 string `json:"issuer_origin_tls_spki_sha256,omitempty"`
	// ACMEAccountKeyThumbprint is, with issuer_origin enclave, the RFC 7638
	// thumbprint of the enclave's ACME account key.
	ACMEAccountKeyThumbprint string `json:"acme_account_key_thumbprint,omitempty"`
}

// IssuerKey is one published issuer key.
type IssuerKey struct {
	Label string  `json:"label"` // SLIP-0010 label, e.g. oidc/issuer/v1
	Kid   string  `json:"kid"`   // RFC 7638 thumbprint, as in the JWKS
	Signs bool    `json:"signs"` // exactly one key signs
	JWK   jwk.Key `json:"jwk"`
}

// Marshal encodes the manifest after checking it.
func (m Manifest) Marshal() ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// Digest is the SHA-256 of manifest bytes: an attestation document's user_data.
func Digest(b []byte) [32]byte { return sha256.Sum256(b) }

// DigestHex is Digest in hex.
func DigestHex(b []byte) string {
	d := Digest(b)
	return hex.EncodeToString(d[:])
}

// Parse decodes manifest bytes strictly (unknown fields, trailing data and
// oversize input are errors) and validates them.
func Parse(b []byte) (Manifest, error) {
	var m Manifest
	if len(b) > MaxSize {
		return m, fmt.Errorf("manifest: larger than %d bytes", MaxSize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return Manifest{}, fmt.Errorf("manifest: failed to parse: %w", err)
	}
	if dec.More() {
		return Manifest{}, errors.New("manifest: trailing data after the JSON object")
	}
	if err := m.Validate(); err != nil {
		return Manifest{}, err
	}
	return m, nil
}

// Validate checks the manifest's internal consistency: the policy is valid and
// its digest matches, the issuer is the policy's, each key's kid is its
// thumbprint and its label is published by the policy, and exactly the policy's
// signing key signs.
func (m Manifest) Validate() error {
	if m.Version != Version {
		return fmt.Errorf("manifest: version %d, want %d", m.Version, Version)
	}
	if m.Mode != ModeNitro && m.Mode != ModeSimulated {
		return fmt.Errorf("manifest: mode %q is neither %s nor %s", m.Mode, ModeNitro, ModeSimulated)
	}
	if m.IssuerOrigin != OriginEnclave && m.IssuerOrigin != OriginHost {
		return fmt.Errorf("manifest: issuer_origin %q is neither %s nor %s", m.IssuerOrigin, OriginEnclave, OriginHost)
	}
	if m.IssuerOrigin == OriginEnclave {
		if !isLowerHex(m.IssuerOriginTLSSPKISHA256, 64) {
			return errors.New("manifest: issuer_origin_tls_spki_sha256 must be 64 lowercase hex characters with issuer_origin enclave")
		}
		if !isThumbprint(m.ACMEAccountKeyThumbprint) {
			return errors.New("manifest: acme_account_key_thumbprint must be an RFC 7638 thumbprint (43 base64url characters) with issuer_origin enclave")
		}
	} else if m.IssuerOriginTLSSPKISHA256 != "" || m.ACMEAccountKeyThumbprint != "" {
		return errors.New("manifest: issuer_origin_tls_spki_sha256 and acme_account_key_thumbprint are only for issuer_origin enclave")
	}
	if err := m.Policy.Validate(); err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	if m.Policy.Digest() != m.PolicyDigest {
		return errors.New("manifest: policy_digest is not the digest of the policy it lists")
	}
	if m.Issuer != m.Policy.Issuer {
		return fmt.Errorf("manifest: issuer %q differs from the policy's %q", m.Issuer, m.Policy.Issuer)
	}
	if len(m.IssuerKeys) != len(m.Policy.IssuerKeys) {
		return fmt.Errorf("manifest: lists %d issuer keys, the policy %d", len(m.IssuerKeys), len(m.Policy.IssuerKeys))
	}
	kids := map[string]bool{}
	for i, k := range m.IssuerKeys {
		if k.Label != m.Policy.IssuerKeys[i] {
			return fmt.Errorf("manifest: issuer key %d is %q, the policy lists %q", i, k.Label, m.Policy.IssuerKeys[i])
		}
		if k.Kid != k.JWK.Kid || k.Kid != k.JWK.Thumbprint() {
			return fmt.Errorf("manifest: issuer key %s: kid is not the key's RFC 7638 thumbprint", k.Label)
		}
		if _, err := k.JWK.PublicKey(); err != nil {
			return fmt.Errorf("manifest: issuer key %s: %w", k.Label, err)
		}
		if kids[k.Kid] {
			return fmt.Errorf("manifest: kid %s is listed twice", k.Kid)
		}
		kids[k.Kid] = true
		if k.Signs != (k.Label == m.Policy.SigningKey) {
			return fmt.Errorf("manifest: issuer key %s: signs=%v, but the policy's signing key is %s", k.Label, k.Signs, m.Policy.SigningKey)
		}
	}
	if m.CheckpointVerifierKey == "" {
		return errors.New("manifest: checkpoint_verifier_key is empty")
	}
	return nil
}

// Signer returns the key that signs.
func (m Manifest) Signer() IssuerKey {
	for _, k := range m.IssuerKeys {
		if k.Signs {
			return k
		}
	}
	return IssuerKey{}
}

// Kids returns the set of published kids.
func (m Manifest) Kids() map[string]jwk.Key {
	out := make(map[string]jwk.Key, len(m.IssuerKeys))
	for _, k := range m.IssuerKeys {
		out[k.Kid] = k.JWK
	}
	return out
}

func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// isThumbprint reports a base64url (unpadded) SHA-256: 43 characters.
func isThumbprint(s string) bool {
	if len(s) != 43 {
		return false
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
