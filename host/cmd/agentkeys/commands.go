package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"

	"github.com/agentkeys/broker/host/client"
)

// print writes v as one JSON object with --json, and text otherwise.
func (c *cli) print(v any, text string) int {
	var err error
	if c.json {
		err = json.NewEncoder(c.stdout).Encode(v)
	} else if text != "" {
		_, err = fmt.Fprintln(c.stdout, text)
	}
	if err != nil {
		return c.fail(fmt.Errorf("failed to write the output: %w", err), "")
	}
	return 0
}

func (c *cli) walletNew() int {
	path, err := c.walletPath()
	if err != nil {
		return c.fail(err, "")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return c.fail(fmt.Errorf("failed to create the wallet's directory: %w", err), "")
	}
	address, err := client.NewWalletFile(path)
	if errors.Is(err, fs.ErrExist) {
		return c.fail(fmt.Errorf("a wallet file already exists at %s; refusing to overwrite it", path),
			"to print its address, run: "+c.command("wallet address")+"; to make another wallet, pass --wallet with a new file name")
	}
	if err != nil {
		return c.fail(err, "")
	}
	return c.print(struct {
		Address string `json:"address"`
	}{address}, address)
}

func (c *cli) walletAddress() int {
	key, address, code := c.loadWallet()
	if key == nil {
		return code
	}
	key.Zero()
	return c.print(struct {
		Address string `json:"address"`
	}{address}, address)
}

// loadWallet loads the wallet key, or reports why not (key is then nil).
func (c *cli) loadWallet() (key *secp256k1.PrivateKey, address string, code int) {
	path, err := c.walletPath()
	if err != nil {
		return nil, "", c.fail(err, "")
	}
	key, address, err = client.LoadWalletFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, "", c.fail(fmt.Errorf("no wallet file at %s", path), "run: "+c.command("wallet new"))
	}
	if err != nil {
		return nil, "", c.fail(err, "")
	}
	return key, address, 0
}

// newClient makes the broker client, or reports why not (the client is then nil).
func (c *cli) newClient() (*client.Client, int) {
	cl, err := client.New(c.broker)
	if err != nil {
		return nil, c.fail(err, "set --broker or AGENTKEYS_BROKER to the broker's URL")
	}
	cl.UserAgent = "agentkeys-cli"
	return cl, 0
}

func (c *cli) login(ctx context.Context) int {
	key, _, code := c.loadWallet()
	if key == nil {
		return code
	}
	defer key.Zero()
	path, err := c.sessionPath()
	if err != nil {
		return c.fail(err, "")
	}
	cl, code := c.newClient()
	if cl == nil {
		return code
	}
	s, err := cl.SignIn(ctx, key, client.SignInOptions{})
	if err != nil {
		var e *client.Error
		if errors.As(err, &e) && e.Status == http.StatusUnauthorized {
			return c.fail(err, "check that --broker is the broker's public URL (its OIDC issuer) and that this machine's clock is right")
		}
		return c.brokerError(err)
	}
	// The session this one replaces is revoked, not left valid in a file
	// nobody reads: only after the new sign-in worked, so that a failed login
	// leaves the old session usable.
	previous := c.replacePrevious(ctx, cl, path)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return c.fail(fmt.Errorf("failed to create the session's directory: %w", err), "")
	}
	if err := client.SaveSession(path, s); err != nil {
		return c.fail(err, "")
	}
	return c.print(struct {
		Wallet     string           `json:"wallet"`
		Expiration int64            `json:"expiration"`
		Previous   *previousSession `json:"previous_session,omitempty"`
	}{s.Wallet, s.Expiration.Unix(), previous},
		fmt.Sprintf("signed in as %s until %s", s.Wallet, s.Expiration.UTC().Format(time.RFC3339)))
}

// previousSession is what login did with the session it replaced.
type previousSession struct {
	Wallet  string `json:"wallet,omitempty"`
	Revoked bool   `json:"revoked"`
	// Reason says why it was not revoked: expired, already_revoked,
	// not_accepted (the broker refused the bearer), unreadable (the file could
	// not be read) or error (the revocation failed).
	Reason string `json:"reason,omitempty"`
}

// replacePrevious revokes the session in the session file, if any, and says
// on stderr what became of it. It never stops the login.
func (c *cli) replacePrevious(ctx context.Context, cl *client.Client, path string) *previousSession {
	old, err := client.LoadSession(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		fmt.Fprintf(c.stderr, "agentkeys: note: replacing a session file that could not be read, so its session was not revoked: %v\n", err)
		return &previousSession{Reason: "unreadable"}
	}
	p := &previousSession{Wallet: old.Wallet}
	var note string
	p.Revoked, p.Reason, err = revoke(ctx, cl, old)
	switch p.Reason {
	case "":
		note = "revoked the previous session of " + old.Wallet
	case "expired":
		note = "the previous session had expired; nothing to revoke"
	case "already_revoked":
		note = "the previous session had already been revoked"
	case "not_accepted":
		note = "the broker no longer accepted the previous session; nothing to revoke"
	default:
		p.Reason = "error"
		note = fmt.Sprintf("could not revoke the previous session (%v); it stays valid until %s", err, old.Expiration.UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(c.stderr, "agentkeys: note: %s\n", note)
	return p
}

// revoke revokes s at the broker. It reports whether this call revoked it,
// and otherwise why not: "expired" (checked locally, without asking),
// "already_revoked", "not_accepted" (401: expired, revoked or never valid), or
// "error" with err.
func revoke(ctx context.Context, cl *client.Client, s *client.Session) (revoked bool, reason string, err error) {
	if !time.Now().Before(s.Expiration) {
		return false, "expired", nil
	}
	err = cl.Revoke(ctx, s.Token)
	var e *client.Error
	switch {
	case err == nil:
		return true, "", nil
	case errors.Is(err, client.ErrAlreadyRevoked):
		return false, "already_revoked", nil
	case errors.As(err, &e) && e.Status == http.StatusUnauthorized:
		return false, "not_accepted", nil
	}
	return false, "error", err
}

func (c *cli) hintLogin() string { return "run: " + c.command("login") }

// loadSession loads an unexpired session, or reports why not (the session is
// then nil).
func (c *cli) loadSession() (*client.Session, int) {
	path, err := c.sessionPath()
	if err != nil {
		return nil, c.fail(err, "")
	}
	s, err := client.LoadSession(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, c.fail(fmt.Errorf("not signed in: no session file at %s", path), c.hintLogin())
	}
	if err != nil {
		return nil, c.fail(err, "")
	}
	if !time.Now().Before(s.Expiration) {
		return nil, c.fail(fmt.Errorf("the session in %s expired at %s", path, s.Expiration.UTC().Format(time.RFC3339)), c.hintLogin())
	}
	return s, 0
}

type jwtOptions struct {
	audience string
	ttl      int64
	out      string
	proof    string // where to write the log proof, if anywhere
}

// writeProof writes the broker's proof of logging to path (mode 0644: it is
// public), or fails if the broker gave none.
func (c *cli) writeProof(path, proof string) int {
	if path == "" {
		return 0
	}
	if proof == "" {
		return c.fail(errors.New("the broker gave no proof of logging (log_proof); it may be older than this client"), "")
	}
	if err := client.WriteFileAtomic(path, []byte(proof), 0o644); err != nil {
		return c.fail(fmt.Errorf("failed to write the log proof to %s: %w", path, err), "")
	}
	return 0
}

func (c *cli) jwt(ctx context.Context, o jwtOptions) int {
	s, code := c.loadSession()
	if s == nil {
		return code
	}
	cl, code := c.newClient()
	if cl == nil {
		return code
	}
	j, err := cl.MintJWT(ctx, s.Token, o.audience, o.ttl)
	if err != nil {
		return c.brokerError(err)
	}
	if code := c.writeProof(o.proof, j.LogProof); code != 0 {
		return code
	}
	if o.out == "" {
		return c.print(struct {
			JWT        string `json:"jwt"`
			Wallet     string `json:"wallet"`
			Expiration int64  `json:"expiration"`
		}{j.Token, j.Wallet, j.Expiration.Unix()}, j.Token)
	}
	// No trailing newline: the AWS SDKs use the file's bytes as the token.
	if err := client.WriteFileAtomic(o.out, []byte(j.Token), 0o600); err != nil {
		return c.fail(fmt.Errorf("failed to write the JWT to %s: %w", o.out, err), "")
	}
	return c.print(struct {
		Wallet     string `json:"wallet"`
		Expiration int64  `json:"expiration"`
		Out        string `json:"out"`
	}{j.Wallet, j.Expiration.Unix(), o.out}, "")
}

func (c *cli) logout(ctx context.Context) int {
	path, err := c.sessionPath()
	if err != nil {
		return c.fail(err, "")
	}
	type result struct {
		Revoked bool   `json:"revoked"`
		Wallet  string `json:"wallet,omitempty"`
	}
	s, err := client.LoadSession(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c.print(result{}, "not signed in")
	}
	if err != nil {
		return c.fail(err, "")
	}
	var cl *client.Client // not needed for an expired session
	if time.Now().Before(s.Expiration) {
		var code int
		if cl, code = c.newClient(); cl == nil {
			return code
		}
	}
	revoked, reason, err := revoke(ctx, cl, s)
	var text string
	switch reason {
	case "":
		text = "signed out: revoked the session of " + s.Wallet
	case "expired":
		// Nothing to revoke: the broker refuses it already.
		text = "signed out: the session had expired"
	case "already_revoked":
		text = "signed out: the session of " + s.Wallet + " had already been revoked"
	case "not_accepted":
		// Expired, revoked or never valid: the broker refuses it already.
		text = "signed out: the broker no longer accepted the session"
	default:
		// Keep the file, so that the revocation can be retried.
		return c.brokerError(err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return c.fail(fmt.Errorf("failed to delete the session file: %w", err), "")
	}
	return c.print(result{revoked, s.Wallet}, text)
}

// brokerError reports a failed call to the broker, with a hint where the user
// can act.
func (c *cli) brokerError(err error) int {
	var e *client.Error
	if errors.As(err, &e) {
		switch {
		case e.Status == http.StatusUnauthorized:
			return c.fail(err, c.hintLogin())
		case e.Status == http.StatusNotFound || e.Status >= 300 && e.Status < 400:
			// The broker answers every route it documents: the URL is wrong.
			return c.fail(err, fmt.Sprintf("is %s the broker? check --broker or AGENTKEYS_BROKER", c.broker))
		}
		return c.fail(err, "")
	}
	if errors.Is(err, context.Canceled) {
		return c.fail(errors.New("interrupted"), "")
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return c.fail(err, fmt.Sprintf("is the broker running at %s? check --broker or AGENTKEYS_BROKER", c.broker))
	}
	return c.fail(err, "")
}
