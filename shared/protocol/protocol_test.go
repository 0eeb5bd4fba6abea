package protocol

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"testing/iotest"
	"time"
)

type echoReq struct {
	Text string `cbor:"text"`
}

type echoResp struct {
	Text string `cbor:"text"`
	Op   string `cbor:"op"`
}

// testHandler echoes, fails on demand, and can hold requests until released so a
// test can prove many requests are in flight on one connection at once.
type testHandler struct {
	hold    chan struct{}
	started chan struct{}
}

func (h *testHandler) Handle(ctx context.Context, op Op, body []byte) (any, error) {
	switch op {
	case "echo":
		var r echoReq
		if err := Unmarshal(body, &r); err != nil {
			return nil, Errorf(CodeBadRequest, "%v", err)
		}
		return echoResp{Text: r.Text, Op: string(op)}, nil
	case "hold":
		h.started <- struct{}{}
		<-h.hold
		return echoResp{Text: "released"}, nil
	case "unauth":
		return nil, Errorf(CodeUnauthorized, "session expired")
	case "plain-error":
		return nil, errors.New("disk on fire: secret detail")
	case "panic":
		panic("boom")
	}
	return nil, Errorf(CodeUnknownOp, "unknown op %q", op)
}

func startServer(t *testing.T, h Handler) (addr string, srv *Server) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "e.sock")
	addr = "unix:" + path
	l, err := Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v", fi.Mode(), err)
	}
	srv = &Server{Handler: h}
	go srv.Serve(l)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return addr, srv
}

func dialClient(t *testing.T, addr string) *Client {
	t.Helper()
	conn, err := Dial(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	c := NewClient(conn)
	t.Cleanup(func() { c.Close() })
	return c
}

func TestCallOverUnixSocket(t *testing.T) {
	addr, _ := startServer(t, &testHandler{})
	c := dialClient(t, addr)
	ctx := context.Background()

	var out echoResp
	if err := c.Call(ctx, "echo", echoReq{Text: "hello"}, &out); err != nil {
		t.Fatal(err)
	}
	if out.Text != "hello" || out.Op != "echo" {
		t.Fatalf("got %+v", out)
	}

	tests := []struct {
		op   Op
		want error
		msg  string
	}{
		{"unauth", ErrUnauthorized, "session expired"},
		{"nope", ErrUnknownOp, `unknown op "nope"`},
		{"plain-error", ErrInternal, "internal error"},
		{"panic", ErrInternal, "internal error"},
	}
	for _, tt := range tests {
		err := c.Call(ctx, tt.op, echoReq{}, &out)
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.op, err, tt.want)
		}
		var perr *Error
		if errors.As(err, &perr) && perr.Message != tt.msg {
			t.Errorf("%s: message = %q, want %q", tt.op, perr.Message, tt.msg)
		}
	}
	// The connection survives handler errors and panics.
	if err := c.Call(ctx, "echo", echoReq{Text: "still here"}, &out); err != nil || out.Text != "still here" {
		t.Fatalf("after errors: %v %+v", err, out)
	}
}

func TestConcurrentRequestsShareOneConnection(t *testing.T) {
	h := &testHandler{hold: make(chan struct{}), started: make(chan struct{}, 16)}
	addr, _ := startServer(t, h)
	c := dialClient(t, addr)
	const n = 10
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out echoResp
			errs <- c.Call(context.Background(), "hold", echoReq{}, &out)
		}()
	}
	// All n requests are inside the handler at the same time on one connection.
	for range n {
		<-h.started
	}
	// Meanwhile another request on the same connection is answered.
	var out echoResp
	if err := c.Call(context.Background(), "echo", echoReq{Text: "x"}, &out); err != nil || out.Text != "x" {
		t.Fatalf("echo while others are held: %v", err)
	}
	close(h.hold)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// rawConn dials the server and speaks frames by hand.
func rawConn(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := Dial(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	return conn
}

func TestMalformedFrameClosesOnlyThatConnection(t *testing.T) {
	addr, _ := startServer(t, &testHandler{})
	good := dialClient(t, addr)

	oversize := make([]byte, 4)
	binary.BigEndian.PutUint32(oversize, MaxFrameSize+1)
	notCBOR := []byte{0, 0, 0, 3, 0xff, 0xff, 0xff}
	dupKeys := frameOf(t, []byte("\xa3\x61v\x01\x62op\x64echo\x61v\x01"))
	tagged := frameOf(t, []byte("\xc1\xa2\x61v\x01\x62op\x64echo"))
	unknownField := frameOf(t, []byte("\xa3\x61v\x01\x62op\x64echo\x61x\x01"))
	noOp := frameOf(t, []byte("\xa2\x61v\x01\x62id\x01"))
	upperCase := frameOf(t, []byte("\xa2\x61V\x01\x62op\x64echo"))
	cases := map[string][]byte{
		"oversize length":  oversize,
		"zero length":      {0, 0, 0, 0},
		"not cbor":         notCBOR,
		"duplicate keys":   dupKeys,
		"cbor tag":         tagged,
		"unknown envelope": unknownField,
		"missing op":       noOp,
		"field name case":  upperCase,
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			conn := rawConn(t, addr)
			if _, err := conn.Write(b); err != nil {
				t.Fatal(err)
			}
			// The server closes the connection without answering.
			if _, err := ReadFrame(conn); !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("read after bad frame: %v, want EOF", err)
			}
			// Other connections are untouched.
			var out echoResp
			if err := good.Call(context.Background(), "echo", echoReq{Text: "ok"}, &out); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func frameOf(t *testing.T, payload []byte) []byte {
	var buf bytes.Buffer
	if err := WriteFrame(&buf, payload); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestUnsupportedVersion(t *testing.T) {
	addr, _ := startServer(t, &testHandler{})
	conn := rawConn(t, addr)
	body, _ := Marshal(echoReq{Text: "x"})
	req, _ := Marshal(&Request{Version: Version + 1, ID: 7, Op: "echo", Body: body})
	if err := WriteFrame(conn, req); err != nil {
		t.Fatal(err)
	}
	frame, err := ReadFrame(conn)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := DecodeResponse(frame)
	if err != nil {
		t.Fatal(err)
	}
	if resp.ID != 7 || !errors.Is(resp.Err, ErrUnsupportedVersion) {
		t.Fatalf("got %+v", resp)
	}
}

func TestBadBodyIsBadRequest(t *testing.T) {
	addr, _ := startServer(t, &testHandler{})
	c := dialClient(t, addr)
	// A body with a field the handler does not know is refused, the connection kept.
	err := c.Call(context.Background(), "echo", map[string]any{"text": "x", "extra": 1}, nil)
	if !errors.Is(err, ErrBadRequest) {
		t.Fatalf("err = %v, want bad_request", err)
	}
	var out echoResp
	if err := c.Call(context.Background(), "echo", echoReq{Text: "y"}, &out); err != nil {
		t.Fatal(err)
	}
}

func TestClientFailsPendingCallsWhenServerGoes(t *testing.T) {
	h := &testHandler{hold: make(chan struct{}), started: make(chan struct{}, 1)}
	addr, srv := startServer(t, h)
	c := dialClient(t, addr)
	errc := make(chan error, 1)
	go func() { errc <- c.Call(context.Background(), "hold", echoReq{}, nil) }()
	<-h.started
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // do not wait for the held request
	srv.Shutdown(ctx)
	if err := <-errc; !errors.Is(err, ErrUnavailable) {
		t.Fatalf("pending call: %v, want unavailable", err)
	}
	<-c.Done()
	if err := c.Call(context.Background(), "echo", echoReq{}, nil); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("call after failure: %v, want unavailable", err)
	}
	close(h.hold)
}

func TestCallContextCancel(t *testing.T) {
	h := &testHandler{hold: make(chan struct{}), started: make(chan struct{}, 1)}
	addr, _ := startServer(t, h)
	c := dialClient(t, addr)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- c.Call(ctx, "hold", echoReq{}, nil) }()
	<-h.started
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	close(h.hold)
	// The late answer to the forgotten id must not break the connection.
	var out echoResp
	if err := c.Call(context.Background(), "echo", echoReq{Text: "z"}, &out); err != nil {
		t.Fatal(err)
	}
}

func TestAddresses(t *testing.T) {
	for _, addr := range []string{"", "unix", "unix:", "tcp:10.0.0.1:80", "tcp:0.0.0.0:7000", "tcp:nope", "vsock:x", "vsock:0", "carrier:pigeon"} {
		if l, err := Listen(addr); err == nil {
			l.Close()
			t.Errorf("Listen(%q) succeeded", addr)
		}
	}
	for _, addr := range []string{"", "tcp:nope", "vsock:5", "vsock:x:5", "vsock:3:0", "smoke:signal"} {
		if _, err := Dialer(addr); err == nil {
			t.Errorf("Dialer(%q) succeeded", addr)
		}
	}
	l, err := Listen("tcp:127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	srv := &Server{Handler: &testHandler{}}
	go srv.Serve(l)
	defer srv.Shutdown(context.Background())
	c := dialClient(t, "tcp:"+l.Addr().String())
	var out echoResp
	if err := c.Call(context.Background(), "echo", echoReq{Text: "tcp"}, &out); err != nil || out.Text != "tcp" {
		t.Fatalf("over tcp: %v %+v", err, out)
	}
}

func TestWriteFrameLimits(t *testing.T) {
	if err := WriteFrame(io.Discard, nil); !errors.Is(err, ErrEmptyFrame) {
		t.Errorf("empty: %v", err)
	}
	if err := WriteFrame(io.Discard, make([]byte, MaxFrameSize+1)); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("oversize: %v", err)
	}
	var buf bytes.Buffer
	if err := WriteFrame(&buf, make([]byte, MaxFrameSize)); err != nil {
		t.Fatal(err)
	}
	if b, err := ReadFrame(&buf); err != nil || len(b) != MaxFrameSize {
		t.Fatalf("max frame: %v", err)
	}
	if _, err := ReadFrame(bytes.NewReader([]byte{0, 0, 0, 9, 1, 2})); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated: %v", err)
	}
}

// FuzzReadFrame checks the growing-buffer reader against the definition (a
// 4-byte length, then exactly that many bytes), whatever the reads' sizes.
func FuzzReadFrame(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 0xa0}, uint8(0))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff}, uint8(1))
	f.Add([]byte{0, 0, 0, 0}, uint8(2))
	f.Add(append([]byte{0, 0, 0x04, 0x01}, make([]byte, 1025)...), uint8(1))
	f.Add(append([]byte{0, 0, 0x08, 0x00}, make([]byte, 100)...), uint8(2))
	f.Fuzz(func(t *testing.T, data []byte, how uint8) {
		var r io.Reader = bytes.NewReader(data)
		switch how % 3 {
		case 1:
			r = iotest.OneByteReader(r)
		case 2:
			r = iotest.DataErrReader(iotest.HalfReader(r))
		}
		b, err := readFrame(r, nil, func(buf []byte) {
			if cap(buf) > frameChunk && cap(buf) > 2*len(buf) {
				t.Fatalf("holding %d bytes for %d received", cap(buf), len(buf))
			}
		})
		var want []byte
		var n int
		if len(data) >= 4 {
			n = int(binary.BigEndian.Uint32(data))
			if n > 0 && n <= MaxFrameSize && len(data)-4 >= n {
				want = data[4 : 4+n]
			}
		}
		if want == nil {
			if err == nil {
				t.Fatalf("accepted a frame of %d bytes from %d", len(b), len(data))
			}
			if len(data) > 0 && len(data) < 4 && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("truncated header: %v", err)
			}
			return
		}
		if err != nil || !bytes.Equal(b, want) {
			t.Fatalf("frame of %d bytes: got %d bytes, %v", n, len(b), err)
		}
	})
}

func FuzzDecodeEnvelope(f *testing.F) {
	body, _ := Marshal(echoReq{Text: "x"})
	req, _ := Marshal(&Request{Version: 1, ID: 1, Op: "echo", Body: body})
	resp, _ := Marshal(&Response{ID: 1, Body: body})
	eresp, _ := Marshal(&Response{ID: 1, Err: &Error{Code: CodeUnauthorized, Message: "m"}})
	for _, s := range [][]byte{req, resp, eresp, {0xa0}, {0xbf, 0xff}} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if r, err := DecodeRequest(data); err == nil {
			if r.Op == "" {
				t.Fatal("accepted a request without op")
			}
			// Whatever decodes re-encodes.
			if _, err := Marshal(r); err != nil {
				t.Fatal(err)
			}
		}
		if r, err := DecodeResponse(data); err == nil && r.Err != nil && len(r.Body) > 0 {
			t.Fatal("accepted a response with both err and body")
		}
	})
}

// FuzzServerConn feeds arbitrary bytes to a server connection: it must answer or
// close, never panic or hang.
func FuzzServerConn(f *testing.F) {
	body, _ := Marshal(echoReq{Text: "x"})
	req, _ := Marshal(&Request{Version: 1, ID: 1, Op: "echo", Body: body})
	var buf bytes.Buffer
	WriteFrame(&buf, req)
	f.Add(buf.Bytes())
	f.Add(append(buf.Bytes(), buf.Bytes()...))
	f.Add([]byte{0, 0, 0, 2, 0xa1, 0x61})
	f.Fuzz(func(t *testing.T, data []byte) {
		client, server := net.Pipe()
		srv := &Server{Handler: &testHandler{}}
		done := make(chan struct{})
		go func() { srv.ServeConn(server); close(done) }()
		go io.Copy(io.Discard, client)
		client.SetWriteDeadline(time.Now().Add(2 * time.Second))
		client.Write(data)
		client.Close()
		<-done
	})
}

func BenchmarkCall(b *testing.B) {
	dir := b.TempDir()
	addr := "unix:" + filepath.Join(dir, "b.sock")
	l, err := Listen(addr)
	if err != nil {
		b.Fatal(err)
	}
	srv := &Server{Handler: &testHandler{}}
	go srv.Serve(l)
	defer srv.Shutdown(context.Background())
	conn, err := Dial(context.Background(), addr)
	if err != nil {
		b.Fatal(err)
	}
	c := NewClient(conn)
	defer c.Close()
	b.RunParallel(func(pb *testing.PB) {
		var out echoResp
		for i := 0; pb.Next(); i++ {
			if err := c.Call(context.Background(), "echo", echoReq{Text: fmt.Sprint(i)}, &out); err != nil {
				b.Fatal(err)
			}
		}
	})
}
