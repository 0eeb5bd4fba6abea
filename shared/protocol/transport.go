package protocol

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Addresses name a transport and its endpoint:
//
//	unix:/run/agentkeys/enclave.sock   a unix socket (simulated mode)
//	tcp:127.0.0.1:7070                 loopback TCP (simulated mode; non-loopback is refused)
//	vsock:5005                         listen on a vsock port (inside the enclave)
//	vsock:16:5005                      dial a vsock CID and port (the host)
//
// The vsock wiring is deliberately thin (see vsock_linux.go); the protocol is
// tested over unix sockets.

// Listen listens on addr.
func Listen(addr string) (net.Listener, error) {
	scheme, rest, ok := strings.Cut(addr, ":")
	if !ok || rest == "" {
		return nil, fmt.Errorf("listen address %q: want unix:PATH, tcp:127.0.0.1:PORT or vsock:PORT", addr)
	}
	switch scheme {
	case "unix":
		// A stale socket from an earlier run would make Listen fail; remove it if it
		// is a socket (never anything else).
		if fi, err := os.Lstat(rest); err == nil && fi.Mode()&os.ModeSocket != 0 {
			os.Remove(rest)
		}
		l, err := net.Listen("unix", rest)
		if err != nil {
			return nil, err
		}
		// Only the owner (the host's user) may connect. Between bind and chmod
		// the mode follows the umask: keep the socket in a 0700 directory (as
		// make dev does). Narrowing the umask instead would race with every
		// other goroutine's file and process creation.
		if err := os.Chmod(rest, 0o600); err != nil {
			l.Close()
			return nil, err
		}
		return l, nil
	case "tcp":
		if err := checkLoopback(rest); err != nil {
			return nil, err
		}
		return net.Listen("tcp", rest)
	case "vsock":
		port, err := parsePort(rest)
		if err != nil {
			return nil, fmt.Errorf("listen address %q: %w", addr, err)
		}
		return listenVsock(port)
	}
	return nil, fmt.Errorf("listen address %q: unknown transport %q (want unix, tcp or vsock)", addr, scheme)
}

// Dialer returns a function that dials addr, for a client that reconnects.
func Dialer(addr string) (func(ctx context.Context) (net.Conn, error), error) {
	scheme, rest, ok := strings.Cut(addr, ":")
	if !ok || rest == "" {
		return nil, fmt.Errorf("enclave address %q: want unix:PATH, tcp:HOST:PORT or vsock:CID:PORT", addr)
	}
	switch scheme {
	case "unix", "tcp":
		if scheme == "tcp" {
			if _, _, err := net.SplitHostPort(rest); err != nil {
				return nil, fmt.Errorf("enclave address %q: %w", addr, err)
			}
		}
		return func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, scheme, rest)
		}, nil
	case "vsock":
		cidS, portS, ok := strings.Cut(rest, ":")
		if !ok {
			return nil, fmt.Errorf("enclave address %q: want vsock:CID:PORT", addr)
		}
		cid, err := strconv.ParseUint(cidS, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("enclave address %q: bad CID: %w", addr, err)
		}
		port, err := parsePort(portS)
		if err != nil {
			return nil, fmt.Errorf("enclave address %q: %w", addr, err)
		}
		return func(ctx context.Context) (net.Conn, error) {
			return dialVsock(ctx, uint32(cid), port)
		}, nil
	}
	return nil, fmt.Errorf("enclave address %q: unknown transport %q (want unix, tcp or vsock)", addr, scheme)
}

// Dial dials addr once.
func Dial(ctx context.Context, addr string) (net.Conn, error) {
	d, err := Dialer(addr)
	if err != nil {
		return nil, err
	}
	return d(ctx)
}

func parsePort(s string) (uint32, error) {
	p, err := strconv.ParseUint(s, 10, 32)
	if err != nil || p == 0 {
		return 0, fmt.Errorf("bad port %q", s)
	}
	return uint32(p), nil
}

func checkLoopback(hostport string) error {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return fmt.Errorf("tcp address %q: %w", hostport, err)
	}
	ip := net.ParseIP(host)
	if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("tcp address %q: the enclave listens on loopback only", hostport)
	}
	return nil
}

// dialTimeout bounds a vsock dial that has no context support.
const dialTimeout = 5 * time.Second
