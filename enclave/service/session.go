package service

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/agentkeys/broker/shared/protocol"
	"github.com/agentkeys/broker/shared/siwe"
)

// sessionClaims are the claims of a session token.
type sessionClaims struct {
	SessionID string `json:"sid"`
	jwt.RegisteredClaims
}

// CreateSession verifies a signed sign-in message and returns a session token.
//
// The checks, in order: sizes; the message parses as EIP-4361; its domain is the
// issuer's host and its URI lies under the issuer; its times hold (issued-at not
// in the future, expiration not passed, not-before reached); its nonce was issued
// by this enclave and is unexpired; the signature recovers to the message's
// address. Only then is the nonce consumed, so exactly one session is created per
// nonce.
func (s *Service) CreateSession(req protocol.CreateSessionRequest) (protocol.CreateSessionResponse, error) {
	var zero protocol.CreateSessionResponse
	if len(req.Message) > protocol.MaxSignInMessage {
		return zero, protocol.Errorf(protocol.CodeBadRequest, "sign-in message is longer than %d bytes", protocol.MaxSignInMessage)
	}
	if len(req.Signature) != 65 {
		return zero, protocol.Errorf(protocol.CodeSignInRejected, "signature must be 65 bytes (r||s||v), not %d", len(req.Signature))
	}
	msg, err := siwe.Parse(req.Message)
	if err != nil {
		return zero, protocol.Errorf(protocol.CodeSignInRejected, "%v", err)
	}
	if err := s.checkOrigin(msg); err != nil {
		return zero, err
	}
	now := s.now()
	if err := msg.CheckTime(now, ClockSkew); err != nil {
		return zero, protocol.Errorf(protocol.CodeSignInRejected, "%v", err)
	}
	if err := s.nonces.check(msg.Nonce, now); err != nil {
		return zero, err
	}
	_, wallet, err := siwe.VerifyText(req.Message, req.Signature)
	if err != nil {
		return zero, protocol.Errorf(protocol.CodeSignInRejected, "%v", err)
	}
	if err := s.nonces.use(msg.Nonce, now); err != nil {
		return zero, err
	}

	sid, err := s.randomID()
	if err != nil {
		return zero, err
	}
	exp := now.Add(time.Duration(s.policy.SessionLifetime) * time.Second)
	if !msg.ExpirationTime.IsZero() && msg.ExpirationTime.Before(exp) {
		// The wallet owner said how long this sign-in may last.
		exp = msg.ExpirationTime
	}
	if !exp.After(now) {
		// CheckTime allows clock skew; a session must still outlive its creation.
		return zero, protocol.Errorf(protocol.CodeSignInRejected, "sign-in message has expired")
	}
	claims := sessionClaims{
		SessionID: sid,
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    s.policy.Issuer,
			Subject:   wallet,
			Audience:  jwt.ClaimStrings{SessionAudience},
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now.Add(-ClockSkew)),
			ExpiresAt: jwt.NewNumericDate(exp),
		},
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	tok.Header["kid"] = s.sessionKid
	signed, err := tok.SignedString(s.sessionKey)
	if err != nil {
		return zero, fmt.Errorf("failed to sign session token: %w", err)
	}
	s.log.Info("session created", "wallet", wallet, "session_id", sid, "expires_at", exp.Unix())
	return protocol.CreateSessionResponse{
		Token:   signed,
		Session: protocol.Session{Wallet: wallet, SessionID: sid, ExpiresAt: exp.Unix()},
	}, nil
}

// checkOrigin checks that the message was made for this issuer: the domain is
// the issuer's host[:port], the scheme (when given) is the issuer's, and the URI
// is the issuer URL or lies beneath it. Without this a signature collected by
// another site could be replayed here.
func (s *Service) checkOrigin(msg *siwe.Message) error {
	iss := s.issuer
	if !strings.EqualFold(msg.Domain, iss.Host) {
		return protocol.Errorf(protocol.CodeSignInRejected, "message domain %q is not this issuer's (%q)", truncate(msg.Domain, 80), iss.Host)
	}
	if msg.Scheme != "" && !strings.EqualFold(msg.Scheme, iss.Scheme) {
		return protocol.Errorf(protocol.CodeSignInRejected, "message scheme %q is not this issuer's (%q)", truncate(msg.Scheme, 16), iss.Scheme)
	}
	u, err := url.Parse(msg.URI)
	if err != nil {
		return protocol.Errorf(protocol.CodeSignInRejected, "message URI does not parse")
	}
	path := strings.TrimRight(iss.Path, "/")
	if hasDotSegment(u.Path) {
		return protocol.Errorf(protocol.CodeSignInRejected, "message URI must not contain dot segments")
	}
	if !strings.EqualFold(u.Scheme, iss.Scheme) || !strings.EqualFold(u.Host, iss.Host) ||
		(u.Path != path && !strings.HasPrefix(u.Path, path+"/")) {
		return protocol.Errorf(protocol.CodeSignInRejected, "message URI %q is not under the issuer %q", truncate(msg.URI, 120), s.policy.Issuer)
	}
	return nil
}

// hasDotSegment reports a "." or ".." path segment, which would let a URI
// textually under the issuer's path resolve outside it.
func hasDotSegment(p string) bool {
	for _, seg := range strings.Split(p, "/") {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// VerifySession verifies a session token: ES256 only, signed by this enclave's
// session key, this issuer, the session audience, unexpired.
func (s *Service) VerifySession(token string) (protocol.Session, error) {
	if token == "" {
		return protocol.Session{}, protocol.Errorf(protocol.CodeUnauthorized, "missing session token")
	}
	if len(token) > protocol.MaxSessionToken {
		return protocol.Session{}, protocol.Errorf(protocol.CodeUnauthorized, "session token is longer than %d bytes", protocol.MaxSessionToken)
	}
	var claims sessionClaims
	_, err := jwt.ParseWithClaims(token, &claims, func(t *jwt.Token) (any, error) {
		if kid, _ := t.Header["kid"].(string); kid != s.sessionKid {
			return nil, errors.New("unknown key id")
		}
		return &s.sessionKey.PublicKey, nil
	},
		jwt.WithValidMethods([]string{"ES256"}),
		jwt.WithIssuer(s.policy.Issuer),
		jwt.WithAudience(SessionAudience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithTimeFunc(s.now),
	)
	if err != nil {
		return protocol.Session{}, protocol.Errorf(protocol.CodeUnauthorized, "invalid session token: %v", sessionError(err))
	}
	if siwe.ValidateAddress(claims.Subject) != nil || strings.ToLower(claims.Subject) != claims.Subject || claims.SessionID == "" {
		return protocol.Session{}, protocol.Errorf(protocol.CodeUnauthorized, "invalid session token: malformed claims")
	}
	return protocol.Session{Wallet: claims.Subject, SessionID: claims.SessionID, ExpiresAt: claims.ExpiresAt.Unix()}, nil
}

// sessionError turns a jwt error into a short reason that leaks nothing.
func sessionError(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return "expired; sign in again"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return "bad signature"
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "wrong issuer"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "not a session token"
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "not valid yet"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "missing a required claim"
	}
	return "rejected"
}
