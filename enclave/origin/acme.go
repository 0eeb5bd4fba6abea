package origin

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/mholt/acmez/v3"
	"github.com/mholt/acmez/v3/acme"

	"github.com/agentkeys/broker/enclave/egress"
)

// ACME configures the enclave's ACME client.
type ACME struct {
	// Directory is the CA's ACME directory URL (https).
	Directory string
	// Dialer is the enclave's way out (enclave/egress): vsock-proxy routes in
	// nitro mode, direct TCP in simulated mode.
	Dialer egress.Dialer
	// RootCAs verify the CA's HTTPS (x509roots/fallback in nitro mode, or a
	// test CA's root). Required: the enclave has no system roots.
	RootCAs *x509.CertPool
	// Contact lists the account's contact URIs (mailto:…); optional.
	Contact []string
	// Timeout bounds one attempt to obtain a certificate (default 5 minutes).
	Timeout time.Duration
	// RetryMin and RetryMax bound the wait between failed attempts (defaults
	// 1 minute and 1 hour; it doubles from one to the other).
	RetryMin, RetryMax time.Duration
}

func (a *ACME) defaults() ACME {
	c := *a
	if c.Timeout <= 0 {
		c.Timeout = 5 * time.Minute
	}
	if c.RetryMin <= 0 {
		c.RetryMin = time.Minute
	}
	if c.RetryMax < c.RetryMin {
		c.RetryMax = max(time.Hour, c.RetryMin)
	}
	return c
}

// Run keeps a certificate until ctx is done: it obtains one when the origin
// has none (or only the self-signed one) and renews it at two thirds of its
// lifetime, retrying failures with a doubling wait. Without ACME it returns at
// once.
func (o *Origin) Run(ctx context.Context) {
	if o.cfg.ACME == nil {
		return
	}
	cfg := o.cfg.ACME.defaults()
	wait := cfg.RetryMin
	for {
		if at := o.renewAt(); at.IsZero() || !o.now().Before(at) {
			octx, cancel := context.WithTimeout(ctx, cfg.Timeout)
			err := o.Obtain(octx)
			cancel()
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				o.log.Error("failed to obtain the issuer origin certificate; retrying", "err", err.Error(), "retry_in", wait.String())
				if !sleep(ctx, wait) {
					return
				}
				wait = min(2*wait, cfg.RetryMax)
				continue
			}
			wait = cfg.RetryMin
		}
		// Sleep until the renewal time, waking at least hourly so that a
		// clock jump or a newer installed chain is noticed.
		d := min(time.Until(o.renewAt()), time.Hour)
		select {
		case <-ctx.Done():
			return
		case <-o.Installed():
		case <-time.After(max(d, time.Second)):
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// maxChainPEM bounds the chain the CA returns.
const maxChainPEM = 64 << 10

// Obtain registers the account key (or finds its account) and obtains a
// certificate for the issuer's host over TLS-ALPN-01, then installs it.
func (o *Origin) Obtain(ctx context.Context) error {
	if o.cfg.ACME == nil {
		return errors.New("origin: no ACME CA configured")
	}
	cfg := o.cfg.ACME.defaults()
	if cfg.RootCAs == nil || cfg.Dialer == nil || cfg.Directory == "" {
		return errors.New("origin: ACME needs a directory URL, a dialer and the CA's roots")
	}
	httpc := &http.Client{
		Transport: &http.Transport{
			DialContext:         cfg.Dialer.DialContext,
			TLSClientConfig:     &tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12},
			TLSHandshakeTimeout: 30 * time.Second,
			ForceAttemptHTTP2:   false,
		},
		Timeout: 60 * time.Second,
	}
	defer httpc.CloseIdleConnections()
	client := &acmez.Client{
		Client: &acme.Client{Directory: cfg.Directory, HTTPClient: httpc, UserAgent: "agentkeys-enclave",
			Logger: o.log.With("component", "acme")},
		ChallengeSolvers: map[string]acmez.Solver{acme.ChallengeTypeTLSALPN01: solver{o}},
	}
	acct := acme.Account{Contact: cfg.Contact, TermsOfServiceAgreed: true, PrivateKey: o.cfg.AccountKey}
	acct, err := client.NewAccount(ctx, acct)
	if err != nil {
		err = fmt.Errorf("failed to register the ACME account: %w", err)
		o.setACME("", err)
		return err
	}
	o.setACME(acct.Location, nil)
	o.log.Info("ACME account registered", "acme_account_uri", acct.Location, "acme_account_key_thumbprint", o.thumbprint,
		"hint", "name this account in a CAA record: 0 issue \"CA; accounturi="+acct.Location+"; validationmethods=tls-alpn-01\"")
	certs, err := client.ObtainCertificateForSANs(ctx, acct, o.cfg.TLSKey, []string{o.host})
	if err == nil && len(certs) == 0 {
		err = errors.New("the CA returned no certificate")
	}
	if err != nil {
		err = fmt.Errorf("failed to obtain a certificate for %s: %w", o.host, err)
		o.setACME(acct.Location, err)
		return err
	}
	chain, err := parseChainPEM(certs[0].ChainPEM)
	if err == nil {
		_, err = o.install(chain, true)
	}
	if err != nil {
		err = fmt.Errorf("the CA's certificate is unusable: %w", err)
		o.setACME(acct.Location, err)
		return err
	}
	o.setACME(acct.Location, nil)
	return nil
}

func parseChainPEM(b []byte) ([][]byte, error) {
	if len(b) > maxChainPEM {
		return nil, fmt.Errorf("chain is larger than %d bytes", maxChainPEM)
	}
	var chain [][]byte
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type == "CERTIFICATE" {
			chain = append(chain, blk.Bytes)
		}
	}
	if len(chain) == 0 {
		return nil, errors.New("no certificate in the chain")
	}
	if len(chain) > 8 {
		chain = chain[:8]
	}
	return chain, nil
}

// solver answers TLS-ALPN-01 on the origin's own listener.
type solver struct{ o *Origin }

func (s solver) Present(_ context.Context, chal acme.Challenge) error {
	c, err := acmez.TLSALPN01ChallengeCert(chal)
	if err != nil {
		return err
	}
	s.o.setChallenge(chal.Identifier.Value, c)
	return nil
}

func (s solver) CleanUp(_ context.Context, chal acme.Challenge) error {
	s.o.setChallenge(chal.Identifier.Value, nil)
	return nil
}
