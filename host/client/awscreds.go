package client

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/agentkeys/broker/shared/httpapi"
	"github.com/agentkeys/broker/shared/siwe"
	"github.com/agentkeys/broker/shared/tlogproof"
)

// AWSCredentials are temporary AWS credentials minted for a session's wallet.
type AWSCredentials struct {
	AccessKeyID, SecretAccessKey, SessionToken string
	Expiration                                 time.Time
	Wallet                                     string
	// LogProof is the broker's proof that the credentials are in its audit
	// log (a C2SP tlog-proof), "" from a broker that gives none.
	LogProof string
}

// MintAWSCreds asks the broker for AWS credentials (POST /v1/mint-aws-creds)
// with the session token as bearer. A zero durationSeconds leaves the lifetime
// to the broker (by default 3600 s); the broker accepts what its enclave policy
// allows (by default 900 to 43200) and cuts it to what is left of the session.
// With less than the policy's minimum (900 s) left it refuses with a 400:
// sign in again.
func (c *Client) MintAWSCreds(ctx context.Context, token string, durationSeconds int64) (*AWSCredentials, error) {
	if err := checkToken(token); err != nil {
		return nil, err
	}
	body := httpapi.MintAWSCredsRequest{DurationSeconds: durationSeconds}
	var v httpapi.MintAWSCredsResponse
	if err := c.do(ctx, http.MethodPost, httpapi.PathMintAWSCreds, token, body, &v); err != nil {
		return nil, err
	}
	if v.AccessKeyID == "" || v.SecretAccessKey == "" || v.SessionToken == "" || v.Expiration == 0 ||
		!printable(v.AccessKeyID) || !printable(v.SecretAccessKey) || !printable(v.SessionToken) {
		return nil, errors.New("the broker's answer holds no well-formed AWS credentials")
	}
	if siwe.ValidateAddress(v.Wallet) != nil {
		return nil, errors.New("the broker's answer holds no well-formed wallet")
	}
	if err := checkLogProof(v.LogProof); err != nil {
		return nil, err
	}
	return &AWSCredentials{AccessKeyID: v.AccessKeyID, SecretAccessKey: v.SecretAccessKey, SessionToken: v.SessionToken,
		Expiration: time.Unix(v.Expiration, 0), Wallet: v.Wallet, LogProof: v.LogProof}, nil
}

// checkLogProof refuses a log_proof that is not a tlog-proof: the CLI writes
// it to a file for auditors. An empty one (an older broker) is allowed.
func checkLogProof(p string) error {
	if p == "" {
		return nil
	}
	if _, err := tlogproof.Parse([]byte(p)); err != nil {
		return errors.New("the broker's answer holds a malformed log_proof")
	}
	return nil
}

// printable reports visible ASCII only: credentials end up in shell export
// lines and environment variables.
func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' || s[i] == '\'' {
			return false
		}
	}
	return true
}
