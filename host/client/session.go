package client

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"

	"github.com/agentkeys/broker/shared/httpapi"
	"github.com/agentkeys/broker/shared/siwe"
)

// DefaultStatement is the statement line of a sign-in message when
// SignInOptions leaves it empty.
const DefaultStatement = "Sign in to AgentKeys."

// Session is a signed-in session: the bearer token the broker issued, the
// wallet it stands for (lowercase, as the broker writes it) and when it expires.
type Session struct {
	Token      string
	Wallet     string
	Expiration time.Time
}

// SignInOptions adjust the sign-in message.
type SignInOptions struct {
	// ChainID is the EIP-155 chain the message names; 0 means 1.
	ChainID uint64
	// Statement is the human-readable line of the message; "" means
	// DefaultStatement.
	Statement string
}

// Nonce asks the broker for a single-use sign-in nonce (GET /v1/session/nonce).
func (c *Client) Nonce(ctx context.Context) (nonce string, expiresAt time.Time, err error) {
	var v httpapi.NonceResponse
	if err := c.do(ctx, http.MethodGet, httpapi.PathNonce, "", nil, &v); err != nil {
		return "", time.Time{}, err
	}
	if v.Nonce == "" {
		return "", time.Time{}, errors.New("the broker answered without a nonce")
	}
	return v.Nonce, time.Unix(v.ExpiresAt, 0), nil
}

// SignIn signs in with key: it gets a nonce, builds the EIP-4361 message for
// this broker, signs it (EIP-191 personal_sign) and presents it
// (POST /v1/session). It checks that the session is for key's wallet.
func (c *Client) SignIn(ctx context.Context, key *secp256k1.PrivateKey, opts SignInOptions) (*Session, error) {
	if key == nil {
		return nil, errors.New("no wallet key")
	}
	base, err := url.Parse(c.BaseURL)
	if err != nil || base.Host == "" {
		return nil, errors.New("the client's BaseURL is not a URL; make the client with New")
	}
	address, err := siwe.ChecksumAddress(siwe.AddressOf(key.PubKey()))
	if err != nil {
		return nil, fmt.Errorf("failed to compute the wallet address: %w", err)
	}
	nonce, _, err := c.Nonce(ctx)
	if err != nil {
		return nil, err
	}
	msg := &siwe.Message{
		Domain:    base.Host,
		Address:   address,
		Statement: opts.Statement,
		URI:       c.BaseURL + "/v1/session",
		Version:   "1",
		ChainID:   opts.ChainID,
		Nonce:     nonce,
		IssuedAt:  time.Now().UTC().Truncate(time.Second),
	}
	if msg.Statement == "" {
		msg.Statement = DefaultStatement
	}
	if msg.ChainID == 0 {
		msg.ChainID = 1
	}
	// The nonce came from the network: Validate makes sure that neither it nor
	// anything else can change the layout of the text we sign.
	if err := msg.Validate(); err != nil {
		return nil, fmt.Errorf("failed to build the sign-in message: %w", err)
	}
	text := msg.String()
	sig := siwe.Sign(key, []byte(text))
	body := httpapi.SessionRequest{Message: text, Signature: "0x" + hex.EncodeToString(sig)}
	var v httpapi.SessionResponse
	if err := c.do(ctx, http.MethodPost, httpapi.PathSession, "", body, &v); err != nil {
		return nil, err
	}
	if v.Session == "" || checkToken(v.Session) != nil {
		return nil, errors.New("the broker's answer to the sign-in holds no well-formed session token")
	}
	if !strings.EqualFold(v.Wallet, address) {
		return nil, fmt.Errorf("the broker signed in wallet %q, not this key's %s; refusing the session", sanitize(v.Wallet, 42), address)
	}
	return &Session{Token: v.Session, Wallet: strings.ToLower(address), Expiration: time.Unix(v.Expiration, 0)}, nil
}

// ErrAlreadyRevoked is Revoke's error when the broker answers that the
// session had been revoked before this call ({"revoked": false}): the session
// is refused either way.
var ErrAlreadyRevoked = errors.New("the session had already been revoked")

// Revoke revokes the session whose bearer token is token
// (POST /v1/session/revoke). The broker refuses it afterwards. It succeeds
// whether this call revoked the session or an earlier one had; RevokeSession
// tells which.
func (c *Client) Revoke(ctx context.Context, token string) error {
	v, err := c.RevokeSession(ctx, token)
	if err != nil {
		return err
	}
	if !v.Revoked {
		return ErrAlreadyRevoked
	}
	return nil
}

// RevokeSession is Revoke, returning the broker's answer: Revoked is true when
// this call revoked the session, false when it had been revoked already.
func (c *Client) RevokeSession(ctx context.Context, token string) (httpapi.RevokeResponse, error) {
	if err := checkToken(token); err != nil {
		return httpapi.RevokeResponse{}, err
	}
	// The body is httpapi.RevokeResponse; the pointer, which shadows its
	// Revoked, tells an absent "revoked" (a broker that did not confirm)
	// from false (already revoked).
	var body struct {
		httpapi.RevokeResponse
		Revoked *bool `json:"revoked"`
	}
	if err := c.do(ctx, http.MethodPost, httpapi.PathRevoke, token, nil, &body); err != nil {
		return httpapi.RevokeResponse{}, err
	}
	if body.Revoked == nil {
		return httpapi.RevokeResponse{}, errors.New("the broker did not confirm the revocation")
	}
	v := body.RevokeResponse
	v.Revoked = *body.Revoked
	if siwe.ValidateAddress(v.Wallet) != nil {
		return httpapi.RevokeResponse{}, errors.New("the broker's answer to the revocation holds no well-formed wallet")
	}
	v.Wallet = sanitize(v.Wallet, 42)
	return v, nil
}
