package enclaveclient

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentkeys/broker/shared/protocol"
)

type fakeEnclave struct{ mode string }

func (f fakeEnclave) Handle(ctx context.Context, op protocol.Op, body []byte) (any, error) {
	switch op {
	case protocol.OpInfo:
		return protocol.InfoResponse{ProtocolVersion: protocol.Version, Mode: f.mode, SigningKid: "kid-" + f.mode}, nil
	case protocol.OpSessionNonce:
		return protocol.SessionNonceResponse{Nonce: "n-" + f.mode}, nil
	}
	return nil, protocol.Errorf(protocol.CodeUnknownOp, "no")
}

func serve(t *testing.T, addr, mode string) *protocol.Server {
	t.Helper()
	l, err := protocol.Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &protocol.Server{Handler: fakeEnclave{mode}}
	go srv.Serve(l)
	return srv
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for i := 0; i < 2000; i++ {
		if cond() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("gave up waiting for %s", what)
}

func TestReconnects(t *testing.T) {
	addr := "unix:" + filepath.Join(t.TempDir(), "e.sock")
	dial, err := protocol.Dialer(addr)
	if err != nil {
		t.Fatal(err)
	}
	c := New(Config{Dial: dial, FailFast: 50 * time.Millisecond, MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	defer c.Close()
	ctx := context.Background()

	// Nothing listens yet: calls fail fast as unavailable.
	if err := c.Call(ctx, protocol.OpSessionNonce, protocol.SessionNonceRequest{}, nil); !errors.Is(err, protocol.ErrUnavailable) {
		t.Fatalf("before the enclave starts: %v", err)
	}
	if _, ok := c.Info(); ok {
		t.Fatal("Info before any connection")
	}

	srv := serve(t, addr, "one")
	waitFor(t, "first connection", c.Connected)
	var r protocol.SessionNonceResponse
	if err := c.Call(ctx, protocol.OpSessionNonce, protocol.SessionNonceRequest{}, &r); err != nil || r.Nonce != "n-one" {
		t.Fatalf("connected call: %v %+v", err, r)
	}
	first, ok := c.Info()
	if !ok || first.SigningKid != "kid-one" {
		t.Fatalf("cached info: %+v", first)
	}
	if again, _ := c.Info(); again != first {
		t.Fatal("Info returned a new snapshot without a reconnection")
	}

	// The enclave goes away: calls are unavailable, not hung.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	srv.Shutdown(cctx)
	waitFor(t, "disconnect", func() bool { return !c.Connected() })
	if err := c.Call(ctx, protocol.OpSessionNonce, protocol.SessionNonceRequest{}, nil); !errors.Is(err, protocol.ErrUnavailable) {
		t.Fatalf("enclave down: %v", err)
	}

	// It comes back (a restarted enclave): the client recovers by itself and
	// refreshes the cached Info.
	srv2 := serve(t, addr, "two")
	defer srv2.Shutdown(ctx)
	waitFor(t, "reconnection", c.Connected)
	if err := c.Call(ctx, protocol.OpSessionNonce, protocol.SessionNonceRequest{}, &r); err != nil || r.Nonce != "n-two" {
		t.Fatalf("after reconnect: %v %+v", err, r)
	}
	info, _ := c.Info()
	if info == first || info.SigningKid != "kid-two" {
		t.Fatalf("info not refreshed: %+v", info)
	}
	// The old snapshot was replaced, not modified: whoever holds it (and what it
	// derived from it) still sees one consistent Info.
	if first.SigningKid != "kid-one" {
		t.Fatalf("the first snapshot changed: %+v", first)
	}
}

func TestCallHonoursContext(t *testing.T) {
	addr := "unix:" + filepath.Join(t.TempDir(), "e.sock")
	dial, _ := protocol.Dialer(addr)
	c := New(Config{Dial: dial, FailFast: time.Hour})
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.Call(ctx, protocol.OpInfo, protocol.InfoRequest{}, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
}

// TestKeepAliveOutlivesIdleTimeout: with an enclave that closes idle
// connections, the keep-alive holds the one connection open, so calls made
// after a quiet spell longer than the idle timeout use it and never race its
// closing. Without the keep-alive the enclave closes the connection and the
// client dials again.
func TestKeepAliveOutlivesIdleTimeout(t *testing.T) {
	addr := "unix:" + filepath.Join(t.TempDir(), "e.sock")
	l, err := protocol.Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	idle := time.Second
	srv := &protocol.Server{Handler: fakeEnclave{"one"}, IdleTimeout: idle}
	go srv.Serve(l)
	defer srv.Shutdown(context.Background())
	dial, err := protocol.Dialer(addr)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		keepAlive time.Duration
		redials   bool
	}{{idle / 20, false}, {time.Hour, true}} {
		var dials atomic.Int32
		counting := func(ctx context.Context) (net.Conn, error) { dials.Add(1); return dial(ctx) }
		c := New(Config{Dial: counting, KeepAlive: tc.keepAlive, MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
		waitFor(t, "a connection", c.Connected)
		time.Sleep(5 * idle / 2) // quiet: only keep-alives, if any
		if err := c.Call(context.Background(), protocol.OpSessionNonce, protocol.SessionNonceRequest{}, nil); err != nil && !tc.redials {
			t.Fatalf("keep-alive %v: call after a quiet spell: %v", tc.keepAlive, err)
		}
		waitFor(t, "a connection", c.Connected)
		if got := dials.Load() > 1; got != tc.redials {
			t.Fatalf("keep-alive %v: %d dials", tc.keepAlive, dials.Load())
		}
		c.Close()
	}
}

// sealedEnclave answers info with seed: needs_unseal until unseal is called.
type sealedEnclave struct{ unsealed atomic.Bool }

func (f *sealedEnclave) Handle(ctx context.Context, op protocol.Op, body []byte) (any, error) {
	switch op {
	case protocol.OpInfo:
		if !f.unsealed.Load() {
			return protocol.InfoResponse{ProtocolVersion: protocol.Version, Mode: "nitro", Seed: protocol.SeedNeedsUnseal}, nil
		}
		return protocol.InfoResponse{ProtocolVersion: protocol.Version, Mode: "nitro", SigningKid: "kid"}, nil
	case protocol.OpUnseal:
		f.unsealed.Store(true)
		return protocol.UnsealResponse{}, nil
	}
	return nil, protocol.Errorf(protocol.CodeUnavailable, "sealed")
}

// TestUnsealHook: a sealed enclave is unreachable to a host without the hook,
// and is unsealed on connect by one with it, whose Info then has the keys.
func TestUnsealHook(t *testing.T) {
	addr := "unix:" + filepath.Join(t.TempDir(), "e.sock")
	l, err := protocol.Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	enc := &sealedEnclave{}
	srv := &protocol.Server{Handler: enc}
	go srv.Serve(l)
	defer srv.Shutdown(context.Background())
	dial, _ := protocol.Dialer(addr)

	plain := New(Config{Dial: dial, FailFast: 50 * time.Millisecond, MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	err = plain.Call(context.Background(), protocol.OpSessionNonce, protocol.SessionNonceRequest{}, nil)
	plain.Close()
	if !errors.Is(err, protocol.ErrUnavailable) || !strings.Contains(err.Error(), "not configured to unseal") {
		t.Fatalf("call through a host without the hook: %v", err)
	}

	var calls atomic.Int32
	c := New(Config{Dial: dial, MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond,
		Unseal: func(ctx context.Context, call CallFunc) error {
			calls.Add(1)
			var resp protocol.UnsealResponse
			return call(ctx, protocol.OpUnseal, protocol.UnsealRequest{}, &resp)
		}})
	defer c.Close()
	waitFor(t, "connection", c.Connected)
	info, _ := c.Info()
	if info.Seed != "" || info.SigningKid != "kid" || calls.Load() != 1 {
		t.Fatalf("info after unseal: %+v, hook called %d times", info, calls.Load())
	}
}

// TestOnConnect: the hook runs on each new connection before any call may
// use it, with a working call; while it fails, the client stays unconnected
// and retries, and calls fail as unavailable.
func TestOnConnect(t *testing.T) {
	addr := "unix:" + filepath.Join(t.TempDir(), "e.sock")
	dial, err := protocol.Dialer(addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := serve(t, addr, "a")
	defer srv.Shutdown(context.Background())
	var fail atomic.Bool
	fail.Store(true)
	var runs atomic.Int32
	c := New(Config{Dial: dial, FailFast: 50 * time.Millisecond, MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond,
		OnConnect: func(ctx context.Context, call CallFunc) error {
			runs.Add(1)
			var r protocol.SessionNonceResponse
			if err := call(ctx, protocol.OpSessionNonce, protocol.SessionNonceRequest{}, &r); err != nil || r.Nonce != "n-a" {
				t.Errorf("the hook's call: %v %+v", err, r)
			}
			if fail.Load() {
				return errors.New("the store refused")
			}
			return nil
		}})
	defer c.Close()
	waitFor(t, "two failed hooks", func() bool { return runs.Load() >= 2 })
	if c.Connected() {
		t.Fatal("connected although the hook failed")
	}
	var r protocol.SessionNonceResponse
	if err := c.Call(context.Background(), protocol.OpSessionNonce, protocol.SessionNonceRequest{}, &r); !errors.Is(err, protocol.ErrUnavailable) {
		t.Fatalf("a call while the hook fails: %v", err)
	}
	fail.Store(false)
	waitFor(t, "connected", c.Connected)
	if err := c.Call(context.Background(), protocol.OpSessionNonce, protocol.SessionNonceRequest{}, &r); err != nil {
		t.Fatal(err)
	}
}

// resumingEnclave reports another checkpoint key once audit_resume chose a
// log, as the enclave does.
type resumingEnclave struct{ resumed atomic.Bool }

func (f *resumingEnclave) Handle(ctx context.Context, op protocol.Op, body []byte) (any, error) {
	switch op {
	case protocol.OpInfo:
		key := "broker.example.com/audit+00000000+AQ"
		if f.resumed.Load() {
			key = "broker.example.com/audit/host-a+00000000+AQ"
		}
		return protocol.InfoResponse{ProtocolVersion: protocol.Version, Mode: "simulated", CheckpointVerifierKey: key}, nil
	case protocol.OpAuditResume:
		f.resumed.Store(true)
		return protocol.AuditResumeResponse{}, nil
	}
	return nil, protocol.Errorf(protocol.CodeUnknownOp, "no")
}

// TestInfoAfterOnConnect: the Info snapshot is the one read after the hook,
// so it names the log the hook's audit_resume chose.
func TestInfoAfterOnConnect(t *testing.T) {
	addr := "unix:" + filepath.Join(t.TempDir(), "e.sock")
	l, err := protocol.Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &protocol.Server{Handler: &resumingEnclave{}}
	go srv.Serve(l)
	defer srv.Shutdown(context.Background())
	dial, _ := protocol.Dialer(addr)
	c := New(Config{Dial: dial, MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond,
		OnConnect: func(ctx context.Context, call CallFunc) error {
			var resp protocol.AuditResumeResponse
			return call(ctx, protocol.OpAuditResume, protocol.AuditResumeRequest{Log: "host-a"}, &resp)
		}})
	defer c.Close()
	waitFor(t, "connection", c.Connected)
	if info, _ := c.Info(); info.CheckpointVerifierKey != "broker.example.com/audit/host-a+00000000+AQ" {
		t.Fatalf("Info after the hook: %s", info.CheckpointVerifierKey)
	}
}
