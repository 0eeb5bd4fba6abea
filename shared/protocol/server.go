package protocol

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

var noDeadline time.Time

// Handler serves one decoded request. body is the raw CBOR of the request body
// (decode it with [Unmarshal]); the returned value is encoded as the response
// body. A returned *Error travels as is; any other error becomes an internal
// error whose details stay in the server's log.
type Handler interface {
	Handle(ctx context.Context, op Op, body []byte) (any, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, op Op, body []byte) (any, error)

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, op Op, body []byte) (any, error) {
	return f(ctx, op, body)
}

// Server serves the protocol on a listener.
type Server struct {
	Handler Handler
	Logger  *slog.Logger
	// MaxInFlight bounds concurrent requests per connection (default 64); a
	// connection that sends more waits for a slot before its next frame is read.
	MaxInFlight int

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	lns    map[net.Listener]struct{}
	closed bool
	wg     sync.WaitGroup
	ctx    context.Context
	cancel context.CancelFunc
	once   sync.Once
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("protocol: server closed")

func (s *Server) init() {
	s.once.Do(func() {
		s.conns = map[net.Conn]struct{}{}
		s.lns = map[net.Listener]struct{}{}
		s.ctx, s.cancel = context.WithCancel(context.Background())
		if s.Logger == nil {
			s.Logger = slog.New(slog.DiscardHandler)
		}
		if s.MaxInFlight <= 0 {
			s.MaxInFlight = 64
		}
	})
}

// Serve accepts connections on l until Shutdown. Each connection is served on
// its own goroutine; a protocol violation closes that connection only.
func (s *Server) Serve(l net.Listener) error {
	s.init()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.lns[l] = struct{}{}
	s.mu.Unlock()
	var delay time.Duration
	for {
		conn, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			conn.Close()
			return ErrServerClosed
		}
		s.conns[conn] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(conn)
	}
}

// ServeConn serves a single connection until it fails (used by tests and fuzzing).
func (s *Server) ServeConn(conn net.Conn) {
	s.init()
	s.mu.Lock()
	s.conns[conn] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	s.serveConn(conn)
}

// Shutdown stops accepting, lets in-flight requests finish until ctx is done,
// then closes every connection.
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	s.mu.Lock()
	s.closed = true
	for l := range s.lns {
		l.Close()
	}
	// Stop reading new requests: a read deadline in the past unblocks readers.
	for c := range s.conns {
		c.SetReadDeadline(time.Unix(1, 0))
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	s.cancel()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	return err
}

func (s *Server) serveConn(conn net.Conn) {
	defer s.wg.Done()
	var (
		wmu      sync.Mutex
		inflight sync.WaitGroup
		sem      = make(chan struct{}, s.MaxInFlight)
	)
	defer func() {
		inflight.Wait()
		conn.Close()
		s.mu.Lock()
		delete(s.conns, conn)
		s.mu.Unlock()
	}()
	write := func(resp *Response) {
		frame, err := Marshal(resp)
		if err == nil && len(frame) > MaxFrameSize {
			err = errors.New("response larger than the frame limit")
		}
		if err != nil {
			s.Logger.Error("failed to encode response", "id", resp.ID, "err", err)
			frame, _ = Marshal(&Response{ID: resp.ID, Err: &Error{Code: CodeInternal, Message: "failed to encode the response"}})
		}
		wmu.Lock()
		defer wmu.Unlock()
		conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if err := WriteFrame(conn, frame); err != nil {
			conn.Close() // a partial write leaves the stream unusable
		}
	}
	for {
		frame, err := ReadFrame(conn)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) && !isEOF(err) {
				s.Logger.Warn("closing connection", "remote", conn.RemoteAddr().String(), "err", err)
			}
			return
		}
		req, err := DecodeRequest(frame)
		if err != nil {
			s.Logger.Warn("closing connection after a malformed frame", "err", err)
			return
		}
		if req.Version != Version {
			write(&Response{ID: req.ID, Err: Errorf(CodeUnsupportedVersion, "this enclave speaks protocol version %d, not %d", Version, req.Version)})
			continue
		}
		sem <- struct{}{}
		inflight.Add(1)
		go func() {
			defer func() { <-sem; inflight.Done() }()
			write(s.dispatch(req))
		}()
	}
}

func (s *Server) dispatch(req *Request) (resp *Response) {
	resp = &Response{ID: req.ID}
	defer func() {
		if r := recover(); r != nil {
			s.Logger.Error("handler panicked", "op", string(req.Op), "panic", r)
			resp = &Response{ID: req.ID, Err: &Error{Code: CodeInternal, Message: "internal error"}}
		}
	}()
	body := []byte(req.Body)
	if len(body) == 0 {
		body = []byte{0xa0} // an absent body decodes as an empty map
	}
	out, err := s.Handler.Handle(s.ctx, req.Op, body)
	if err != nil {
		var perr *Error
		if errors.As(err, &perr) {
			resp.Err = perr
		} else {
			s.Logger.Error("operation failed", "op", string(req.Op), "err", err)
			resp.Err = &Error{Code: CodeInternal, Message: "internal error"}
		}
		return resp
	}
	b, err := Marshal(out)
	if err != nil {
		s.Logger.Error("failed to encode result", "op", string(req.Op), "err", err)
		resp.Err = &Error{Code: CodeInternal, Message: "internal error"}
		return resp
	}
	resp.Body = b
	return resp
}

func isEOF(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.As(err, &ne) && ne.Timeout()
}
