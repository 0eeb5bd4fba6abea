// Package pebbletest runs Pebble, Let's Encrypt's ACME test server, for
// tests that obtain real certificates: the host's tlsacme package and the
// end-to-end test of the agentkeys-host binary.
//
// # Starting a CA
//
// Call [Start] with the ports on which the code under test answers the
// challenges. Pebble's validation authority connects to the name being
// validated ("localhost" in these tests) on those ports, exactly as a
// public CA connects to ports 80 and 443:
//
//	p := pebbletest.Start(t, pebbletest.Options{HTTPPort: httpPort, TLSPort: httpsPort})
//
// Point the ACME client at [Pebble.DirectoryURL], trusting
// [Pebble.ServerRoots] (or, for a binary, the PEM file [Pebble.ServerCAFile])
// for Pebble's own HTTPS. A certificate Pebble issues chains to
// [Pebble.IssuerRoots], a different root, which a test's HTTPS client trusts
// in place of the system roots. Pebble stops when the test ends; its output
// is logged if the test failed.
//
// Listen on the address [LocalhostAddr] returns, not on 127.0.0.1: that is
// where Pebble connects for "localhost", and on some hosts it is ::1.
//
// # Validation is real
//
// Pebble runs with PEBBLE_VA_NOSLEEP (no random delay before a validation),
// without artificial nonce errors and without reusing authorizations, so
// that tests are fast and deterministic. Every PEBBLE_* variable of the
// caller's environment is dropped, above all PEBBLE_VA_ALWAYS_VALID: a
// certificate is issued only if the challenge was really answered on the
// given port.
//
// # The binary
//
// Pebble is built from the module cache (github.com/letsencrypt/pebble/v2
// at the version in go.mod) the first time a test binary calls Start, and
// reused by later calls. Its packages are not linked into the tests, which
// would pull its dependencies into this module's go.mod. The package's
// TestMain should call [Cleanup] after the tests have run, to remove the
// built binary:
//
//	func TestMain(m *testing.M) {
//		code := m.Run()
//		pebbletest.Cleanup()
//		os.Exit(code)
//	}
package pebbletest

import (
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

	"github.com/agentkeys/broker/internal/lockedbuf"
)

// startTimeout bounds how long Pebble may take to serve its directory.
const startTimeout = 15 * time.Second

// Options configures the Pebble that Start runs.
type Options struct {
	// HTTPPort and TLSPort are the ports on which Pebble's validation
	// authority connects to the name being validated, for the HTTP-01 and
	// TLS-ALPN-01 challenges. Both are required. To make one challenge fail,
	// give a port nothing listens on.
	HTTPPort, TLSPort int
}

// Pebble is a running Pebble ACME server.
type Pebble struct {
	// DirectoryURL is the ACME directory, https://127.0.0.1:PORT/dir.
	DirectoryURL string

	// ServerCAFile is a PEM file holding the root of Pebble's own HTTPS
	// certificate: what agentkeys-host's --acme-ca-root takes.
	ServerCAFile string

	// ServerRoots holds the same root as ServerCAFile, for in-process ACME
	// clients (tlsacme.Config.CARoots).
	ServerRoots *x509.CertPool

	mgmtURL string       // Pebble's management interface
	client  *http.Client // trusts ServerRoots

	mu          sync.Mutex
	issuerRoots *x509.CertPool // fetched on first use
}

// Start runs a Pebble whose validation authority connects to opts.HTTPPort
// and opts.TLSPort, waits until it serves its directory, and stops it when
// the test ends. It fails the test if Pebble cannot be built or started.
func Start(t testing.TB, opts Options) *Pebble {
	t.Helper()
	for _, port := range []int{opts.HTTPPort, opts.TLSPort} {
		if port < 1 || port > 65535 {
			t.Fatalf("pebbletest: Options.HTTPPort and TLSPort must be ports 1-65535, got %d and %d", opts.HTTPPort, opts.TLSPort)
		}
	}

	dir := t.TempDir()
	certPEM, keyPEM, root := selfSignedLoopbackCert(t)
	certFile, keyFile := filepath.Join(dir, "server-ca.pem"), filepath.Join(dir, "server-key.pem")
	writeFile(t, certFile, certPEM)
	writeFile(t, keyFile, keyPEM)
	p := &Pebble{ServerCAFile: certFile, ServerRoots: x509.NewCertPool()}
	p.ServerRoots.AddCert(root)
	p.client = &http.Client{
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.ServerRoots}},
		Timeout:   5 * time.Second,
	}
	t.Cleanup(p.client.CloseIdleConnections)

	// Pebble's own ports are chosen free and then bound by Pebble, so
	// another process can take one in between; start again with new ports
	// if that happens.
	const attempts = 3
	for i := 1; ; i++ {
		err := p.start(t, dir, certFile, keyFile, opts)
		if err == nil {
			return p
		}
		if !errors.Is(err, errPortTaken) || i == attempts {
			t.Fatal(err)
		}
		t.Logf("pebbletest: %v; trying other ports", err)
	}
}

var errPortTaken = errors.New("pebble's port was taken")

// start runs Pebble once on new ports and waits until it serves.
func (p *Pebble) start(t testing.TB, dir, certFile, keyFile string, opts Options) error {
	t.Helper()
	apiAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	mgmtAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
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
	cfg.Pebble.HTTPPort, cfg.Pebble.TLSPort = opts.HTTPPort, opts.TLSPort
	cfg.Pebble.Certificate, cfg.Pebble.PrivateKey = certFile, keyFile
	cfg.Pebble.KeyAlgorithm = "ecdsa"
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	cfgFile := filepath.Join(dir, "pebble.json")
	writeFile(t, cfgFile, cfgJSON)

	var output lockedbuf.Buffer
	cmd := &exec.Cmd{Args: []string{"pebble", "-config", cfgFile}, Env: pebbleEnv(), Stdout: &output, Stderr: &output}
	if err := startBinary(cmd); err != nil {
		return err
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

	p.DirectoryURL = "https://" + apiAddr + "/dir"
	p.mgmtURL = "https://" + mgmtAddr

	// Pebble prints "Listening on" before it binds, so readiness is the
	// directory answering; the loop ends early if Pebble exits.
	deadline := time.Now().Add(startTimeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := p.get(t, p.DirectoryURL, nil)
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			if out := output.String(); strings.Contains(out, "address already in use") {
				return fmt.Errorf("%w:\n%s", errPortTaken, out)
			}
			return fmt.Errorf("pebble exited before serving (%v):\n%s", cmd.ProcessState, output.String())
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pebble did not serve %s within %v (last error: %v)", p.DirectoryURL, startTimeout, err)
		}
	}
}

// IssuerRoots returns a pool holding the root under which Pebble issues
// certificates: what a client of the certificate's server must trust. It is
// fetched from Pebble's management interface (/roots/0) on first use.
func (p *Pebble) IssuerRoots(t testing.TB) *x509.CertPool {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.issuerRoots == nil {
		var rootPEM []byte
		if err := p.get(t, p.mgmtURL+"/roots/0", &rootPEM); err != nil {
			t.Fatalf("pebbletest: failed to fetch pebble's issuance root: %v", err)
		}
		block, _ := pem.Decode(rootPEM)
		if block == nil || block.Type != "CERTIFICATE" {
			t.Fatalf("pebbletest: pebble's issuance root is not a PEM certificate:\n%s", rootPEM)
		}
		root, err := x509.ParseCertificate(block.Bytes)
		if err != nil || !root.IsCA {
			t.Fatalf("pebbletest: pebble's issuance root is not a CA certificate (%v)", err)
		}
		p.issuerRoots = x509.NewCertPool()
		p.issuerRoots.AddCert(root)
	}
	return p.issuerRoots.Clone()
}

// get fetches url from Pebble and expects 200. The body is stored in body,
// if not nil.
func (p *Pebble) get(t testing.TB, url string, body *[]byte) error {
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
	}
	if body != nil {
		*body = b
	}
	return nil
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
		"GODEBUG=netdns=go",        // Go's own resolver, as in LocalhostAddr
	)
}

// LocalhostAddr returns the IP address Pebble's validation authority
// connects to for "localhost": it takes the first address the resolver
// returns, and so does LocalhostAddr (both use Go's own resolver, which
// reads /etc/hosts). Listening there, rather than on 127.0.0.1, keeps tests
// working on hosts whose /etc/hosts lists ::1 first.
func LocalhostAddr(t testing.TB) string {
	t.Helper()
	r := &net.Resolver{PreferGo: true}
	addrs, err := r.LookupHost(t.Context(), "localhost")
	if err != nil || len(addrs) == 0 {
		t.Fatalf("pebbletest: failed to resolve localhost: %v", err)
	}
	if ip := net.ParseIP(addrs[0]); ip == nil || !ip.IsLoopback() {
		t.Fatalf("pebbletest: localhost resolves to %s, not a loopback address", addrs[0])
	}
	return addrs[0]
}

// freePort returns a port on 127.0.0.1 that nothing listens on (right now).
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// selfSignedLoopbackCert is Pebble's own HTTPS certificate, for 127.0.0.1.
// It is its own root.
func selfSignedLoopbackCert(t testing.TB) (certPEM, keyPEM []byte, cert *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "pebble test server"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
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
	cert, err = x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		cert
}

func writeFile(t testing.TB, name string, data []byte) {
	t.Helper()
	if err := os.WriteFile(name, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
