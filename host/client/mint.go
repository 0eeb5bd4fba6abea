package client

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/agentkeys/broker/shared/claims"
	"github.com/agentkeys/broker/shared/httpapi"
	"github.com/agentkeys/broker/shared/siwe"
)

// JWT is a minted OIDC JWT, for the wallet of the session that asked for it.
type JWT struct {
	Token      string
	Wallet     string
	Expiration time.Time
	// LogProof is the broker's proof that the JWT is in its audit log (a
	// C2SP tlog-proof of the entry at the JWT's jti), "" from a broker that
	// gives none.
	LogProof string
}

// MintJWT asks the broker for an OIDC JWT (POST /v1/mint-oidc-jwt) with the
// session token as bearer. An empty audience and a zero ttlSeconds leave them
// to the broker's policy (by default sts.amazonaws.com and 300 s); a value
// outside policy is refused with a 400 *Error whose message gives the bounds.
func (c *Client) MintJWT(ctx context.Context, token string, audience string, ttlSeconds int64) (*JWT, error) {
	if err := checkToken(token); err != nil {
		return nil, err
	}
	body := httpapi.MintJWTRequest{Audience: audience, TTLSeconds: ttlSeconds}
	var v httpapi.MintJWTResponse
	if err := c.do(ctx, http.MethodPost, httpapi.PathMintJWT, token, body, &v); err != nil {
		return nil, err
	}
	if !claims.IsCompactJWS(v.JWT) {
		return nil, errors.New("the broker's answer holds no well-formed JWT")
	}
	if siwe.ValidateAddress(v.Wallet) != nil {
		return nil, errors.New("the broker's answer holds no well-formed wallet")
	}
	if err := checkLogProof(v.LogProof); err != nil {
		return nil, err
	}
	return &JWT{Token: v.JWT, Wallet: v.Wallet, Expiration: time.Unix(v.Expiration, 0), LogProof: v.LogProof}, nil
}
