package tlsacme

import (
	"errors"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/agentkeys/broker/internal/pebbletest"

	"github.com/agentkeys/broker/internal/lockedbuf"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pebbletest.Cleanup()
	os.Exit(code)
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
	var errLog lockedbuf.Buffer
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

// testLogger collects the Manager's logs and prints them if the test
// fails or runs with -v. It does not write to t directly: certmagic goroutines may log
// after the test returns.
func testLogger(t *testing.T) *slog.Logger {
	var buf lockedbuf.Buffer
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
func newManager(t *testing.T, p *pebbletest.Pebble, cfg Config) *Manager {
	t.Helper()
	cfg.Domain = "localhost"
	cfg.CA = p.DirectoryURL
	cfg.CARoots = p.ServerRoots
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
