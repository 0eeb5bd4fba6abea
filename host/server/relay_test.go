package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentkeys/broker/host/relay"
	"github.com/agentkeys/broker/host/tlsacme"
	"github.com/agentkeys/broker/internal/lockedbuf"
	"github.com/agentkeys/broker/internal/pebbletest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pebbletest.Cleanup()
	os.Exit(code)
}

// standInOrigin serves "enclave" over TLS for issuer.test: what the enclave's
// origin listener answers.
func standInOrigin(t *testing.T) (addr string, roots *x509.CertPool) {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "issuer.test"}, DNSNames: []string{"issuer.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	roots = x509.NewCertPool()
	roots.AddCert(leaf)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 30 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "enclave") })}
	go srv.Serve(tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: k}}}))
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String(), roots
}

func getVia(t *testing.T, addr, name string, roots *x509.CertPool) string {
	t.Helper()
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: name},
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		}}}
	for i := 0; ; i++ {
		resp, err := c.Get("https://" + name + "/ok")
		if err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
			resp.Body.Close()
			return string(b)
		}
		if i > 200 {
			t.Fatalf("GET https://%s/ via %s: %v", name, addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRelayBySNIWithACME: one HTTPS port, two origins. The API's certmagic
// obtains its certificate from Pebble through the relay (the CA's
// validation connections name the API's host), and a ClientHello naming the
// issuer reaches the enclave's stand-in instead.
func TestRelayBySNIWithACME(t *testing.T) {
	host := pebbletest.LocalhostAddr(t)
	httpPort, httpsPort := freePort(t, host), freePort(t, host)
	p := pebbletest.Start(t, pebbletest.Options{HTTPPort: httpPort, TLSPort: httpsPort})
	originAddr, originRoots := standInOrigin(t)
	r, err := relay.New(relay.Config{IssuerHost: "issuer.test", DialEnclave: func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", originAddr)
	}})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ok", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "api") })
	logs := &lockedbuf.Buffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{API: mux, Issuer: "https://issuer.test", APIURL: "https://localhost", Relay: r,
			ACME: &tlsacme.Config{Domain: "localhost", CA: p.DirectoryURL, CARoots: p.ServerRoots, StorageDir: filepath.Join(t.TempDir(), "acme"),
				HTTPPort: httpPort, TLSPort: httpsPort},
			ShutdownGrace: 10 * time.Second, ObtainTimeout: time.Minute, Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	}()
	addr := net.JoinHostPort(host, strconv.Itoa(httpsPort))
	if got := getVia(t, addr, "localhost", p.IssuerRoots(t)); got != "api" {
		t.Fatalf("the API origin answered %q", got)
	}
	if got := getVia(t, addr, "issuer.test", originRoots); got != "enclave" {
		t.Fatalf("the issuer origin answered %q", got)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v\n%s", err, logs.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// TestRelayOwnPort: the issuer origin on a port of its own next to a plain
// HTTP API; SNI-based routing needs the host's TLS.
func TestRelayOwnPort(t *testing.T) {
	originAddr, originRoots := standInOrigin(t)
	r, err := relay.New(relay.Config{AllToEnclave: true, DialEnclave: func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", originAddr)
	}})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ok", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "api") })
	api, relayAddr := freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{API: mux, Addr: api, Issuer: "https://issuer.test", Relay: r, RelayAddr: relayAddr, ShutdownGrace: time.Second})
	}()
	if got := getVia(t, relayAddr, "issuer.test", originRoots); got != "enclave" {
		t.Fatalf("the issuer origin answered %q", got)
	}
	if code, body := get(t, "http://"+api+"/ok"); code != 200 || body != "api" {
		t.Fatalf("api: %d %q", code, body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	err = Run(context.Background(), Config{API: mux, Addr: freeAddr(t), Issuer: "https://issuer.test", Relay: r})
	if err == nil || !strings.Contains(err.Error(), "needs the host's own TLS") {
		t.Fatalf("relay by SNI without TLS: %v", err)
	}
}

func freePort(t *testing.T, host string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
