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
//
// Nothing a peer does stops Serve: a failed Accept is retried after a bounded
// backoff, connections beyond MaxConns are closed at once, a connection that is
// idle or sends a frame too slowly is closed, and a frame's buffer grows only as
// its bytes arrive (see [ReadFrame]). Only Shutdown, or closing the listener,
// ends Serve.
type Server struct {
	Handler Handler
	Logger  *slog.Logger
	// MaxInFlight bounds concurrent requests per connection (default 64); a
	// connection that sends more waits for a slot before its next frame is read.
	MaxInFlight int
	// MaxConns bounds the connections served at once (default 64). A connection
	// accepted beyond it is closed at once, unanswered, and counted in
	// Stats().Rejected.
	MaxConns int
	// FrameTimeout bounds how long a frame may take to arrive whole once its
	// first byte has arrived, and how long a response frame may take to write
	// (default 10s).
	FrameTimeout time.Duration
	// IdleTimeout closes a connection that has no request in flight and has not
	// started a frame for this long (default 5m).
	IdleTimeout time.Duration

	// testingOnlyFrameProgress, if set, runs with the frame's buffer after each
	// read of payload bytes, so a test knows the server holds what it sent.
	testingOnlyFrameProgress func(buf []byte)

	mu           sync.Mutex
	conns        map[net.Conn]*connState
	lns          map[net.Listener]struct{}
	closed       bool
	quit         chan struct{} // closed by Shutdown; ends an accept backoff
	rejected     uint64
	acceptErrors uint64
	rejectLog    rateLog
	acceptLog    rateLog
	wg           sync.WaitGroup
	ctx          context.Context
	cancel       context.CancelFunc
	once         sync.Once
}

// Defaults of the Server limits; agentkeys-enclave's flags default to them.
const (
	DefaultMaxConns     = 64
	DefaultFrameTimeout = 10 * time.Second
	DefaultIdleTimeout  = 5 * time.Minute
)

// The backoff after a failed Accept doubles from minAcceptBackoff up to
// maxAcceptBackoff and resets on the next success.
const (
	minAcceptBackoff = 5 * time.Millisecond
	maxAcceptBackoff = time.Second
)

// logInterval spaces the log lines of events a peer can repeat at will (a
// connection over the limit, a failing Accept): one line per interval, with the
// running count.
const logInterval = 10 * time.Second

type rateLog struct{ next time.Time }

func (r *rateLog) allow(now time.Time) bool {
	if now.Before(r.next) {
		return false
	}
	r.next = now.Add(logInterval)
	return true
}

// ServerStats are a server's counters.
type ServerStats struct {
	Active       int    // connections being served
	Rejected     uint64 // connections closed at once because MaxConns were being served
	AcceptErrors uint64 // failed Accepts, each retried after a backoff
}

// Stats returns the server's counters.
func (s *Server) Stats() ServerStats {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	return ServerStats{Active: len(s.conns), Rejected: s.rejected, AcceptErrors: s.acceptErrors}
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("protocol: server closed")

func (s *Server) init() {
	s.once.Do(func() {
		s.conns = map[net.Conn]*connState{}
		s.lns = map[net.Listener]struct{}{}
		s.quit = make(chan struct{})
		s.ctx, s.cancel = context.WithCancel(context.Background())
		if s.Logger == nil {
			s.Logger = slog.New(slog.DiscardHandler)
		}
		if s.MaxInFlight <= 0 {
			s.MaxInFlight = 64
		}
		if s.MaxConns <= 0 {
			s.MaxConns = DefaultMaxConns
		}
		if s.FrameTimeout <= 0 {
			s.FrameTimeout = DefaultFrameTimeout
		}
		if s.IdleTimeout <= 0 {
			s.IdleTimeout = DefaultIdleTimeout
		}
	})
}

// Serve accepts connections on l until Shutdown, or until l is closed. Each
// connection is served on its own goroutine; a protocol violation closes that
// connection only. Any other Accept error (out of file descriptors, an aborted
// connection, ...) is logged and retried after a backoff of 5ms doubling up to
// 1s: Serve never returns because of a peer.
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
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			delay = min(max(2*delay, minAcceptBackoff), maxAcceptBackoff)
			s.mu.Lock()
			s.acceptErrors++
			n, log := s.acceptErrors, s.acceptLog.allow(time.Now())
			s.mu.Unlock()
			if log {
				s.Logger.Warn("failed to accept a connection; retrying", "err", err,
					"retry_in", delay.String(), "accept_errors", n)
			}
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-s.quit:
				t.Stop()
				return ErrServerClosed
			}
			continue
		}
		delay = 0
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			conn.Close()
			return ErrServerClosed
		}
		if len(s.conns) >= s.MaxConns {
			s.rejected++
			n, log := s.rejected, s.rejectLog.allow(time.Now())
			s.mu.Unlock()
			conn.Close()
			if log {
				s.Logger.Warn("connection limit reached; closing new connections at once",
					"max_conns", s.MaxConns, "rejected", n)
			}
			continue
		}
		st := &connState{conn: conn}
		s.conns[conn] = st
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(st)
	}
}

// ServeConn serves a single connection until it fails (used by tests and
// fuzzing). It does not count against MaxConns.
func (s *Server) ServeConn(conn net.Conn) {
	s.init()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		conn.Close()
		return
	}
	st := &connState{conn: conn}
	s.conns[conn] = st
	s.wg.Add(1)
	s.mu.Unlock()
	s.serveConn(st)
}

// Shutdown stops accepting, lets in-flight requests finish until ctx is done,
// then closes every connection.
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.quit)
	}
	for l := range s.lns {
		l.Close()
	}
	// Stop reading new requests.
	for _, st := range s.conns {
		st.drain()
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

// connState sets a connection's read deadline from what it is doing: waiting
// for a frame with nothing in flight (IdleTimeout), waiting with requests in
// flight (no deadline: the answers are coming), inside a frame (FrameTimeout),
// or draining for Shutdown (a deadline in the past, which nothing moves again).
type connState struct {
	conn     net.Conn
	mu       sync.Mutex
	inflight int
	inFrame  bool
	draining bool
}

// awaitFrame runs before the reader waits for a frame's first byte.
func (c *connState) awaitFrame(idle time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inFrame = false
	if c.draining {
		return
	}
	if c.inflight == 0 {
		c.conn.SetReadDeadline(time.Now().Add(idle))
	} else {
		c.conn.SetReadDeadline(noDeadline)
	}
}

// frameStarted runs when a frame's first byte has arrived.
func (c *connState) frameStarted(frameTimeout time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inFrame = true
	if !c.draining {
		c.conn.SetReadDeadline(time.Now().Add(frameTimeout))
	}
}

func (c *connState) requestStarted() {
	c.mu.Lock()
	c.inflight++
	c.mu.Unlock()
}

// requestDone starts the idle clock when the last request in flight finishes
// while the reader waits for a frame.
func (c *connState) requestDone(idle time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inflight--
	if c.inflight == 0 && !c.inFrame && !c.draining {
		c.conn.SetReadDeadline(time.Now().Add(idle))
	}
}

func (c *connState) drain() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.draining = true
	c.conn.SetReadDeadline(time.Unix(1, 0)) // in the past: unblocks the reader
}

func (c *connState) isDraining() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.draining
}

func (s *Server) serveConn(st *connState) {
	defer s.wg.Done()
	conn := st.conn
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
		conn.SetWriteDeadline(time.Now().Add(s.FrameTimeout))
		if err := WriteFrame(conn, frame); err != nil {
			conn.Close() // a partial write leaves the stream unusable
		}
	}
	for {
		st.awaitFrame(s.IdleTimeout)
		started := false
		frame, err := readFrame(conn, func() {
			started = true
			st.frameStarted(s.FrameTimeout)
		}, s.testingOnlyFrameProgress)
		if err != nil {
			remote := conn.RemoteAddr().String()
			switch {
			case st.isDraining(), errors.Is(err, net.ErrClosed), errors.Is(err, io.EOF):
				// Shutdown, or the peer hung up between frames.
			case isTimeout(err) && !started:
				s.Logger.Debug("closing idle connection", "remote", remote, "idle_timeout", s.IdleTimeout.String())
			case isTimeout(err):
				s.Logger.Warn("closing connection: a frame did not arrive whole in time", "remote", remote,
					"frame_timeout", s.FrameTimeout.String())
			default:
				s.Logger.Warn("closing connection", "remote", remote, "err", err)
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
		st.requestStarted()
		go func() {
			defer func() { st.requestDone(s.IdleTimeout); <-sem; inflight.Done() }()
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

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
