package service

import (
	"context"
	"crypto/ecdsa"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/agentkeys/broker/enclave/attester"
	"github.com/agentkeys/broker/enclave/keys"
	"github.com/agentkeys/broker/enclave/logtree"
	"github.com/agentkeys/broker/enclave/origin"
	"github.com/agentkeys/broker/shared/jwk"
	"github.com/agentkeys/broker/shared/manifest"
	"github.com/agentkeys/broker/shared/policy"
	"github.com/agentkeys/broker/shared/protocol"
)

// Config configures a Service.
type Config struct {
	Policy   policy.Policy
	Seed     []byte // 32 bytes; New derives the keys and keeps no reference to it
	Attester attester.Attester
	Logger   *slog.Logger
	Now      func() time.Time // default time.Now; tests move the clock
	// IssuerOrigin says who terminates TLS for the issuer origin
	// (manifest.OriginHost or manifest.OriginEnclave; default host). It is
	// recorded in the attested manifest.
	IssuerOrigin string
	// Audit tunes the audit log's batching and bounds (enclave/logtree);
	// zero fields take its defaults. Origin and Key are set by New: the
	// default log's origin and the checkpoint key.
	Audit logtree.Config
	// OriginACME and OriginSelfSigned configure the issuer origin the enclave
	// serves with IssuerOrigin enclave (see enclave/origin).
	OriginACME       *origin.ACME
	OriginSelfSigned bool
	// SessionCache is how many verified session tokens are remembered, so
	// that a mint with one skips its signature check (default
	// DefaultSessionCache; negative: none).
	SessionCache int
}

// Validate checks the configuration.
func (c Config) Validate() error {
	if err := c.Policy.Validate(); err != nil {
		return err
	}
	if len(c.Seed) != keys.SeedSize {
		return fmt.Errorf("seed must be %d bytes, not %d", keys.SeedSize, len(c.Seed))
	}
	if c.Attester == nil {
		return errors.New("an attester is required")
	}
	return nil
}

// Service answers the enclave protocol. It is safe for concurrent use.
type Service struct {
	sessions *sessionCache // verified session tokens; nil for none
	policy   policy.Policy
	attester attester.Attester
	log      *slog.Logger
	now      func() time.Time

	issuerKey  *ecdsa.PrivateKey // signs OIDC JWTs (policy.SigningKey)
	issuerKid  string
	issuerJWKs []jwk.Key // every published issuer key, in policy order
	sessionKey *ecdsa.PrivateKey
	sessionKid string
	audit      *logtree.Log // the audit log, signed with audit/checkpoint/v1

	issuer       *url.URL // the parsed policy issuer
	api          *url.URL // the parsed policy api_url; sign-in messages must name its host[:port]
	policyDigest string   // policy.Digest(), fixed for the enclave's life
	manifest     []byte   // the key manifest every attestation document binds, encoded once

	origin *origin.Origin // the issuer origin, with issuer_origin enclave; else nil

	nonces *nonces // sign-in nonces: a per-boot MAC key and the used set

	clockSourceFile string // names the kernel's clock source, for Info; tests point it elsewhere
}

// SessionAudience is the aud of session tokens. It never equals an OIDC
// audience, so a session token is useless as a web identity token.
const SessionAudience = "agentkeys-session"

// ClockSkew is the leeway allowed on sign-in message times.
const ClockSkew = 60 * time.Second

// New derives the keys from the seed and returns a Service.
func New(cfg Config) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("enclave: %w", err)
	}
	set, err := keys.DeriveSet(cfg.Seed)
	if err != nil {
		return nil, fmt.Errorf("enclave: failed to derive keys: %w", err)
	}
	s := &Service{
		policy:     cfg.Policy,
		attester:   cfg.Attester,
		log:        cfg.Logger,
		now:        cfg.Now,
		sessionKey: set.Session,
		sessions:   newSessionCache(cfg.SessionCache),

		clockSourceFile: clockSourceFile,
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	var mkeys []manifest.IssuerKey
	for _, label := range cfg.Policy.IssuerKeys {
		k, err := keys.P256(cfg.Seed, label)
		if err != nil {
			return nil, fmt.Errorf("enclave: failed to derive %s: %w", label, err)
		}
		j, err := jwk.FromP256(&k.PublicKey)
		if err != nil {
			return nil, err
		}
		if label == cfg.Policy.SigningKey {
			s.issuerKey, s.issuerKid = k, j.Kid
		}
		s.issuerJWKs = append(s.issuerJWKs, j)
		mkeys = append(mkeys, manifest.IssuerKey{Label: label, Kid: j.Kid, Signs: label == cfg.Policy.SigningKey, JWK: j})
	}
	sj, err := jwk.FromP256(&set.Session.PublicKey)
	if err != nil {
		return nil, err
	}
	s.sessionKid = sj.Kid
	u, err := url.Parse(cfg.Policy.Issuer)
	if err != nil {
		return nil, fmt.Errorf("enclave: issuer: %w", err)
	}
	s.issuer, s.policyDigest = u, cfg.Policy.Digest()
	if s.api, err = url.Parse(cfg.Policy.APIURL); err != nil {
		return nil, fmt.Errorf("enclave: api_url: %w", err)
	}
	lcfg := cfg.Audit
	lcfg.Origin, lcfg.Key = checkpointKeyName(u), set.Checkpoint
	if lcfg.Now == nil {
		lcfg.Now = s.now
	}
	if s.audit, err = logtree.New(lcfg); err != nil {
		return nil, fmt.Errorf("enclave: %w", err)
	}
	originMode := cfg.IssuerOrigin
	if originMode == "" {
		originMode = manifest.OriginHost
	}
	var originSPKI, acmeThumbprint string
	if originMode == manifest.OriginEnclave {
		if s.origin, err = newOrigin(cfg, s.issuerJWKs); err != nil {
			return nil, err
		}
		originSPKI, acmeThumbprint = s.origin.SPKISHA256(), s.origin.AccountKeyThumbprint()
	}
	s.manifest, err = manifest.Manifest{
		Version:               manifest.Version,
		Mode:                  cfg.Attester.Mode(),
		Issuer:                cfg.Policy.Issuer,
		IssuerOrigin:          originMode,
		Policy:                cfg.Policy,
		PolicyDigest:          s.policyDigest,
		IssuerKeys:            mkeys,
		CheckpointVerifierKey: s.audit.VerifierKey(), // the default log's: no log is chosen yet

		IssuerOriginTLSSPKISHA256: originSPKI,
		ACMEAccountKeyThumbprint:  acmeThumbprint,
	}.Marshal()
	if err != nil {
		return nil, fmt.Errorf("enclave: %w", err)
	}
	s.nonces, err = newNonces(cfg.Attester, time.Duration(cfg.Policy.NonceLifetime)*time.Second)
	if err != nil {
		return nil, fmt.Errorf("enclave: %w", err)
	}
	return s, nil
}

// newOrigin derives the issuer origin's TLS key and ACME account key from the
// seed and builds the origin that serves discovery and the JWKS.
func newOrigin(cfg Config, jwks []jwk.Key) (*origin.Origin, error) {
	tlsKey, err := keys.P256(cfg.Seed, origin.LabelTLS)
	if err != nil {
		return nil, fmt.Errorf("enclave: failed to derive %s: %w", origin.LabelTLS, err)
	}
	acctKey, err := keys.P256(cfg.Seed, origin.LabelACMEAccount)
	if err != nil {
		return nil, fmt.Errorf("enclave: failed to derive %s: %w", origin.LabelACMEAccount, err)
	}
	o, err := origin.New(origin.Config{Issuer: cfg.Policy.Issuer, TLSKey: tlsKey, AccountKey: acctKey, JWKS: jwks,
		ACME: cfg.OriginACME, SelfSigned: cfg.OriginSelfSigned, Logger: cfg.Logger, Now: cfg.Now})
	if err != nil {
		return nil, fmt.Errorf("enclave: %w", err)
	}
	return o, nil
}

// Origin is the issuer origin the enclave serves, or nil with issuer_origin host.
func (s *Service) Origin() *origin.Origin { return s.origin }

// checkpointKeyName names the audit checkpoint key of the default log after
// the issuer: "broker.example.com/audit" (host and path, no scheme). A named
// log's is this + "/NAME" (auditlog.LogOrigin), chosen at audit_resume.
func checkpointKeyName(issuer *url.URL) string {
	return issuer.Host + issuer.Path + "/audit"
}

// Handle implements protocol.Handler.
func (s *Service) Handle(ctx context.Context, op protocol.Op, body []byte) (any, error) {
	switch op {
	case protocol.OpInfo:
		var req protocol.InfoRequest
		if err := decode(body, &req); err != nil {
			return nil, err
		}
		return s.Info(), nil
	case protocol.OpAttest:
		var req protocol.AttestRequest
		if err := decode(body, &req); err != nil {
			return nil, err
		}
		return s.Attest(req)
	case protocol.OpSessionNonce:
		var req protocol.SessionNonceRequest
		if err := decode(body, &req); err != nil {
			return nil, err
		}
		return s.SessionNonce()
	case protocol.OpCreateSession:
		var req protocol.CreateSessionRequest
		if err := decode(body, &req); err != nil {
			return nil, err
		}
		return s.CreateSession(req)
	case protocol.OpVerifySession:
		var req protocol.VerifySessionRequest
		if err := decode(body, &req); err != nil {
			return nil, err
		}
		sess, err := s.VerifySession(req.Token)
		if err != nil {
			return nil, err
		}
		return protocol.VerifySessionResponse{Session: sess}, nil
	case protocol.OpMintOIDC:
		var req protocol.MintOIDCRequest
		if err := decode(body, &req); err != nil {
			return nil, err
		}
		return s.MintOIDC(req)
	case protocol.OpAuditAppend:
		var req protocol.AuditAppendRequest
		if err := decode(body, &req); err != nil {
			return nil, err
		}
		return s.AuditAppend(req)
	case protocol.OpAuditResume:
		var req protocol.AuditResumeRequest
		if err := decode(body, &req); err != nil {
			return nil, err
		}
		return s.AuditResume(req)
	case protocol.OpOriginState, protocol.OpOriginInstall:
		return s.handleOrigin(op, body)
	}
	return nil, protocol.Errorf(protocol.CodeUnknownOp, "unknown operation %q", truncate(string(op), 64))
}

func (s *Service) handleOrigin(op protocol.Op, body []byte) (any, error) {
	if s.origin == nil {
		return nil, protocol.Errorf(protocol.CodeBadRequest, "this enclave does not serve the issuer origin (issuer_origin host); start it with --issuer-origin enclave")
	}
	if op == protocol.OpOriginState {
		var req protocol.OriginStateRequest
		if err := decode(body, &req); err != nil {
			return nil, err
		}
		return s.origin.State(), nil
	}
	var req protocol.OriginInstallRequest
	if err := decode(body, &req); err != nil {
		return nil, err
	}
	return s.origin.Install(req.Chain)
}

func decode(body []byte, v any) error {
	if err := protocol.Unmarshal(body, v); err != nil {
		return protocol.Errorf(protocol.CodeBadRequest, "malformed request body: %v", err)
	}
	return nil
}

// Info describes the enclave. Everything in it is public.
func (s *Service) Info() protocol.InfoResponse {
	return protocol.InfoResponse{
		ProtocolVersion:       protocol.Version,
		Mode:                  s.attester.Mode(),
		Policy:                s.policy,
		PolicyDigest:          s.policyDigest,
		IssuerKeys:            append([]jwk.Key(nil), s.issuerJWKs...),
		SigningKid:            s.issuerKid,
		CheckpointVerifierKey: s.audit.VerifierKey(),
		PCRs:                  s.attester.PCRs(),
		Manifest:              s.manifest,
		ClockSource:           clockSource(s.clockSourceFile),
		Time:                  s.now().UnixMilli(),
	}
}

// clockSourceFile is where Linux names the clock source its time comes from:
// in a Nitro Enclave the one the kernel picked from what the hypervisor offers
// (kvm-clock, or a PTP clock), never the host's time.
const clockSourceFile = "/sys/devices/system/clocksource/clocksource0/current_clocksource"

// maxClockSource bounds the clock source name read from sysfs.
const maxClockSource = 64

// clockSource returns the clock source named in path, or "unknown" if the file
// is absent, empty, too long or holds anything but a plain name. It reads at
// most maxClockSource+1 bytes.
func clockSource(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxClockSource+1))
	name := strings.TrimSpace(string(b))
	if err != nil || name == "" || len(name) > maxClockSource {
		return "unknown"
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return "unknown"
		}
	}
	return name
}

// Attest returns a fresh attestation document binding the key manifest.
func (s *Service) Attest(req protocol.AttestRequest) (protocol.AttestResponse, error) {
	if len(req.Nonce) < protocol.MinNonceSize || len(req.Nonce) > protocol.MaxNonceSize {
		return protocol.AttestResponse{}, protocol.Errorf(protocol.CodeBadRequest, "nonce must be %d to %d bytes", protocol.MinNonceSize, protocol.MaxNonceSize)
	}
	// Every document binds the same manifest, so that the bytes the host
	// serves at /.well-known/agentkeys-manifest.json match any document.
	digest := manifest.Digest(s.manifest)
	doc, err := s.attester.Attest(req.Nonce, digest[:], nil)
	if err != nil {
		return protocol.AttestResponse{}, fmt.Errorf("failed to attest: %w", err)
	}
	return protocol.AttestResponse{Document: doc, Manifest: s.manifest}, nil
}

// SessionNonce issues a single-use sign-in nonce. It stores nothing: the nonce
// carries its issue time and a MAC under a key made at boot (see nonces).
func (s *Service) SessionNonce() (protocol.SessionNonceResponse, error) {
	nonce, exp, err := s.nonces.issue(s.now(), s.attester)
	if err != nil {
		return protocol.SessionNonceResponse{}, err
	}
	return protocol.SessionNonceResponse{Nonce: nonce, ExpiresAt: exp.Unix()}, nil
}

func (s *Service) randomID() (string, error) {
	var b [16]byte
	if _, err := io.ReadFull(s.attester, b[:]); err != nil {
		return "", fmt.Errorf("failed to read randomness: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
