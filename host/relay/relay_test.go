package relay

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/agentkeys/broker/host/metrics"
)

// selfSigned returns a certificate for name and a pool that trusts it.
func selfSigned(t testing.TB, name string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k, Leaf: leaf}, pool
}

// serveHTTPS serves body over TLS with cert on l.
func serveHTTPS(t testing.TB, l net.Listener, cert tls.Certificate, body string) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, body) }),
		ReadHeaderTimeout: 30 * time.Second}
	go srv.Serve(tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{cert}}))
	t.Cleanup(func() { srv.Close() })
}

type fixture struct {
	addr  string
	roots *x509.CertPool
	relay *Relay
	m     *metrics.Metrics
}

// start runs a relay routing issuer.test to a stand-in enclave origin (which
// answers "enclave") and everything else to a stand-in API (which answers
// "host").
func start(t *testing.T, adjust func(*Config)) *fixture {
	t.Helper()
	ecert, roots := selfSigned(t, "issuer.test")
	acert, _ := selfSigned(t, "api.test")
	roots.AddCert(acert.Leaf)
	el, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveHTTPS(t, el, ecert, "enclave")
	m := metrics.New(nil)
	cfg := Config{IssuerHost: "issuer.test", Metrics: m,
		DialEnclave: func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", el.Addr().String())
		}}
	if adjust != nil {
		adjust(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	serveHTTPS(t, r.API(), acert, "host")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go r.Serve(l)
	t.Cleanup(func() { r.Close() })
	return &fixture{addr: l.Addr().String(), roots: roots, relay: r, m: m}
}

func (f *fixture) get(t *testing.T, name string) (string, error) {
	t.Helper()
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: f.roots, ServerName: name},
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", f.addr)
		},
		DisableKeepAlives: true,
	}}
	resp, err := c.Get("https://" + name + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
	return string(b), err
}

func TestRoutesBySNI(t *testing.T) {
	f := start(t, nil)
	for name, want := range map[string]string{"issuer.test": "enclave", "ISSUER.test": "enclave", "api.test": "host"} {
		got, err := f.get(t, name)
		if err != nil || got != want {
			t.Errorf("GET https://%s/ = %q, %v; want %q", name, got, err, want)
		}
	}
	if n := testutil.ToFloat64(f.m.RelayConnections.WithLabelValues(RouteIssuer, "relayed")); n != 2 {
		t.Errorf("issuer connections relayed = %v, want 2", n)
	}
	if n := testutil.ToFloat64(f.m.RelayConnections.WithLabelValues(RouteAPI, "relayed")); n != 1 {
		t.Errorf("api connections relayed = %v, want 1", n)
	}
}

func TestAllToEnclave(t *testing.T) {
	f := start(t, func(c *Config) { c.AllToEnclave, c.IssuerHost = true, "" })
	if got, err := f.get(t, "issuer.test"); err != nil || got != "enclave" {
		t.Fatalf("got %q, %v", got, err)
	}
}

// waitClosed reads from c until the relay closes it, and fails the test if it
// sends anything or leaves it open for a minute.
func waitClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(time.Minute))
	n, err := c.Read(make([]byte, 1))
	var ne net.Error
	if n > 0 || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("relay left the connection open: read %d bytes, %v", n, err)
	}
}

// helloPrefix is the first bytes of a real ClientHello for issuer.test.
func helloPrefix(t *testing.T) []byte {
	t.Helper()
	raw := captureHello(t, "issuer.test")
	return raw[:len(raw)/2]
}

// captureHello returns the first flight a crypto/tls client sends for name.
func captureHello(t testing.TB, name string) []byte {
	t.Helper()
	a, b := net.Pipe()
	go func() {
		tls.Client(a, &tls.Config{ServerName: name}).Handshake()
		a.Close()
	}()
	raw, _, err := readHello(b)
	b.Close()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestAbusiveClients(t *testing.T) {
	f := start(t, func(c *Config) { c.HelloTimeout = 500 * time.Millisecond })
	dial := func() net.Conn {
		c, err := net.Dial("tcp", f.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	t.Run("half-sent ClientHello times out", func(t *testing.T) {
		c := dial()
		c.Write(helloPrefix(t))
		waitClosed(t, c)
	})
	t.Run("silent client times out", func(t *testing.T) {
		waitClosed(t, dial())
	})
	t.Run("garbage is closed", func(t *testing.T) {
		c := dial()
		c.Write([]byte("GET / HTTP/1.1\r\nHost: issuer.test\r\n\r\n"))
		waitClosed(t, c)
	})
	t.Run("oversize record is closed", func(t *testing.T) {
		c := dial()
		c.Write([]byte{0x16, 3, 1, 0xff, 0xff})
		waitClosed(t, c)
	})
	if got, err := f.get(t, "issuer.test"); err != nil || got != "enclave" {
		t.Fatalf("a fresh client after the abuse: %q, %v", got, err)
	}
	if n := testutil.ToFloat64(f.m.RelayConnections.WithLabelValues("unknown", "hello_timeout")); n < 2 {
		t.Errorf("hello timeouts counted: %v, want 2", n)
	}
}

func TestConnectionCap(t *testing.T) {
	f := start(t, func(c *Config) { c.MaxConns = 2; c.HelloTimeout = time.Minute })
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", f.addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	// Both slots are taken once the relay has accepted the two; a third
	// connection is then closed at once. Wait for the relay to count it.
	deadline := time.Now().Add(time.Minute)
	for {
		c, err := net.Dial("tcp", f.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1))
		c.Close()
		if testutil.ToFloat64(f.m.RelayConnections.WithLabelValues("unknown", "rejected")) >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no connection was refused at the cap (last read: %v)", err)
		}
	}
	for _, c := range held {
		c.Close()
	}
	// The slots come back: a fresh client works (retry while the relay
	// notices the closed connections).
	for {
		got, err := f.get(t, "issuer.test")
		if err == nil && got == "enclave" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a fresh client after the cap: %q, %v", got, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestReadHello(t *testing.T) {
	raw := captureHello(t, "Issuer.Test")
	got, sni, err := readHello(strings.NewReader(string(raw) + "trailing bytes stay unread"))
	if err != nil || sni != "issuer.test" || string(got) != string(raw) {
		t.Fatalf("readHello = %d bytes, %q, %v", len(got), sni, err)
	}
	// No SNI (a client dialling an IP address).
	a, b := net.Pipe()
	go func() { tls.Client(a, &tls.Config{InsecureSkipVerify: true}).Handshake(); a.Close() }()
	_, sni, err = readHello(b)
	b.Close()
	if err != nil || sni != "" {
		t.Fatalf("no SNI: %q, %v", sni, err)
	}
	// The ClientHello split across two records.
	body := raw[5:]
	split := []byte{0x16, 3, 1, 0, 10}
	split = append(split, body[:10]...)
	split = append(split, 0x16, 3, 1, byte((len(body)-10)>>8), byte(len(body)-10))
	split = append(split, body[10:]...)
	if _, sni, err := readHello(strings.NewReader(string(split))); err != nil || sni != "issuer.test" {
		t.Fatalf("split hello: %q, %v", sni, err)
	}
}

// FuzzReadHello: any bytes from the network; readHello never reads more than
// MaxHello, never panics, and returns what it read.
func FuzzReadHello(f *testing.F) {
	f.Add(captureHello(f, "issuer.test"))
	f.Add([]byte{0x16, 3, 1, 0, 4, 1, 0, 0, 0})
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		raw, _, _ := readHello(strings.NewReader(string(b)))
		if len(raw) > MaxHello || len(raw) > len(b) {
			t.Fatalf("read %d bytes of %d", len(raw), len(b))
		}
	})
}
