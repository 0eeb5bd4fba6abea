package service

import (
	"fmt"
	"strings"
	"time"

	"github.com/agentkeys/broker/shared/auditlog"
	"github.com/agentkeys/broker/shared/claims"
	"github.com/agentkeys/broker/shared/protocol"
	"github.com/agentkeys/broker/shared/siwe"
)

// NotBeforeSkew is how far before iat a minted JWT's nbf lies, for relying
// parties whose clocks run slow.
const NotBeforeSkew = 60 * time.Second

// MintOIDC signs an OIDC JWT for the holder of a valid session token (or, when
// the policy allows it, for a wallet the host asserts).
//
// No credential outlives its sign-in: the JWT's exp is the requested (or
// default) TTL, cut to the session's exp if that comes first. A session with
// less than the policy's jwt_ttl_min_seconds left is refused (policy_violation,
// naming the time left) rather than answered with a JWT too short to use: the
// caller should sign in again. A host-asserted wallet has no session to bound it.
func (s *Service) MintOIDC(req protocol.MintOIDCRequest) (protocol.MintOIDCResponse, error) {
	var zero protocol.MintOIDCResponse
	var wallet, sid string
	var sessionExp int64 // unix seconds; 0 for a host-asserted wallet
	var chain uint64
	hostAsserted := false
	switch {
	case req.Token != "" && req.HostAssertedWallet != "":
		return zero, protocol.Errorf(protocol.CodeBadRequest, "give a session token or a host-asserted wallet, not both")
	case req.Token != "":
		sess, err := s.VerifySession(req.Token)
		if err != nil {
			return zero, err
		}
		wallet, sid, sessionExp, chain = sess.Wallet, sess.SessionID, sess.ExpiresAt, sess.ChainID
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
	now := s.now()
	iat := now.Unix()
	exp := iat + int64(ttl/time.Second)
	if sessionExp != 0 && sessionExp < exp {
		if left := sessionExp - iat; left < s.policy.JWTTTLMin {
			return zero, refuse("the session has %d s left, less than the shortest JWT this enclave mints (%d s); sign in again", max(left, 0), s.policy.JWTTTLMin)
		}
		exp = sessionExp
	}
	c := claims.OIDC{
		Issuer:             s.policy.Issuer,
		Subject:            claims.SubjectPrefix + wallet,
		Audience:           aud,
		IssuedAt:           iat,
		NotBefore:          now.Add(-NotBeforeSkew).Unix(),
		ExpiresAt:          exp,
		Wallet:             wallet,
		HostAssertedWallet: hostAsserted,
	}
	// The JWT's jti is its audit log entry id (the log's name and the index):
	// the log hands out the index, the JWT is signed with it, and the entry
	// naming the JWT's hash takes it, all before the batch's checkpoint is signed.
	s.audit.Ack(req.LogSize)
	var signed string
	logged, err := s.audit.Append(func(index int64) ([]byte, error) {
		jti := auditlog.EntryID(s.audit.Name(), index) // Name is fixed once Append runs build
		c.ID, c.Tags = jti, claims.MintTags(wallet, jti)
		var err error
		if signed, err = signES256(s.issuerKey, s.issuerKid, c); err != nil {
			return nil, fmt.Errorf("failed to sign JWT: %w", err)
		}
		return auditlog.Entry{
			Version: auditlog.Version, Time: iat, Kind: auditlog.KindOIDCJWT, Outcome: auditlog.OutcomeOK, Wallet: wallet,
			SessionID: sid, Audience: aud, ExpiresAt: exp, Kid: s.issuerKid, JTI: jti, JWTSHA256: auditlog.JWTHash(signed),
			ChainID: chain, HostAssertedWallet: hostAsserted,
		}.Marshal()
	})
	if err != nil {
		return zero, err
	}
	// Debug, not Info: the audit log's entry records the same facts, signed
	// and stored by the host, and a line per mint costs every mint.
	s.log.Debug("jwt minted", "wallet", wallet, "session_id", sid, "chain_id", chain, "aud", aud, "ttl_seconds", exp-iat,
		"session_expires_at", sessionExp, "jti", c.ID, "kid", s.issuerKid, "host_asserted_wallet", hostAsserted)
	return protocol.MintOIDCResponse{
		JWT: signed, Wallet: wallet, SessionID: sid, Kid: s.issuerKid, JTI: c.ID, Audience: aud,
		IssuedAt: c.IssuedAt, ExpiresAt: c.ExpiresAt, HostAssertedWallet: hostAsserted,
		SessionExpiresAt: sessionExp, ChainID: chain, Log: logged,
	}, nil
}
