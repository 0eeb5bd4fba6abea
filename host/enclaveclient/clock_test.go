package enclaveclient

import (
	"context"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentkeys/broker/shared/protocol"
)

// shiftedEnclave answers info with its clock shift away from the host's.
type shiftedEnclave struct {
	shift atomic.Int64 // nanoseconds
	calls atomic.Int64 // info calls answered
}

func (e *shiftedEnclave) Handle(ctx context.Context, op protocol.Op, body []byte) (any, error) {
	if op != protocol.OpInfo {
		return nil, protocol.Errorf(protocol.CodeUnknownOp, "no")
	}
	defer e.calls.Add(1)
	return protocol.InfoResponse{ProtocolVersion: protocol.Version, ClockSource: "kvm-clock",
		Time: time.Now().Add(time.Duration(e.shift.Load())).UnixMilli()}, nil
}

// records is a slog handler that keeps every record's message and level.
type records struct {
	mu   sync.Mutex
	list []slog.Record
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	r.list = append(r.list, rec.Clone())
	r.mu.Unlock()
	return nil
}
func (r *records) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *records) WithGroup(string) slog.Handler      { return r }

// count returns how many records have msg.
func (r *records) count(msg string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, rec := range r.list {
		if rec.Message == msg {
			n++
		}
	}
	return n
}

const (
	msgClockOff  = "enclave clock differs from the host's"
	msgClockBack = "enclave clock back within limit"
)

// TestClockOffset moves the enclave's clock and checks the offset the host
// measures on connection and at each keep-alive, and that it warns once per
// crossing of the limit, not once per measurement. The tolerance (±1s) only
// absorbs the round trip on a loaded machine; nothing here measures speed.
func TestClockOffset(t *testing.T) {
	addr := "unix:" + filepath.Join(t.TempDir(), "e.sock")
	l, err := protocol.Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	enc := &shiftedEnclave{}
	enc.shift.Store(int64(5 * time.Second))
	srv := &protocol.Server{Handler: enc}
	go srv.Serve(l)
	defer srv.Shutdown(context.Background())

	dial, _ := protocol.Dialer(addr)
	logs := &records{}
	c := New(Config{Dial: dial, KeepAlive: 5 * time.Millisecond, Logger: slog.New(logs)})
	defer c.Close()

	// measured waits until the enclave has answered n more info calls: then
	// the client has measured (and logged) all but perhaps the last of them.
	measured := func(n int64) {
		t.Helper()
		target := enc.calls.Load() + n
		waitFor(t, "info calls", func() bool { return enc.calls.Load() >= target })
	}
	near := func(want time.Duration) {
		t.Helper()
		got, ok := c.ClockOffset()
		if !ok || got < want-time.Second || got > want+time.Second {
			t.Fatalf("ClockOffset = %v, %v; want %v ± 1s", got, ok, want)
		}
	}

	steps := []struct {
		name       string
		shift      time.Duration
		want       time.Duration
		off, backs int // warnings and recoveries logged so far
	}{
		{"enclave 5s ahead", 5 * time.Second, 5 * time.Second, 1, 0},
		{"enclave on time", 0, 0, 1, 1},
		{"within the limit", 1 * time.Second, 1 * time.Second, 1, 1},
		{"enclave 5s behind", -5 * time.Second, -5 * time.Second, 2, 1},
		{"still behind", -4 * time.Second, -4 * time.Second, 2, 1},
	}
	for _, st := range steps {
		enc.shift.Store(int64(st.shift))
		measured(3) // several measurements at this shift
		near(st.want)
		if n := logs.count(msgClockOff); n != st.off {
			t.Fatalf("%s: %d clock warnings, want %d", st.name, n, st.off)
		}
		if n := logs.count(msgClockBack); n != st.backs {
			t.Fatalf("%s: %d clock recoveries logged, want %d", st.name, n, st.backs)
		}
	}
}

// An enclave that does not report its time gives no measurement (not 0).
func TestClockOffsetUnreported(t *testing.T) {
	addr := "unix:" + filepath.Join(t.TempDir(), "e.sock")
	srv := serve(t, addr, "old")
	defer srv.Shutdown(context.Background())
	dial, _ := protocol.Dialer(addr)
	c := New(Config{Dial: dial})
	defer c.Close()
	waitFor(t, "connection", c.Connected)
	if off, ok := c.ClockOffset(); ok {
		t.Fatalf("ClockOffset = %v, true; want no measurement", off)
	}
}
