package pebbletest

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
)

func TestMain(m *testing.M) {
	code := m.Run()
	Cleanup()
	os.Exit(code)
}

func TestStart(t *testing.T) {
	closed := freePort(t) // no challenge is answered in this test
	p := Start(t, Options{HTTPPort: closed, TLSPort: closed})

	// The directory is served over HTTPS under ServerRoots.
	client := httpClient(t, p.ServerRoots)
	resp, err := client.Get(p.DirectoryURL)
	if err != nil {
		t.Fatal(err)
	}
	var dir map[string]any
	err = json.NewDecoder(resp.Body).Decode(&dir)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || dir["newOrder"] == nil {
		t.Fatalf("directory: status %d, %v, %v", resp.StatusCode, dir, err)
	}

	// ServerCAFile holds the same root, and nothing else.
	pemBytes, err := os.ReadFile(p.ServerCAFile)
	if err != nil {
		t.Fatal(err)
	}
	fromFile := x509.NewCertPool()
	if !fromFile.AppendCertsFromPEM(pemBytes) || !fromFile.Equal(p.ServerRoots) {
		t.Errorf("ServerCAFile does not hold exactly the root in ServerRoots:\n%s", pemBytes)
	}

	// Without that root, Pebble's HTTPS is not trusted.
	_, err = httpClient(t, x509.NewCertPool()).Get(p.DirectoryURL)
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Errorf("request trusting no root: got %v, want an unknown-authority error", err)
	}

	// The issuance root is another root, and stable.
	roots := p.IssuerRoots(t)
	if roots.Equal(p.ServerRoots) || roots.Equal(x509.NewCertPool()) {
		t.Error("IssuerRoots is empty or Pebble's server root")
	}
	if !p.IssuerRoots(t).Equal(roots) {
		t.Error("IssuerRoots changed between calls")
	}
}

// TestCleanup checks that Cleanup removes the binary without stopping a
// running Pebble, and that a later Start builds it again.
func TestCleanup(t *testing.T) {
	closed := freePort(t)
	p := Start(t, Options{HTTPPort: closed, TLSPort: closed})
	bin := pebble.Path()
	Cleanup()
	if _, err := os.Stat(bin); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("binary %s still there after Cleanup: %v", bin, err)
	}
	if err := p.get(t, p.DirectoryURL, nil); err != nil {
		t.Fatalf("running pebble stopped serving after Cleanup: %v", err)
	}
	Start(t, Options{HTTPPort: closed, TLSPort: closed})
}

func TestPebbleEnv(t *testing.T) {
	t.Setenv("PEBBLE_VA_ALWAYS_VALID", "1")
	t.Setenv("PEBBLE_VA_NOSLEEP", "0")
	t.Setenv("GODEBUG", "netdns=cgo")
	env := pebbleEnv()
	for _, kv := range env {
		if strings.HasPrefix(kv, "PEBBLE_VA_ALWAYS_VALID=") {
			t.Errorf("environment passed to pebble has %s", kv)
		}
	}
	for _, want := range []string{"PEBBLE_VA_NOSLEEP=1", "GODEBUG=netdns=go"} {
		if !slices.Contains(env, want) {
			t.Errorf("environment passed to pebble lacks %s", want)
		}
	}
	for _, unwanted := range []string{"PEBBLE_VA_NOSLEEP=0", "GODEBUG=netdns=cgo"} {
		if slices.Contains(env, unwanted) {
			t.Errorf("environment passed to pebble has the caller's %s", unwanted)
		}
	}
}

func httpClient(t *testing.T, roots *x509.CertPool) *http.Client {
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}
