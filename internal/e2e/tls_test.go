package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/agentkeys/broker/internal/pebbletest"
)

// TestHTTPSIssuerWithACME: the host binary, given --tls-domain, obtains a
// certificate from an ACME CA (Pebble, which really fetches the challenge
// from the host's ports) and serves the issuer over HTTPS. A wallet signs in
// and mints over TLS, and go-oidc verifies the JWT fetching discovery and
// JWKS over TLS, trusting only the CA's root, as AWS would.
func TestHTTPSIssuerWithACME(t *testing.T) {
	bin := binaries(t)
	httpsPort, httpPort := freePort(t), freePort(t)
	for httpPort == httpsPort {
		httpPort = freePort(t)
	}
	p := pebbletest.Start(t, pebbletest.Options{HTTPPort: httpPort, TLSPort: httpsPort})
	// This is the only test here that runs Pebble, and TestMain (in
	// e2e_test.go) does not remove its binary; remove it when this test ends.

	dir := t.TempDir()
	b := &broker{dir: dir, bin: bin, sock: filepath.Join(dir, "enclave.sock")}
	b.issuer = fmt.Sprintf("https://localhost:%d", httpsPort)
	if err := os.WriteFile(filepath.Join(dir, "policy.json"), fmt.Appendf(nil, `{"issuer": %q}`, b.issuer), 0o600); err != nil {
		t.Fatal(err)
	}
	b.startEnclave(t)
	b.host = start(t, []string{
		"BROKER_ENCLAVE=unix:" + b.sock,
		"BROKER_STATE_DIR=" + filepath.Join(dir, "host"),
	}, filepath.Join(bin, "agentkeys-host"),
		"--tls-domain", "localhost",
		"--issuer", b.issuer,
		"--https-port", strconv.Itoa(httpsPort),
		"--http-port", strconv.Itoa(httpPort),
		"--acme-ca", p.DirectoryURL,
		"--acme-ca-root", p.ServerCAFile,
	)

	// A client that trusts only the root Pebble issues under, in place of
	// the system roots.
	trusting := httpsClient(t, p.IssuerRoots(t))
	resp := waitHTTPSReady(t, b.host, trusting, b.issuer)
	chain := resp.TLS.VerifiedChains[0]
	if leaf := chain[0]; !slices.Equal(leaf.DNSNames, []string{"localhost"}) {
		t.Errorf("certificate names %v, want [localhost]", leaf.DNSNames)
	}
	if len(chain) < 3 {
		t.Errorf("chain has %d certificates, want leaf, intermediate(s) and Pebble's root", len(chain))
	}
	if !strings.Contains(b.host.stderr.String(), `"msg":"serving HTTPS"`) {
		t.Errorf("host did not log that it serves HTTPS:\n%s", b.host.stderr.String())
	}

	// A client without that root fails the handshake. It trusts Pebble's
	// other root, the one of the ACME server's own HTTPS, which must not do.
	_, err := httpsClient(t, p.ServerRoots).Get(b.issuer + "/readyz")
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Errorf("request without Pebble's issuance root: got %v, want an unknown-authority error", err)
	}

	// A fresh wallet signs in and mints over HTTPS.
	ctx := t.Context()
	c, sess := signIn(t, b.issuer, trusting)
	if c.BaseURL != b.issuer {
		t.Fatalf("client.New(%q).BaseURL = %q", b.issuer, c.BaseURL)
	}
	jwt, err := c.MintJWT(ctx, sess.Token, "", 0)
	if err != nil {
		t.Fatal(err)
	}

	// A relying party verifies it, fetching discovery and JWKS over TLS.
	octx := oidc.ClientContext(ctx, trusting)
	provider, err := oidc.NewProvider(octx, b.issuer)
	if err != nil {
		t.Fatal(err)
	}
	verifier := provider.Verifier(&oidc.Config{ClientID: "sts.amazonaws.com", SupportedSigningAlgs: []string{"ES256"}})
	idt, err := verifier.Verify(octx, jwt.Token)
	if err != nil {
		t.Fatalf("go-oidc rejects the minted JWT: %v", err)
	}
	if idt.Issuer != b.issuer || idt.Subject != "agentkeys:agent:"+sess.Wallet {
		t.Fatalf("JWT issuer %q, subject %q", idt.Issuer, idt.Subject)
	}

	// Plain HTTP on the HTTP port (where the CA fetched HTTP-01) redirects
	// to the issuer: https, with its port.
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		fmt.Sprintf("http://localhost:%d/.well-known/openid-configuration?x=1", httpPort), nil)
	if err != nil {
		t.Fatal(err)
	}
	plain := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err = plain.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if want := b.issuer + "/.well-known/openid-configuration?x=1"; resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != want {
		t.Errorf("plain HTTP: got %d to %q, want 308 to %q", resp.StatusCode, resp.Header.Get("Location"), want)
	}

	// The host drains and stops on SIGTERM.
	b.host.stop(t)
	if !strings.Contains(b.host.stderr.String(), `"msg":"stopped"`) {
		t.Fatalf("host did not log a clean stop:\n%s", b.host.stderr.String())
	}
}

// httpsClient returns a client that trusts only roots and does not follow
// redirects (as client.New's does not).
func httpsClient(t *testing.T, roots *x509.CertPool) *http.Client {
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// waitHTTPSReady polls issuer/readyz with c until it answers 200 over a
// verified TLS connection, and returns that response (body closed). It
// fails the test if the host exits first or the time runs out; until the
// host has its certificate, handshakes fail.
func waitHTTPSReady(t *testing.T, host *proc, c *http.Client, issuer string) *http.Response {
	t.Helper()
	const timeout = 60 * time.Second
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var last string
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, issuer+"/readyz", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && resp.TLS != nil && len(resp.TLS.VerifiedChains) > 0 {
				return resp
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		select {
		case err := <-host.done:
			host.done <- err // for the cleanup
			t.Fatalf("host exited (%v) before serving %s/readyz", err, issuer)
		case <-ctx.Done():
			t.Fatalf("%s/readyz did not answer 200 over HTTPS within %v (last: %s)", issuer, timeout, last)
		case <-tick.C:
		}
	}
}
