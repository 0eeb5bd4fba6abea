package enclaveclient

import (
	"context"
	"errors"
	"path/filepath"
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
	var infos atomic.Int32
	c := New(Config{Dial: dial, FailFast: 50 * time.Millisecond, MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond,
		OnInfo: func(protocol.InfoResponse) { infos.Add(1) }})
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
	if info, ok := c.Info(); !ok || info.SigningKid != "kid-one" {
		t.Fatalf("cached info: %+v", info)
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
	if info, _ := c.Info(); info.SigningKid != "kid-two" {
		t.Fatalf("info not refreshed: %+v", info)
	}
	if infos.Load() != 2 {
		t.Fatalf("OnInfo called %d times, want 2", infos.Load())
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
		OnConnect: func(ctx context.Context, call func(context.Context, protocol.Op, any, any) error) error {
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
