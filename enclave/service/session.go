package service

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/agentkeys/broker/shared/protocol"
	"github.com/agentkeys/broker/shared/siwe"
)

// sessionClaims are the claims of a session token. They are private to the
// enclave: only the enclave that signed a session token verifies it.
type sessionClaims struct {
	SessionID string `json:"sid"`
	jwt.RegisteredClaims
	// ChainID is the EIP-155 chain id of the sign-in message. A pointer, so
	// that a token without it is refused rather than read as chain 0.
	ChainID *uint64 `json:"chain_id"`
}

// CreateSession verifies a signed sign-in message and returns a session token.
//
// The checks, in order: sizes; the message parses as EIP-4361; its domain is the
// issuer's host and its URI lies under the issuer (compared byte for byte); its
// chain id is allowed by the policy; its times hold (issued-at not in the future,
// expiration not passed, not-before reached); its nonce was issued by this
// enclave since it started, is unexpired and unused, and the message was not
// issued before the nonce (less the clock skew); the signature recovers to the
// message's address. Only then is the nonce consumed, so exactly one session is
// created per nonce.
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
	if !s.policy.AllowsChain(msg.ChainID) {
		return zero, protocol.Errorf(protocol.CodeSignInRejected, "chain id %d is not allowed by this enclave's policy (allowed: %s)", msg.ChainID, chainList(s.policy.ChainIDs))
	}
	now := s.now()
	if err := msg.CheckTime(now, ClockSkew); err != nil {
		return zero, protocol.Errorf(protocol.CodeSignInRejected, "%v", err)
	}
	issued, err := s.nonces.check(msg.Nonce, now)
	if err != nil {
		return zero, err
	}
	if msg.IssuedAt.Before(issued.Add(-ClockSkew)) {
		// The nonce is younger than the message that carries it: the message
		// was not made for this nonce, or the signer's clock is far behind.
		return zero, protocol.Errorf(protocol.CodeSignInRejected, "message is issued at %s, before its nonce was issued (%s); check the clock and sign a new message",
			msg.IssuedAt.UTC().Format(time.RFC3339), issued.UTC().Format(time.RFC3339))
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
	if exp.Unix() <= now.Unix() {
		// CheckTime allows clock skew; a session must still outlive its creation.
		return zero, protocol.Errorf(protocol.CodeSignInRejected, "sign-in message has expired")
	}
	chain := msg.ChainID
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
		ChainID: &chain,
	}
	signed, err := signES256(s.sessionKey, s.sessionKid, claims)
	if err != nil {
		return zero, fmt.Errorf("failed to sign session token: %w", err)
	}
	s.log.Info("session created", "wallet", wallet, "session_id", sid, "chain_id", chain, "expires_at", claims.ExpiresAt.Unix())
	return protocol.CreateSessionResponse{
		Token:   signed,
		Session: protocol.Session{Wallet: wallet, SessionID: sid, ExpiresAt: claims.ExpiresAt.Unix(), ChainID: chain},
	}, nil
}

func chainList(ids []uint64) string {
	var b strings.Builder
	for i, id := range ids {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.FormatUint(id, 10))
	}
	return b.String()
}

// checkOrigin checks that the message was made for this broker's API origin
// (policy api_url, by default the issuer): the domain is the API URL's
// host[:port], the scheme (when given) is its scheme, and the URI is the API URL
// or lies beneath it. Without this a signature collected by
// another site could be replayed here.
//
// Every comparison is byte for byte with the normalised (lowercase) API URL, on
// the text as signed: no case folding and no percent-decoding, and a URI with
// userinfo or a percent-encoded host is refused outright. The wallet showed its
// user exactly this text; an origin that only decodes or folds to the issuer's
// is not one the user was shown. (Parse has already refused any byte outside
// printable ASCII, so a non-ASCII host cannot get here.)
func (s *Service) checkOrigin(msg *siwe.Message) error {
	iss := s.api
	// The message says "issuer" in the one-origin layout (api_url = issuer),
	// where that is the name the user knows.
	what := "this broker's API origin"
	if s.policy.APIURL == s.policy.Issuer {
		what = "this issuer's"
	}
	if strings.ContainsAny(msg.Domain, "@%") {
		return protocol.Errorf(protocol.CodeSignInRejected, "message domain %q must be a plain host[:port], without userinfo or percent-encoding; it must be %q", truncate(msg.Domain, 80), iss.Host)
	}
	if msg.Domain != iss.Host {
		return protocol.Errorf(protocol.CodeSignInRejected, "message domain %q is not %s (%q)", truncate(msg.Domain, 80), what, iss.Host)
	}
	if msg.Scheme != "" && msg.Scheme != iss.Scheme {
		return protocol.Errorf(protocol.CodeSignInRejected, "message scheme %q is not %s (%q)", truncate(msg.Scheme, 16), what, iss.Scheme)
	}
	u, err := siwe.ParseURI(msg.URI)
	if err != nil {
		return protocol.Errorf(protocol.CodeSignInRejected, "message URI does not parse")
	}
	if u.HasUserinfo {
		return protocol.Errorf(protocol.CodeSignInRejected, "message URI must not carry userinfo (\"…@\")")
	}
	if strings.Contains(u.Host, "%") {
		return protocol.Errorf(protocol.CodeSignInRejected, "message URI host must not be percent-encoded")
	}
	// The path as written, and as a server would decode it, must stay under
	// the issuer's path.
	decoded, err := url.PathUnescape(u.Path)
	if err != nil || hasDotSegment(u.Path) || hasDotSegment(decoded) {
		return protocol.Errorf(protocol.CodeSignInRejected, "message URI must not contain dot segments")
	}
	hostport := u.Host
	if u.HasPort {
		hostport += ":" + u.Port
	}
	path := strings.TrimRight(iss.Path, "/")
	if !u.HasAuthority || u.Scheme != iss.Scheme || hostport != iss.Host ||
		(u.Path != path && !strings.HasPrefix(u.Path, path+"/")) {
		return protocol.Errorf(protocol.CodeSignInRejected, "message URI %q is not under the API URL %q", truncate(msg.URI, 120), s.policy.APIURL)
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

// VerifySession verifies a session token: in the one encoding the enclave
// writes (canonical base64url, low-s signature), ES256 only, signed by this
// enclave's session key, this issuer, the session audience, unexpired, with a
// chain id the policy allows. Because the encoding is unique, one session has
// exactly one bearer string, and so one bearer hash in the host's audit log.
func (s *Service) VerifySession(token string) (protocol.Session, error) {
	if token == "" {
		return protocol.Session{}, protocol.Errorf(protocol.CodeUnauthorized, "missing session token")
	}
	if len(token) > protocol.MaxSessionToken {
		return protocol.Session{}, protocol.Errorf(protocol.CodeUnauthorized, "session token is longer than %d bytes", protocol.MaxSessionToken)
	}
	if sess, ok := s.sessions.get(token, s.now()); ok {
		return s.allowedChain(sess)
	}
	if err := checkCanonical(token); err != nil {
		return protocol.Session{}, protocol.Errorf(protocol.CodeUnauthorized, "invalid session token: %v", err)
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
		jwt.WithStrictDecoding(),
	)
	if err != nil {
		return protocol.Session{}, protocol.Errorf(protocol.CodeUnauthorized, "invalid session token: %v", sessionError(err))
	}
	if siwe.ValidateAddress(claims.Subject) != nil || strings.ToLower(claims.Subject) != claims.Subject || claims.SessionID == "" || claims.ChainID == nil {
		return protocol.Session{}, protocol.Errorf(protocol.CodeUnauthorized, "invalid session token: malformed claims")
	}
	sess := protocol.Session{Wallet: claims.Subject, SessionID: claims.SessionID, ExpiresAt: claims.ExpiresAt.Unix(), ChainID: *claims.ChainID}
	e := cachedSession{sess: sess, exp: claims.ExpiresAt.Time}
	if claims.IssuedAt != nil {
		e.iat, e.hasIssued = claims.IssuedAt.Time, true
	}
	if claims.NotBefore != nil {
		e.nbf, e.hasNBF = claims.NotBefore.Time, true
	}
	s.sessions.put(token, e)
	return s.allowedChain(sess)
}

// allowedChain refuses a session whose sign-in chain the policy no longer
// allows.
func (s *Service) allowedChain(sess protocol.Session) (protocol.Session, error) {
	if !s.policy.AllowsChain(sess.ChainID) {
		return protocol.Session{}, protocol.Errorf(protocol.CodeUnauthorized, "invalid session token: chain id %d is no longer allowed by this enclave's policy; sign in again", sess.ChainID)
	}
	return sess, nil
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
