package e2e

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/agentkeys/broker/internal/pebbletest"
)

// TestIssuerOriginEnclave: the binaries with --issuer-origin enclave. The
// enclave obtains its certificate from an ACME CA (Pebble) over TLS-ALPN-01,
// answered by the enclave on a connection the host relays to it (the issuer
// origin on a port of its own); a wallet signs in at the API origin; go-oidc
// fetches discovery and the JWKS from the issuer origin, served with the
// enclave's key, and verifies the JWT.
func TestIssuerOriginEnclave(t *testing.T) {
	if addr := pebbletest.LocalhostAddr(t); addr != "127.0.0.1" {
		t.Skipf("localhost resolves to %s first; the relay listens on 127.0.0.1 in this layout", addr)
	}
	bin := binaries(t)
	originPort, apiPort := freePort(t), freePort(t)
	p := pebbletest.Start(t, pebbletest.Options{HTTPPort: freePort(t), TLSPort: originPort})

	dir := t.TempDir()
	issuer := fmt.Sprintf("https://localhost:%d", originPort)
	api := fmt.Sprintf("http://127.0.0.1:%d", apiPort)
	if err := os.WriteFile(filepath.Join(dir, "policy.json"), fmt.Appendf(nil, `{"issuer": %q, "api_url": %q}`, issuer, api), 0o600); err != nil {
		t.Fatal(err)
	}
	sock, originSock := filepath.Join(dir, "enclave.sock"), filepath.Join(dir, "origin.sock")
	enclave := start(t, nil, filepath.Join(bin, "agentkeys-enclave"), "--simulated",
		"--state-dir", filepath.Join(dir, "enclave"), "--policy", filepath.Join(dir, "policy.json"), "--listen", "unix:"+sock,
		"--issuer-origin", "enclave", "--origin-listen", "unix:"+originSock,
		"--acme-directory", p.DirectoryURL, "--acme-ca-root", p.ServerCAFile, "--acme-retry-min", "1s", "--acme-retry-max", "2s")
	host := start(t, []string{
		"BROKER_OIDC_ISSUER=" + issuer,
		"BROKER_API_URL=" + api,
		"BROKER_PORT=" + strconv.Itoa(apiPort),
		"BROKER_ENCLAVE=unix:" + sock,
		"BROKER_STATE_DIR=" + filepath.Join(dir, "host"),
		"BROKER_ISSUER_ORIGIN=enclave",
		"BROKER_ISSUER_ORIGIN_PORT=" + strconv.Itoa(originPort),
		"BROKER_ENCLAVE_ORIGIN=unix:" + originSock,
	}, filepath.Join(bin, "agentkeys-host"))
	waitReady(t, api, 200)

	// The issuer origin answers once the enclave has its certificate.
	trusting := httpsClient(t, p.IssuerRoots(t))
	var resp *http.Response
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, issuer+"/.well-known/jwks.json", nil)
		r, err := trusting.Do(req)
		if err == nil && r.StatusCode == http.StatusOK {
			resp = r
			break
		}
		if err == nil {
			r.Body.Close()
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the issuer origin never served the JWKS with a certificate from the CA (last: %v)\nenclave:\n%s", err, enclave.stderr.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	leaf := resp.TLS.PeerCertificates[0]
	der, _ := x509.MarshalPKIXPublicKey(leaf.PublicKey)
	sum := sha256.Sum256(der)
	spki := hex.EncodeToString(sum[:])
	if !strings.Contains(enclave.stderr.String(), `"tls_spki_sha256":"`+spki+`"`) {
		t.Fatalf("the issuer origin's certificate key %s is not the one the enclave logged:\n%s", spki, enclave.stderr.String())
	}
	if !strings.Contains(enclave.stderr.String(), `"msg":"ACME account registered"`) {
		t.Errorf("the enclave did not log its ACME account")
	}
	// Only discovery and the JWKS live at the issuer origin.
	r404, err := trusting.Get(issuer + "/v1/session/nonce")
	if err != nil {
		t.Fatal(err)
	}
	r404.Body.Close()
	if r404.StatusCode != http.StatusNotFound {
		t.Errorf("the issuer origin serves the API: %d", r404.StatusCode)
	}

	// A wallet signs in at the API origin and mints; a relying party
	// verifies the JWT with the issuer origin's discovery and JWKS.
	c, sess := signIn(t, api, nil)
	jwt, err := c.MintJWT(t.Context(), sess.Token, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	octx := oidc.ClientContext(t.Context(), trusting)
	provider, err := oidc.NewProvider(octx, issuer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := provider.Verifier(&oidc.Config{ClientID: "sts.amazonaws.com"}).Verify(octx, jwt.Token); err != nil {
		t.Fatalf("go-oidc rejects the JWT with the issuer origin's JWKS %s: %v", body, err)
	}
	host.stop(t)
	enclave.stop(t)
}
