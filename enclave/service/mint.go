package service

import (
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/agentkeys/broker/shared/protocol"
	"github.com/agentkeys/broker/shared/siwe"
)

// NotBeforeSkew is how far before iat a minted JWT's nbf lies, for relying
// parties whose clocks run slow.
const NotBeforeSkew = 60 * time.Second

// SubjectPrefix prefixes the wallet in a minted JWT's sub.
const SubjectPrefix = "agentkeys:agent:"

// AWSTagsClaim is the claim from which AWS STS takes session tags.
const AWSTagsClaim = "https://aws.amazon.com/tags"

// oidcClaims are exactly the claims of a minted JWT (ARCHITECTURE.md). aud is a
// single string, as AWS and the Rust broker expect.
type oidcClaims struct {
	Issuer             string  `json:"iss"`
	Subject            string  `json:"sub"`
	Audience           string  `json:"aud"`
	IssuedAt           int64   `json:"iat"`
	NotBefore          int64   `json:"nbf"`
	ExpiresAt          int64   `json:"exp"`
	ID                 string  `json:"jti"`
	Wallet             string  `json:"agentkeys_user_wallet"`
	Tags               awsTags `json:"https://aws.amazon.com/tags"`
	HostAssertedWallet bool    `json:"agentkeys_host_asserted_wallet,omitempty"`
}

var _ jwt.Claims = oidcClaims{}

type awsTags struct {
	PrincipalTags     map[string][]string `json:"principal_tags"`
	TransitiveTagKeys []string            `json:"transitive_tag_keys"`
}

func (c oidcClaims) GetExpirationTime() (*jwt.NumericDate, error) {
	return jwt.NewNumericDate(time.Unix(c.ExpiresAt, 0)), nil
}
func (c oidcClaims) GetIssuedAt() (*jwt.NumericDate, error) {
	return jwt.NewNumericDate(time.Unix(c.IssuedAt, 0)), nil
}
func (c oidcClaims) GetNotBefore() (*jwt.NumericDate, error) {
	return jwt.NewNumericDate(time.Unix(c.NotBefore, 0)), nil
}
func (c oidcClaims) GetIssuer() (string, error)             { return c.Issuer, nil }
func (c oidcClaims) GetSubject() (string, error)            { return c.Subject, nil }
func (c oidcClaims) GetAudience() (jwt.ClaimStrings, error) { return jwt.ClaimStrings{c.Audience}, nil }

// MintOIDC signs an OIDC JWT for the holder of a valid session token (or, when
// the policy allows it, for a wallet the host asserts).
func (s *Service) MintOIDC(req protocol.MintOIDCRequest) (protocol.MintOIDCResponse, error) {
	var zero protocol.MintOIDCResponse
	var wallet, sid string
	var sessionExp int64
	hostAsserted := false
	switch {
	case req.Token != "" && req.HostAssertedWallet != "":
		return zero, protocol.Errorf(protocol.CodeBadRequest, "give a session token or a host-asserted wallet, not both")
	case req.Token != "":
		sess, err := s.VerifySession(req.Token)
		if err != nil {
			return zero, err
		}
		wallet, sid, sessionExp = sess.Wallet, sess.SessionID, sess.ExpiresAt
	case req.HostAssertedWallet != "":
		if !s.policy.AllowHostAssertedWallet {
			return zero, protocol.Errorf(protocol.CodeUnauthorized, "this enclave's policy does not allow host-asserted wallets")
		}
		if err := siwe.ValidateAddress(req.HostAssertedWallet); err != nil {
			return zero, protocol.Errorf(protocol.CodeBadRequest, "host-asserted wallet: %v", err)
		}
		wallet, hostAsserted = strings.ToLower(req.HostAssertedWallet), true
	default:
		return zero, protocol.Errorf(protocol.CodeUnauthorized, "missing session token")
	}
	refuse := func(format string, args ...any) error {
		e := protocol.Errorf(protocol.CodePolicy, format, args...)
		e.Wallet = wallet // verified above: the refusal is this wallet's
		return e
	}
	if len(req.Audience) > protocol.MaxAudience {
		return zero, refuse("audience is longer than %d bytes", protocol.MaxAudience)
	}
	aud, err := s.policy.Audience(req.Audience)
	if err != nil {
		return zero, refuse("%v", err)
	}
	ttl, err := s.policy.TTL(req.TTLSeconds)
	if err != nil {
		return zero, refuse("%v", err)
	}
	jti, err := s.randomID()
	if err != nil {
		return zero, err
	}
	now := s.now()
	claims := oidcClaims{
		Issuer:    s.policy.Issuer,
		Subject:   SubjectPrefix + wallet,
		Audience:  aud,
		IssuedAt:  now.Unix(),
		NotBefore: now.Add(-NotBeforeSkew).Unix(),
		ExpiresAt: now.Add(ttl).Unix(),
		ID:        jti,
		Wallet:    wallet,
		Tags: awsTags{
			PrincipalTags:     map[string][]string{"agentkeys_user_wallet": {wallet}},
			TransitiveTagKeys: []string{"agentkeys_user_wallet"},
		},
		HostAssertedWallet: hostAsserted,
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	tok.Header["kid"] = s.issuerKid
	signed, err := tok.SignedString(s.issuerKey)
	if err != nil {
		return zero, fmt.Errorf("failed to sign JWT: %w", err)
	}
	s.log.Info("jwt minted", "wallet", wallet, "session_id", sid, "aud", aud, "ttl_seconds", int64(ttl/time.Second), "jti", jti, "kid", s.issuerKid, "host_asserted_wallet", hostAsserted)
	return protocol.MintOIDCResponse{
		JWT: signed, Wallet: wallet, SessionID: sid, Kid: s.issuerKid, JTI: jti, Audience: aud,
		IssuedAt: claims.IssuedAt, ExpiresAt: claims.ExpiresAt, HostAssertedWallet: hostAsserted, SessionExpiresAt: sessionExp,
	}, nil
}
