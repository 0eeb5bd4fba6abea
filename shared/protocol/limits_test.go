package protocol

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/iotest"
	"time"
)

// patience bounds every wait in these tests; nothing here should come near it.
const patience = 60 * time.Second

// serveUnix runs srv on a fresh unix socket and returns its address.
func serveUnix(t *testing.T, srv *Server) string {
	t.Helper()
	addr := "unix:" + filepath.Join(t.TempDir(), "e.sock")
	l, err := Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return addr
}

func dialRaw(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := Dial(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(patience))
	return conn
}

func requestFrame(t *testing.T, id uint64, op Op, text string) []byte {
	t.Helper()
	body, err := Marshal(echoReq{Text: text})
	if err != nil {
		t.Fatal(err)
	}
	req, err := Marshal(&Request{Version: Version, ID: id, Op: op, Body: body})
	if err != nil {
		t.Fatal(err)
	}
	return frameOf(t, req)
}

// expectClosed reads from conn and wants the server's close (EOF), not data
// and not our own deadline.
func expectClosed(t *testing.T, conn net.Conn, what string) {
	t.Helper()
	var b [1]byte
	n, err := conn.Read(b[:])
	if n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("%s: read = %d, %v; want EOF (closed by the server)", what, n, err)
	}
}

func expectEcho(t *testing.T, addr, text string) {
	t.Helper()
	c := dialClient(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	var out echoResp
	if err := c.Call(ctx, "echo", echoReq{Text: text}, &out); err != nil || out.Text != text {
		t.Fatalf("fresh client: %v %+v", err, out)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// fakeListener's Accept fails with errs, in order, then hands out conns.
type fakeListener struct {
	mu     sync.Mutex
	errs   []error
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func (l *fakeListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if len(l.errs) > 0 {
		err := l.errs[0]
		l.errs = l.errs[1:]
		l.mu.Unlock()
		return nil, err
	}
	l.mu.Unlock()
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, &net.OpError{Op: "accept", Net: "fake", Err: net.ErrClosed}
	}
}

func (l *fakeListener) Close() error   { l.once.Do(func() { close(l.closed) }); return nil }
func (l *fakeListener) Addr() net.Addr { return &net.UnixAddr{Name: "fake", Net: "unix"} }

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func acceptErr(errno syscall.Errno) error {
	return &net.OpError{Op: "accept", Net: "unix", Err: os.NewSyscallError("accept4", errno)}
}

// syncBuffer collects log lines written from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestServeRetriesAcceptErrors: whatever Accept fails with, Serve logs, backs
// off, retries and then serves; only closing the listener or Shutdown ends it.
func TestServeRetriesAcceptErrors(t *testing.T) {
	const n = 6
	tests := []struct {
		name string
		err  error
	}{
		{"EMFILE", acceptErr(syscall.EMFILE)},
		{"ENFILE", acceptErr(syscall.ENFILE)},
		{"ECONNABORTED", acceptErr(syscall.ECONNABORTED)},
		{"ENOBUFS", acceptErr(syscall.ENOBUFS)},
		{"timeout", &net.OpError{Op: "accept", Net: "unix", Err: timeoutErr{}}},
		{"anything else", errors.New("the listener is having a bad day")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := &fakeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
			for range n {
				l.errs = append(l.errs, tt.err)
			}
			var logs syncBuffer
			srv := &Server{Handler: &testHandler{}, Logger: slog.New(slog.NewJSONHandler(&logs, nil))}
			errc := make(chan error, 1)
			go func() { errc <- srv.Serve(l) }()

			client, server := net.Pipe()
			select {
			case l.conns <- server:
			case err := <-errc:
				t.Fatalf("Serve returned after %s: %v", tt.name, err)
			case <-time.After(patience):
				t.Fatal("Serve never accepted again")
			}
			c := NewClient(client)
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), patience)
			defer cancel()
			var out echoResp
			if err := c.Call(ctx, "echo", echoReq{Text: "after " + tt.name}, &out); err != nil || out.Text != "after "+tt.name {
				t.Fatalf("call after the accept errors: %v %+v", err, out)
			}
			if got := srv.Stats().AcceptErrors; got != n {
				t.Errorf("AcceptErrors = %d, want %d", got, n)
			}
			if !strings.Contains(logs.String(), `"msg":"failed to accept a connection; retrying"`) {
				t.Errorf("no log line for the accept errors:\n%s", logs.String())
			}
			select {
			case err := <-errc:
				t.Fatalf("Serve returned: %v", err)
			default:
			}
			srv.Shutdown(context.Background())
			if err := <-errc; !errors.Is(err, ErrServerClosed) {
				t.Fatalf("Serve after Shutdown: %v", err)
			}
		})
	}

	t.Run("closed listener ends Serve", func(t *testing.T) {
		l := &fakeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
		srv := &Server{Handler: &testHandler{}}
		errc := make(chan error, 1)
		go func() { errc <- srv.Serve(l) }()
		l.Close()
		select {
		case err := <-errc:
			if !errors.Is(err, net.ErrClosed) {
				t.Fatalf("Serve on a closed listener: %v", err)
			}
		case <-time.After(patience):
			t.Fatal("Serve kept running on a closed listener")
		}
	})
}

// TestConnectionCapAndIdleReap dials 3000 connections: the first 64 are served,
// the rest closed at once; once idle, the 64 are reaped and a fresh client is
// served again.
func TestConnectionCapAndIdleReap(t *testing.T) {
	const maxConns, total = 64, 3000
	h := &testHandler{hold: make(chan struct{}), started: make(chan struct{}, maxConns)}
	srv := &Server{Handler: h, MaxConns: maxConns, IdleTimeout: 2 * time.Second}
	addr := serveUnix(t, srv)

	// The first 64 each have a request in flight: served, and not idle.
	held := make([]net.Conn, maxConns)
	for i := range held {
		held[i] = dialRaw(t, addr)
		defer held[i].Close()
		if _, err := held[i].Write(requestFrame(t, 1, "hold", "")); err != nil {
			t.Fatal(err)
		}
	}
	for i := range maxConns {
		select {
		case <-h.started:
		case <-time.After(patience):
			t.Fatalf("only %d of %d held requests reached the handler", i, maxConns)
		}
	}

	// The rest are closed at once, unanswered.
	extra := make([]net.Conn, total-maxConns)
	for i := range extra {
		extra[i] = dialRaw(t, addr)
		defer extra[i].Close()
	}
	for i, c := range extra {
		expectClosed(t, c, "connection over the limit #"+strconv.Itoa(i))
		c.Close()
	}
	if st := srv.Stats(); st.Active != maxConns || st.Rejected != total-maxConns {
		t.Fatalf("stats = %+v, want %d active, %d rejected", st, maxConns, total-maxConns)
	}
	// A client at the cap is refused too, as unavailable.
	c := dialClient(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if err := c.Call(ctx, "echo", echoReq{Text: "x"}, nil); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("call at the cap: %v, want unavailable", err)
	}

	// Released, the 64 are answered, then idle, then reaped.
	close(h.hold)
	for i, c := range held {
		frame, err := ReadFrame(c)
		if err != nil {
			t.Fatalf("held connection #%d: %v", i, err)
		}
		if resp, err := DecodeResponse(frame); err != nil || resp.Err != nil {
			t.Fatalf("held connection #%d: %v %+v", i, err, resp)
		}
	}
	for i, c := range held {
		expectClosed(t, c, "idle connection #"+strconv.Itoa(i))
	}
	waitUntil(t, "no active connections", func() bool { return srv.Stats().Active == 0 })
	expectEcho(t, addr, "after the reap")
}

// TestHalfSentFramesHoldLittleMemory holds 300 frames whose header says
// MaxFrameSize but whose payload stops after 10 bytes, measures the heap they
// hold, and checks a fresh client is still served.
func TestHalfSentFramesHoldLittleMemory(t *testing.T) {
	const conns, sent = 300, 10
	var arrived atomic.Int32
	all := make(chan struct{})
	srv := &Server{Handler: &testHandler{}, MaxConns: conns + 10, testingOnlyFrameProgress: func(buf []byte) {
		if len(buf) == sent && arrived.Add(1) == conns {
			close(all)
		}
	}}
	addr := serveUnix(t, srv)
	half := make([]byte, 4+sent)
	binary.BigEndian.PutUint32(half, MaxFrameSize)

	before := heapInuse()
	cs := make([]net.Conn, conns)
	for i := range cs {
		cs[i] = dialRaw(t, addr)
		defer cs[i].Close()
		if _, err := cs[i].Write(half); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-all:
	case <-time.After(patience):
		t.Fatalf("the server read the bytes of %d of %d frames", arrived.Load(), conns)
	}
	after := heapInuse()
	held := int64(after) - int64(before)
	eager := int64(conns) * MaxFrameSize
	t.Logf("%d half-sent %d KiB frames (%d bytes sent each): heap in use grew by %d KiB (%d bytes per connection, client and server sides); eager allocation would add %d KiB",
		conns, MaxFrameSize>>10, sent, held>>10, held/conns, eager>>10)
	if held > eager/4 {
		t.Errorf("heap grew by %d bytes for %d half-sent frames; the buffers are not growing with the bytes", held, conns)
	}
	expectEcho(t, addr, "still serving")
}

func heapInuse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// TestTimeouts: a frame that does not arrive whole within FrameTimeout, and a
// connection idle for IdleTimeout, are closed; other connections keep working.
func TestTimeouts(t *testing.T) {
	maxHeader := make([]byte, 4)
	binary.BigEndian.PutUint32(maxHeader, MaxFrameSize)
	short, long := 100*time.Millisecond, time.Hour
	tests := []struct {
		name     string
		srv      *Server
		answered bool // a request is answered first
		sends    []byte
	}{
		{"half-sent frame", &Server{FrameTimeout: short, IdleTimeout: long}, false, append(maxHeader, 1, 2, 3)},
		{"header only", &Server{FrameTimeout: short, IdleTimeout: long}, false, maxHeader},
		{"one header byte", &Server{FrameTimeout: short, IdleTimeout: long}, false, maxHeader[:1]},
		{"half-sent frame after an answer", &Server{FrameTimeout: short, IdleTimeout: long}, true, append(maxHeader, 1)},
		{"idle", &Server{FrameTimeout: long, IdleTimeout: short}, false, nil},
		{"idle after an answer", &Server{FrameTimeout: long, IdleTimeout: short}, true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.srv.Handler = &testHandler{}
			addr := serveUnix(t, tt.srv)
			conn := dialRaw(t, addr)
			defer conn.Close()
			if tt.answered {
				conn.Write(requestFrame(t, 1, "echo", "x"))
				if _, err := ReadFrame(conn); err != nil {
					t.Fatal(err)
				}
			}
			if len(tt.sends) > 0 {
				if _, err := conn.Write(tt.sends); err != nil {
					t.Fatal(err)
				}
			}
			expectClosed(t, conn, tt.name)
			waitUntil(t, "no active connections", func() bool { return tt.srv.Stats().Active == 0 })
			expectEcho(t, addr, "after "+tt.name)
		})
	}
}

func TestReadFrameGrowsItsBuffer(t *testing.T) {
	r, w := io.Pipe()
	defer r.Close()
	go func() {
		hdr := make([]byte, 4)
		binary.BigEndian.PutUint32(hdr, MaxFrameSize)
		w.Write(hdr)
		w.Write(make([]byte, 10))
		w.Close()
	}()
	var caps []int
	_, err := readFrame(r, nil, func(buf []byte) { caps = append(caps, cap(buf)) })
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated frame: %v", err)
	}
	if len(caps) != 1 || caps[0] != frameChunk {
		t.Fatalf("buffer capacities %v after 10 bytes, want [%d]", caps, frameChunk)
	}

	for _, n := range []int{1, frameChunk - 1, frameChunk, frameChunk + 1, 5000, MaxFrameSize - 1, MaxFrameSize} {
		payload := make([]byte, n)
		for i := range payload {
			payload[i] = byte(i)
		}
		var in bytes.Buffer
		WriteFrame(&in, payload)
		maxCap := 0
		got, err := readFrame(iotest.HalfReader(&in), nil, func(buf []byte) {
			if cap(buf) > 2*len(buf) && cap(buf) > frameChunk {
				t.Fatalf("n=%d: buffer of %d bytes for %d received", n, cap(buf), len(buf))
			}
			maxCap = max(maxCap, cap(buf))
		})
		if err != nil || !bytes.Equal(got, payload) {
			t.Fatalf("n=%d: %v, got %d bytes", n, err, len(got))
		}
		if cap(got) != n || maxCap != n {
			t.Errorf("n=%d: final capacity %d (largest %d), want %d", n, cap(got), maxCap, n)
		}
	}
}
