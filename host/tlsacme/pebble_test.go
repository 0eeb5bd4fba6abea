package tlsacme

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// pebbleModule is built from the module cache; its version is the one in
// go.mod.
const pebbleModule = "github.com/letsencrypt/pebble/v2"

var pebbleTmp string // holds the built binary; removed by TestMain

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tlsacme-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pebbleTmp = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// pebbleBinary builds Pebble once per test binary. Pebble's packages are not
// imported in-process because that would add go-jose and challtestsrv to
// the shared go.mod; its own go.mod in the module cache has them.
var pebbleBinary = sync.OnceValues(func() (string, error) {
	// go test puts its own toolchain first on PATH.
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("failed to find the go command: %w", err)
	}
	var stderr bytes.Buffer
	list := exec.Command(goBin, "list", "-m", "-f", "{{.Dir}}", pebbleModule)
	list.Stderr = &stderr
	out, err := list.Output()
	if err != nil {
		return "", fmt.Errorf("failed to locate %s (it must be required in go.mod; see tools.go): %w\n%s", pebbleModule, err, stderr.Bytes())
	}
	src := strings.TrimSpace(string(out))
	if src == "" {
		return "", fmt.Errorf("%s is not in the module cache; run: go mod download %s", pebbleModule, pebbleModule)
	}
	bin := filepath.Join(pebbleTmp, "pebble")
	// Linking is most of the cost (the packages come from the build cache);
	// -s -w makes it quicker.
	build := exec.Command(goBin, "build", "-ldflags=-s -w", "-o", bin, "./cmd/pebble")
	build.Dir = src
	build.Env = append(os.Environ(), "GOWORK=off")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("failed to build pebble: %w\n%s", err, out)
	}
	return bin, nil
})

// pebble is a running Pebble ACME server.
type pebble struct {
	dirURL     string         // ACME directory
	serverRoot *x509.CertPool // trusts Pebble's own HTTPS
	issuerRoot *x509.CertPool // trusts the certificates Pebble issues
}

// startPebble runs a Pebble whose validation authority connects to
// httpPort for HTTP-01 and tlsPort for TLS-ALPN-01, and stops it when the
// test ends.
func startPebble(t *testing.T, httpPort, tlsPort int) *pebble {
	t.Helper()
	bin, err := pebbleBinary()
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	certPEM, keyPEM, serverRoot := selfSignedLoopbackCert(t)
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeFile(t, certFile, certPEM)
	writeFile(t, keyFile, keyPEM)

	apiAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t, "127.0.0.1")))
	mgmtAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t, "127.0.0.1")))
	type retryAfter struct{ Authz, Order int }
	var cfg struct {
		Pebble struct {
			ListenAddress           string
			ManagementListenAddress string
			HTTPPort, TLSPort       int
			Certificate, PrivateKey string
			KeyAlgorithm            string
			RetryAfter              retryAfter // zero: poll at the client's pace
		}
	}
	cfg.Pebble.ListenAddress = apiAddr
	cfg.Pebble.ManagementListenAddress = mgmtAddr
	cfg.Pebble.HTTPPort, cfg.Pebble.TLSPort = httpPort, tlsPort
	cfg.Pebble.Certificate, cfg.Pebble.PrivateKey = certFile, keyFile
	cfg.Pebble.KeyAlgorithm = "ecdsa"
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "pebble.json")
	writeFile(t, cfgFile, cfgJSON)

	cmd := exec.Command(bin, "-config", cfgFile)
	cmd.Env = pebbleEnv()
	var output lockedBuffer
	cmd.Stdout, cmd.Stderr = &output, &output
	if err := cmd.Start(); err != nil {
		t.Fatalf("failed to start pebble: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("pebble output:\n%s", output.String())
		}
	})

	p := &pebble{dirURL: "https://" + apiAddr + "/dir", serverRoot: serverRoot}
	client := &http.Client{
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: serverRoot}},
		Timeout:   5 * time.Second,
	}
	t.Cleanup(client.CloseIdleConnections)

	// Pebble prints "Listening on" before it binds, so readiness is the
	// directory answering; the loop ends early if Pebble exits.
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := client.Get(p.dirURL)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case <-exited:
			t.Fatalf("pebble exited before serving:\n%s", output.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("pebble did not serve %s within 15s (last error: %v)", p.dirURL, err)
		}
	}

	resp, err := client.Get("https://" + mgmtAddr + "/roots/0")
	if err != nil {
		t.Fatalf("failed to fetch pebble's issuance root: %v", err)
	}
	rootPEM, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("failed to fetch pebble's issuance root: status %d, %v", resp.StatusCode, err)
	}
	p.issuerRoot = x509.NewCertPool()
	if !p.issuerRoot.AppendCertsFromPEM(rootPEM) {
		t.Fatalf("pebble's issuance root is not PEM:\n%s", rootPEM)
	}
	return p
}

// pebbleEnv is the environment minus any PEBBLE_* setting (above all
// PEBBLE_VA_ALWAYS_VALID, which would skip validation), plus the settings
// that make Pebble fast and deterministic without weakening validation.
func pebbleEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PEBBLE_") && !strings.HasPrefix(kv, "GODEBUG=") {
			env = append(env, kv)
		}
	}
	return append(env,
		"PEBBLE_VA_NOSLEEP=1",      // no random 0-5 s sleep before each validation
		"PEBBLE_WFE_NONCEREJECT=0", // no artificial badNonce errors
		"PEBBLE_AUTHZREUSE=0",      // never skip a challenge by reusing an authorization
		"GODEBUG=netdns=go",        // Go's own resolver, as in localAddr
	)
}

// localAddr is the address Pebble's validation authority connects to for
// "localhost": it takes the first address the resolver returns, and so
// does this (both use Go's own resolver, which reads /etc/hosts; see
// pebbleEnv). Listening
// there, rather than assuming 127.0.0.1, keeps the tests working on hosts
// whose /etc/hosts lists ::1 first.
func localAddr(t *testing.T) string {
	t.Helper()
	r := &net.Resolver{PreferGo: true}
	addrs, err := r.LookupHost(t.Context(), "localhost")
	if err != nil || len(addrs) == 0 {
		t.Fatalf("failed to resolve localhost: %v", err)
	}
	if ip := net.ParseIP(addrs[0]); ip == nil || !ip.IsLoopback() {
		t.Fatalf("localhost resolves to %s, not a loopback address", addrs[0])
	}
	return addrs[0]
}

// listen opens a TCP listener on a free port of host.
func listen(t *testing.T, host string) (net.Listener, int) {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln, ln.Addr().(*net.TCPAddr).Port
}

// freePort returns a port on host that nothing listens on (right now).
func freePort(t *testing.T, host string) int {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

// serve runs srv on ln until the test ends. The server's own log (TLS
// handshake errors, such as the deliberately untrusting client's) is shown
// only if the test fails.
func serve(t *testing.T, srv *http.Server, ln net.Listener, tlsOn bool) {
	t.Helper()
	var errLog lockedBuffer
	srv.ErrorLog = log.New(&errLog, "", 0)
	srv.ReadHeaderTimeout = 10 * time.Second
	done := make(chan error, 1)
	go func() {
		if tlsOn {
			done <- srv.ServeTLS(ln, "", "")
		} else {
			done <- srv.Serve(ln)
		}
	}()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("server on %s: %v", ln.Addr(), err)
		}
		if t.Failed() && errLog.String() != "" {
			t.Logf("server on %s:\n%s", ln.Addr(), errLog.String())
		}
	})
}

// selfSignedLoopbackCert is Pebble's own HTTPS certificate, for 127.0.0.1.
func selfSignedLoopbackCert(t *testing.T) (certPEM, keyPEM []byte, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "pebble test server"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		pool
}

func writeFile(t *testing.T, name string, data []byte) {
	t.Helper()
	if err := os.WriteFile(name, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// lockedBuffer collects output written from several goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testLogger collects the Manager's logs and prints them if the test
// fails or runs with -v. It does not write to t directly: certmagic goroutines may log
// after the test returns.
func testLogger(t *testing.T) *slog.Logger {
	var buf lockedBuffer
	t.Cleanup(func() {
		if t.Failed() || testing.Verbose() {
			t.Logf("manager log:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// newManager returns a Manager for "localhost" at p, with cfg's ports,
// storage (default: a fresh directory) and challenge choice, closed when
// the test ends.
func newManager(t *testing.T, p *pebble, cfg Config) *Manager {
	t.Helper()
	cfg.Domain = "localhost"
	cfg.CA = p.dirURL
	cfg.CARoots = p.serverRoot
	cfg.Logger = testLogger(t)
	if cfg.StorageDir == "" {
		cfg.StorageDir = filepath.Join(t.TempDir(), "tls")
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}
