package tlsacme

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mholt/acmez/v3/acme"

	"github.com/agentkeys/broker/internal/pebbletest"
)

// obtainTimeout bounds every Obtain so that a broken test fails instead of
// hanging; a successful issuance from Pebble takes well under a second.
const obtainTimeout = 30 * time.Second

const greeting = "hello from agentkeys-host"

// greet is the application handler behind the HTTPS listener.
var greet = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	io.WriteString(w, greeting)
})

func TestObtainHTTP01(t *testing.T) {
	host := pebbletest.LocalhostAddr(t)
	httpLn, httpPort := listen(t, host)
	httpsLn, httpsPort := listen(t, host)
	p := pebbletest.Start(t, pebbletest.Options{HTTPPort: httpPort, TLSPort: httpsPort})
	storage := filepath.Join(t.TempDir(), "tls")
	cfg := Config{StorageDir: storage, HTTPPort: httpPort, TLSPort: httpsPort, DisableTLSALPN: true}
	m := newManager(t, p, cfg)

	var challenges atomic.Int32
	h := m.HTTPHandler(nil)
	serve(t, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/.well-known/acme-challenge/") {
			challenges.Add(1)
		}
		h.ServeHTTP(w, r)
	})}, httpLn, false)
	serve(t, &http.Server{Handler: greet, TLSConfig: m.TLSConfig()}, httpsLn, true)

	ctx, cancel := context.WithTimeout(t.Context(), obtainTimeout)
	defer cancel()
	if err := m.Obtain(ctx); err != nil {
		t.Fatal(err)
	}
	if challenges.Load() == 0 {
		t.Fatal("certificate issued but Pebble never fetched the HTTP-01 challenge from our handler")
	}
	checkHTTPS(t, p, httpsPort)

	// Anything else on plain HTTP is redirected to HTTPS.
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get("http://localhost:" + strconv.Itoa(httpPort) + "/.well-known/openid-configuration?x=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if want := "https://localhost/.well-known/openid-configuration?x=1"; resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != want {
		t.Errorf("plain HTTP: got %d to %q, want 308 to %q", resp.StatusCode, resp.Header.Get("Location"), want)
	}

	// A second Manager on the same storage loads the certificate instead
	// of asking the CA again: no new challenge.
	before := challenges.Load()
	m2 := newManager(t, p, cfg)
	if err := m2.Obtain(ctx); err != nil {
		t.Fatalf("reloading from storage: %v", err)
	}
	if n := challenges.Load(); n != before {
		t.Errorf("reloading from storage triggered %d new challenge requests", n-before)
	}
}

func TestObtainTLSALPN01(t *testing.T) {
	host := pebbletest.LocalhostAddr(t)
	httpLn, httpPort := listen(t, host)
	httpsLn, httpsPort := listen(t, host)
	// Pebble's HTTP-01 check goes to a closed port, so only TLS-ALPN-01,
	// answered by the HTTPS listener through TLSConfig, can succeed (if
	// the ACME client tries HTTP-01 first, it fails and falls back).
	p := pebbletest.Start(t, pebbletest.Options{HTTPPort: freePort(t, host), TLSPort: httpsPort})
	m := newManager(t, p, Config{HTTPPort: httpPort, TLSPort: httpsPort})

	// The Manager's own HTTP port is served all the same: were nothing
	// listening there, certmagic would bind it itself, on all interfaces.
	serve(t, &http.Server{Handler: m.HTTPHandler(nil)}, httpLn, false)
	var alpnHellos atomic.Int32
	tlsConfig := m.TLSConfig()
	tlsConfig.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if slices.Equal(hello.SupportedProtos, []string{"acme-tls/1"}) {
			alpnHellos.Add(1)
		}
		return nil, nil // carry on with tlsConfig
	}
	serve(t, &http.Server{Handler: greet, TLSConfig: tlsConfig}, httpsLn, true)

	ctx, cancel := context.WithTimeout(t.Context(), obtainTimeout)
	defer cancel()
	if err := m.Obtain(ctx); err != nil {
		t.Fatal(err)
	}
	if alpnHellos.Load() == 0 {
		t.Fatal("certificate issued but Pebble never made a TLS-ALPN-01 handshake with our listener")
	}
	checkHTTPS(t, p, httpsPort)
}

func TestObtainUnreachable(t *testing.T) {
	host := pebbletest.LocalhostAddr(t)
	httpLn, httpPort := listen(t, host)
	// The CA looks for the challenge on a closed port, as when port 80 is
	// firewalled or forwarded elsewhere. (Pointing the Manager itself at a
	// closed port would not do: certmagic would bind it and answer.)
	closed := freePort(t, host)
	p := pebbletest.Start(t, pebbletest.Options{HTTPPort: closed, TLSPort: closed})
	m := newManager(t, p, Config{HTTPPort: httpPort, DisableTLSALPN: true})
	serve(t, &http.Server{Handler: m.HTTPHandler(nil)}, httpLn, false)

	ctx, cancel := context.WithTimeout(t.Context(), obtainTimeout)
	defer cancel()
	err := m.Obtain(ctx)
	if err == nil {
		t.Fatal("Obtain succeeded although the CA cannot reach the challenge")
	}
	if ctx.Err() != nil {
		t.Fatalf("Obtain did not fail by itself within %v: %v", obtainTimeout, err)
	}
	t.Logf("Obtain: %v", err)
	var prob acme.Problem
	if !errors.As(err, &prob) || prob.Type != acme.ProblemTypeConnection {
		t.Errorf("error does not carry the CA's connection problem: %v", err)
	}
	for _, want := range []string{
		"failed to obtain a certificate for localhost from " + p.DirectoryURL,
		"check that localhost resolves to this host and that the CA can reach port " + strconv.Itoa(httpPort) + " (HTTP-01)",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q: %v", want, err)
		}
	}
}

// checkHTTPS makes an HTTPS request to the Manager's listener on port,
// trusting only Pebble's issuance root and checking the name "localhost",
// and expects the application's response. A client that does not trust
// Pebble must fail.
func checkHTTPS(t *testing.T, p *pebbletest.Pebble, port int) {
	t.Helper()
	url := "https://localhost:" + strconv.Itoa(port) + "/"
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.IssuerRoots(t)}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(url)
	if err != nil {
		t.Fatalf("HTTPS request trusting Pebble's root: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || string(body) != greeting {
		t.Errorf("got %d %q, want 200 %q", resp.StatusCode, body, greeting)
	}
	if len(resp.TLS.VerifiedChains) == 0 {
		t.Fatal("no verified chain")
	}
	chain := resp.TLS.VerifiedChains[0]
	leaf := chain[0]
	if !slices.Equal(leaf.DNSNames, []string{"localhost"}) {
		t.Errorf("leaf names %v, want [localhost]", leaf.DNSNames)
	}
	if len(chain) < 3 {
		t.Errorf("chain has %d certificates, want leaf, intermediate(s) and Pebble's root", len(chain))
	}

	// Without Pebble's root the same certificate is not trusted.
	tr2 := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: x509.NewCertPool()}}
	defer tr2.CloseIdleConnections()
	_, err = (&http.Client{Transport: tr2, Timeout: 10 * time.Second}).Get(url)
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Errorf("request trusting no root: got %v, want an unknown-authority error", err)
	}
}
