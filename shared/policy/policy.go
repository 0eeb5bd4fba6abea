// Package policy is the one place where the enclave's signing policy is defined.
//
// The enclave loads a Policy at start and enforces it on every operation: which
// issuer URL it signs for, which audiences a JWT may carry, the TTL bounds of a
// minted JWT, how long a session lasts, and which key labels it signs and publishes
// with. The host reads the same Policy back through the Info operation, so both
// halves agree on the bounds they report to callers, but only the enclave's copy
// is authoritative: a compromised host cannot widen it.
//
// # Measurement
//
// In nitro mode the policy file is part of the enclave image, so PCR0 commits to
// it; in simulated mode the enclave measures the file's bytes into PCR2. Either way
// [Policy.Digest] names the exact policy an enclave enforces, and the Info
// operation reports it.
//
// # File format
//
// A JSON object; every field is optional and defaults as [Default] says:
//
//	{
//	  "issuer": "https://broker.example.com",
//	  "api_url": "https://broker.example.com",
//	  "audiences": ["sts.amazonaws.com"],
//	  "jwt_ttl_default_seconds": 300,
//	  "jwt_ttl_min_seconds": 60,
//	  "jwt_ttl_max_seconds": 3600,
//	  "session_lifetime_seconds": 86400,
//	  "nonce_lifetime_seconds": 300,
//	  "issuer_keys": ["oidc/issuer/v1"],
//	  "signing_key": "oidc/issuer/v1",
//	  "chain_ids": [],
//	  "aws_duration_default_seconds": 3600,
//	  "aws_duration_min_seconds": 900,
//	  "aws_duration_max_seconds": 43200,
//	  "allow_host_asserted_wallet": false
//	}
//
// api_url (default: the issuer) is the origin of the host's API: sign-in
// messages name its host as their domain and a URI under it. It differs from
// the issuer when the enclave serves the issuer origin itself (docs/trust.md),
// so that the enclave's origin serves discovery and JWKS and nothing else.
//
// issuer_keys lists every key the JWKS publishes; signing_key (default: the first
// of issuer_keys) names the one that signs, and must be listed. chain_ids, when not
// empty, is the allowlist of EIP-155 chain ids a sign-in message may name. The
// aws_duration bounds are the lifetime of AWS credentials the host may ask STS for
// (STS's own floor is 900 s and its ceiling 43200 s).
//
// Unknown fields, a key given twice and a key in another case ("Issuer") are
// errors (shared/strictjson), so a typo cannot silently fall back to a default
// and no two readers of the file can see two different policies.
package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/agentkeys/broker/shared/strictjson"
)

// MaxFileSize bounds the policy file.
const MaxFileSize = 64 << 10

// MaxAudiences bounds the audience allowlist.
const MaxAudiences = 16

// Hard limits that no policy may exceed.
const (
	// HardMinJWTTTL and HardMaxJWTTTL bound the JWT TTL range a policy may allow
	// (AWS accepts web identity tokens with any lifetime; we keep them short).
	HardMinJWTTTL = 60
	HardMaxJWTTTL = 3600
	// HardMaxSessionLifetime is 30 days.
	HardMaxSessionLifetime = 30 * 24 * 3600
	// HardMaxNonceLifetime bounds how long a sign-in nonce stays valid.
	HardMaxNonceLifetime = 3600
	// HardMinAWSDuration and HardMaxAWSDuration are STS's own bounds on
	// DurationSeconds for AssumeRoleWithWebIdentity and AssumeRole.
	HardMinAWSDuration = 900
	HardMaxAWSDuration = 43200
	// MaxChainIDs bounds the chain id allowlist.
	MaxChainIDs = 64
)

// Policy is the enclave's signing policy. See the package documentation for the
// file format and defaults.
type Policy struct {
	// Issuer is the OIDC issuer URL, normalised by [NormalizeIssuer]. It is the
	// iss of every JWT, and sign-in messages must name its host as their domain.
	Issuer string `json:"issuer"`
	// APIURL is the URL of the host's API, normalised like the issuer; it
	// defaults to the issuer (one origin). Sign-in messages must name its host
	// as their domain and a URI under it.
	APIURL string `json:"api_url"`
	// Audiences lists the aud values a minted JWT may carry; the first is the default.
	Audiences []string `json:"audiences"`
	// JWTTTLDefault, JWTTTLMin and JWTTTLMax bound the lifetime of minted JWTs, in seconds.
	JWTTTLDefault int64 `json:"jwt_ttl_default_seconds"`
	JWTTTLMin     int64 `json:"jwt_ttl_min_seconds"`
	JWTTTLMax     int64 `json:"jwt_ttl_max_seconds"`
	// SessionLifetime is how long a session token lasts, in seconds.
	SessionLifetime int64 `json:"session_lifetime_seconds"`
	// NonceLifetime is how long a sign-in nonce may be used, in seconds.
	NonceLifetime int64 `json:"nonce_lifetime_seconds"`
	// IssuerKeys are the key labels published in the JWKS: the signing key and,
	// during a rotation, the next or the previous one.
	IssuerKeys []string `json:"issuer_keys"`
	// SigningKey is the label of the key that signs JWTs; it must be one of
	// IssuerKeys. Parse fills it with IssuerKeys[0] when the file leaves it out.
	SigningKey string `json:"signing_key"`
	// ChainIDs, when not empty, lists the EIP-155 chain ids a sign-in message
	// may name; empty allows any.
	ChainIDs []uint64 `json:"chain_ids"`
	// AWSDurationDefault, AWSDurationMin and AWSDurationMax bound the lifetime
	// of AWS credentials minted for a session, in seconds.
	AWSDurationDefault int64 `json:"aws_duration_default_seconds"`
	AWSDurationMin     int64 `json:"aws_duration_min_seconds"`
	AWSDurationMax     int64 `json:"aws_duration_max_seconds"`
	// AllowHostAssertedWallet lets the host mint for a wallet that it vouches for
	// (compatibility with an existing session backend) without a session token.
	// The enclave then cannot check the wallet itself; every such JWT and audit
	// record is marked. Off by default.
	AllowHostAssertedWallet bool `json:"allow_host_asserted_wallet"`
}

// Default returns the default policy for the given issuer.
func Default(issuer string) Policy {
	return Policy{
		Issuer:          issuer,
		APIURL:          issuer,
		Audiences:       []string{"sts.amazonaws.com"},
		JWTTTLDefault:   300,
		JWTTTLMin:       60,
		JWTTTLMax:       3600,
		SessionLifetime: 24 * 3600,
		NonceLifetime:   300,
		IssuerKeys:      []string{"oidc/issuer/v1"},
		SigningKey:      "oidc/issuer/v1",
		ChainIDs:        []uint64{},

		AWSDurationDefault: 3600,
		AWSDurationMin:     HardMinAWSDuration,
		AWSDurationMax:     HardMaxAWSDuration,
	}
}

// Parse reads a policy file: defaults, overridden by the fields present, then
// validated and with the issuer normalised.
func Parse(data []byte) (Policy, error) {
	if len(data) > MaxFileSize {
		return Policy{}, fmt.Errorf("policy: file is larger than %d bytes", MaxFileSize)
	}
	p := Default("")
	p.SigningKey = "" // unless the file names one, the first of issuer_keys signs
	if err := strictjson.Decode(data, &p, strictjson.Limits{MaxSize: MaxFileSize}); err != nil {
		return Policy{}, fmt.Errorf("policy: failed to parse: %w", err)
	}
	if err := p.Normalize(); err != nil {
		return Policy{}, err
	}
	return p, nil
}

// Load reads and parses a policy file, returning the policy and the file's bytes
// (which the simulated enclave measures).
func Load(path string) (Policy, []byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return Policy{}, nil, fmt.Errorf("policy: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return Policy{}, nil, fmt.Errorf("policy: failed to read %s: %w", path, err)
	}
	p, err := Parse(data)
	if err != nil {
		return Policy{}, nil, fmt.Errorf("%w (in %s)", err, path)
	}
	return p, data, nil
}

// Normalize normalises the issuer and the API URL (default: the issuer) and
// validates the policy.
func (p *Policy) Normalize() error {
	iss, err := NormalizeIssuer(p.Issuer)
	if err != nil {
		return fmt.Errorf("policy: issuer: %w", err)
	}
	p.Issuer = iss
	if p.APIURL == "" {
		p.APIURL = iss
	}
	api, err := NormalizeIssuer(p.APIURL)
	if err != nil {
		return fmt.Errorf("policy: api_url: %w", err)
	}
	p.APIURL = api
	if p.SigningKey == "" && len(p.IssuerKeys) > 0 {
		p.SigningKey = p.IssuerKeys[0]
	}
	if p.ChainIDs == nil {
		p.ChainIDs = []uint64{}
	}
	return p.Validate()
}

// Validate checks every bound. The issuer and the API URL must already be
// normalised.
func (p Policy) Validate() error {
	if iss, err := NormalizeIssuer(p.Issuer); err != nil {
		return fmt.Errorf("policy: issuer: %w", err)
	} else if iss != p.Issuer {
		return fmt.Errorf("policy: issuer %q is not normalised (want %q)", p.Issuer, iss)
	}
	if api, err := NormalizeIssuer(p.APIURL); err != nil {
		return fmt.Errorf("policy: api_url: %w", err)
	} else if api != p.APIURL {
		return fmt.Errorf("policy: api_url %q is not normalised (want %q)", p.APIURL, api)
	}
	if len(p.Audiences) == 0 || len(p.Audiences) > MaxAudiences {
		return fmt.Errorf("policy: audiences must list one to %d audiences", MaxAudiences)
	}
	seen := map[string]bool{}
	for _, a := range p.Audiences {
		if a == "" || len(a) > 256 || strings.TrimSpace(a) != a {
			return fmt.Errorf("policy: audience %q is empty, too long or has surrounding spaces", a)
		}
		if seen[a] {
			return fmt.Errorf("policy: audience %q is listed twice", a)
		}
		seen[a] = true
	}
	if p.JWTTTLMin < HardMinJWTTTL || p.JWTTTLMax > HardMaxJWTTTL || p.JWTTTLMin > p.JWTTTLMax {
		return fmt.Errorf("policy: jwt ttl bounds [%d, %d] must lie within [%d, %d]",
			p.JWTTTLMin, p.JWTTTLMax, HardMinJWTTTL, HardMaxJWTTTL)
	}
	if p.JWTTTLDefault < p.JWTTTLMin || p.JWTTTLDefault > p.JWTTTLMax {
		return fmt.Errorf("policy: jwt_ttl_default_seconds %d must lie within [%d, %d]",
			p.JWTTTLDefault, p.JWTTTLMin, p.JWTTTLMax)
	}
	if p.SessionLifetime < 60 || p.SessionLifetime > HardMaxSessionLifetime {
		return fmt.Errorf("policy: session_lifetime_seconds %d must lie within [60, %d]",
			p.SessionLifetime, HardMaxSessionLifetime)
	}
	if p.NonceLifetime < 10 || p.NonceLifetime > HardMaxNonceLifetime {
		return fmt.Errorf("policy: nonce_lifetime_seconds %d must lie within [10, %d]",
			p.NonceLifetime, HardMaxNonceLifetime)
	}
	if len(p.IssuerKeys) == 0 || len(p.IssuerKeys) > 4 {
		return errors.New("policy: issuer_keys must list one to four key labels")
	}
	labels := map[string]bool{}
	for _, l := range p.IssuerKeys {
		if !strings.HasPrefix(l, "oidc/issuer/") {
			return fmt.Errorf("policy: issuer key label %q must start with oidc/issuer/", l)
		}
		if labels[l] {
			return fmt.Errorf("policy: issuer key label %q is listed twice", l)
		}
		labels[l] = true
	}
	if !labels[p.SigningKey] {
		return fmt.Errorf("policy: signing_key %q must be one of issuer_keys", p.SigningKey)
	}
	if len(p.ChainIDs) > MaxChainIDs {
		return fmt.Errorf("policy: chain_ids lists more than %d chain ids", MaxChainIDs)
	}
	chains := map[uint64]bool{}
	for _, id := range p.ChainIDs {
		if id == 0 || chains[id] {
			return fmt.Errorf("policy: chain id %d is zero or listed twice", id)
		}
		chains[id] = true
	}
	if p.AWSDurationMin < HardMinAWSDuration || p.AWSDurationMax > HardMaxAWSDuration || p.AWSDurationMin > p.AWSDurationMax {
		return fmt.Errorf("policy: aws duration bounds [%d, %d] must lie within [%d, %d]",
			p.AWSDurationMin, p.AWSDurationMax, HardMinAWSDuration, HardMaxAWSDuration)
	}
	if p.AWSDurationDefault < p.AWSDurationMin || p.AWSDurationDefault > p.AWSDurationMax {
		return fmt.Errorf("policy: aws_duration_default_seconds %d must lie within [%d, %d]",
			p.AWSDurationDefault, p.AWSDurationMin, p.AWSDurationMax)
	}
	return nil
}

// AllowsChain reports whether a sign-in message may name chain id.
func (p Policy) AllowsChain(id uint64) bool {
	if len(p.ChainIDs) == 0 {
		return true
	}
	for _, c := range p.ChainIDs {
		if c == id {
			return true
		}
	}
	return false
}

// AWSDuration resolves a requested AWS credential lifetime (0 means the
// default) against the policy bounds.
func (p Policy) AWSDuration(requested int64) (time.Duration, error) {
	if requested == 0 {
		requested = p.AWSDurationDefault
	}
	if requested < p.AWSDurationMin || requested > p.AWSDurationMax {
		return 0, fmt.Errorf("duration_seconds must be between %d and %d", p.AWSDurationMin, p.AWSDurationMax)
	}
	return time.Duration(requested) * time.Second, nil
}

// Digest is the SHA-256 of the policy's canonical JSON encoding, hex encoded.
func (p Policy) Digest() string {
	b, err := json.Marshal(p)
	if err != nil {
		panic(err) // a struct of strings, ints and bools always encodes
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// TTL resolves a requested JWT TTL (0 means the default) against the policy.
func (p Policy) TTL(requested int64) (time.Duration, error) {
	if requested == 0 {
		requested = p.JWTTTLDefault
	}
	if requested < p.JWTTTLMin || requested > p.JWTTTLMax {
		return 0, fmt.Errorf("ttl_seconds must be between %d and %d", p.JWTTTLMin, p.JWTTTLMax)
	}
	return time.Duration(requested) * time.Second, nil
}

// Audience resolves a requested audience ("" means the default) against the allowlist.
func (p Policy) Audience(requested string) (string, error) {
	if requested == "" {
		return p.Audiences[0], nil
	}
	for _, a := range p.Audiences {
		if a == requested {
			return a, nil
		}
	}
	return "", fmt.Errorf("audience must be one of %s", strings.Join(p.Audiences, ", "))
}

// NormalizeIssuer validates an issuer URL and returns its normal form: scheme and
// host lowercased, no trailing slash, no query, no fragment, no user info. AWS
// compares iss byte for byte with the URL its OIDC provider was registered with,
// so everything that signs or publishes the issuer must use this form.
//
// The scheme must be https, except http on a loopback host (local development).
func NormalizeIssuer(raw string) (string, error) {
	if raw == "" {
		return "", errors.New("issuer URL is empty")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("issuer URL %q does not parse: %w", raw, err)
	}
	if u.Opaque != "" || u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(raw, "#") {
		return "", fmt.Errorf("issuer URL %q must not carry user info, a query or a fragment", raw)
	}
	u.Scheme = strings.ToLower(u.Scheme)
	u.Host = strings.ToLower(u.Host)
	if u.Scheme != "https" && u.Scheme != "http" {
		return "", fmt.Errorf("issuer URL %q must use https", raw)
	}
	if u.Hostname() == "" {
		return "", fmt.Errorf("issuer URL %q has no host", raw)
	}
	switch u.Scheme {
	case "https":
		if u.Port() == "443" {
			u.Host = u.Hostname()
		}
	case "http":
		if !IsLoopbackHost(u.Hostname()) {
			return "", fmt.Errorf("issuer URL %q must use https (http is allowed only on loopback, for development)", raw)
		}
	default:
		return "", fmt.Errorf("issuer URL %q must use https", raw)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return u.String(), nil
}

// IsLoopbackHost reports whether host (without port) is localhost or a loopback IP.
func IsLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}
