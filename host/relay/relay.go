package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/agentkeys/broker/host/metrics"
)

// Defaults of the relay's limits; agentkeys-host's flags default to them.
const (
	DefaultMaxConns     = 256
	DefaultHelloTimeout = 10 * time.Second
	DefaultIdleTimeout  = 2 * time.Minute
	dialTimeout         = 10 * time.Second
)

// Routes, as the metrics label them.
const (
	RouteIssuer = "issuer" // relayed to the enclave
	RouteAPI    = "api"    // handed to the host's own TLS server
)

// Config configures a Relay.
type Config struct {
	// IssuerHost is the issuer's host name (no port): a connection whose
	// ClientHello names it (SNI) is relayed to the enclave; any other goes
	// to API. Ignored with AllToEnclave.
	IssuerHost string
	// AllToEnclave relays every connection to the enclave without looking at
	// it (the issuer origin on a port of its own).
	AllToEnclave bool
	// DialEnclave connects to the enclave's origin listener. Required.
	DialEnclave func(ctx context.Context) (net.Conn, error)
	// MaxConns bounds the connections held at once, both routes together;
	// more are closed at once (default DefaultMaxConns).
	MaxConns int
	// HelloTimeout bounds the wait for a whole ClientHello (default
	// DefaultHelloTimeout).
	HelloTimeout time.Duration
	// IdleTimeout closes a relayed connection when no byte has moved either
	// way for this long (default DefaultIdleTimeout).
	IdleTimeout time.Duration
	Metrics     *metrics.Metrics // optional
	Logger      *slog.Logger
}

// Relay accepts TCP connections and relays those for the issuer origin to the
// enclave unopened. It is safe for concurrent use.
type Relay struct {
	cfg  Config
	log  *slog.Logger
	sem  chan struct{}
	api  *pipeListener
	done chan struct{}
	once sync.Once
	wg   sync.WaitGroup

	mu    sync.Mutex
	ls    []net.Listener
	conns map[net.Conn]struct{}
}

// New checks the configuration and returns a Relay.
func New(cfg Config) (*Relay, error) {
	if cfg.DialEnclave == nil {
		return nil, errors.New("relay: DialEnclave is required")
	}
	cfg.IssuerHost = strings.ToLower(strings.TrimSuffix(cfg.IssuerHost, "."))
	if !cfg.AllToEnclave && cfg.IssuerHost == "" {
		return nil, errors.New("relay: the issuer's host name is required to route by SNI")
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.HelloTimeout <= 0 {
		cfg.HelloTimeout = DefaultHelloTimeout
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	r := &Relay{cfg: cfg, log: cfg.Logger, sem: make(chan struct{}, cfg.MaxConns), done: make(chan struct{}),
		conns: map[net.Conn]struct{}{}}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	r.api = &pipeListener{ch: make(chan net.Conn), done: r.done, closed: make(chan struct{})}
	return r, nil
}

// API is the listener on which the connections not for the issuer arrive,
// their ClientHello replayed: the host's own TLS server (certmagic) serves it.
func (r *Relay) API() net.Listener { return r.api }

// Serve accepts connections on l until Close, and returns nil then.
func (r *Relay) Serve(l net.Listener) error {
	r.mu.Lock()
	select {
	case <-r.done:
		r.mu.Unlock()
		l.Close()
		return nil
	default:
	}
	r.ls = append(r.ls, l)
	r.mu.Unlock()
	r.api.setAddr(l.Addr())
	var delay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			select {
			case <-r.done:
				return nil
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscallEMFILE) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				r.log.Warn("relay: accept failed; retrying", "err", err.Error(), "delay", delay.String())
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("relay: %w", err)
		}
		delay = 0
		select {
		case r.sem <- struct{}{}:
		default:
			r.count(r.routeOf(), "rejected")
			r.log.Warn("relay: connection refused: at the connection limit", "max_conns", r.cfg.MaxConns, "remote", c.RemoteAddr().String())
			c.Close()
			continue
		}
		r.wg.Add(1)
		go r.handle(c)
	}
}

func (r *Relay) routeOf() string {
	if r.cfg.AllToEnclave {
		return RouteIssuer
	}
	return "unknown"
}

func (r *Relay) count(route, outcome string) {
	if r.cfg.Metrics != nil {
		r.cfg.Metrics.RelayConnections.WithLabelValues(route, outcome).Inc()
	}
}

func (r *Relay) active(route string, d float64) {
	if r.cfg.Metrics != nil {
		r.cfg.Metrics.RelayActive.WithLabelValues(route).Add(d)
	}
}

func (r *Relay) track(c net.Conn, add bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if add {
		select {
		case <-r.done:
			return false
		default:
		}
		r.conns[c] = struct{}{}
	} else {
		delete(r.conns, c)
	}
	return true
}

// handle routes one connection. The semaphore slot is released when the
// connection is closed (for an API connection, by the API server).
func (r *Relay) handle(c net.Conn) {
	defer r.wg.Done()
	release := sync.OnceFunc(func() { <-r.sem })
	if !r.track(c, true) {
		c.Close()
		release()
		return
	}
	untrack := func() { r.track(c, false) }

	if r.cfg.AllToEnclave {
		r.toEnclave(c, nil)
		untrack()
		release()
		return
	}
	c.SetReadDeadline(time.Now().Add(r.cfg.HelloTimeout))
	raw, sni, err := readHello(io.LimitReader(c, MaxHello))
	if err != nil {
		outcome := "bad_hello"
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			outcome = "hello_timeout"
		}
		r.count("unknown", outcome)
		r.log.Debug("relay: connection closed before routing", "outcome", outcome, "err", err.Error(), "remote", c.RemoteAddr().String())
		c.Close()
		untrack()
		release()
		return
	}
	c.SetReadDeadline(time.Time{})
	if sni == r.cfg.IssuerHost {
		r.toEnclave(c, raw)
		untrack()
		release()
		return
	}
	// The API's TLS server now owns the connection; it releases the slot
	// when it closes it.
	pc := &prefixConn{Conn: c, r: io.MultiReader(bytes.NewReader(raw), c), onClose: func() {
		untrack()
		r.active(RouteAPI, -1)
		release()
	}}
	r.active(RouteAPI, 1)
	select {
	case r.api.ch <- pc:
		r.count(RouteAPI, "relayed")
	case <-r.done:
		pc.Close()
	case <-r.api.closed:
		pc.Close()
	case <-time.After(r.cfg.HelloTimeout):
		r.count(RouteAPI, "rejected")
		r.log.Warn("relay: the API server did not accept a connection in time")
		pc.Close()
	}
}

// toEnclave relays c to the enclave's origin listener, replaying hello first,
// until either side closes or the connection idles out.
func (r *Relay) toEnclave(c net.Conn, hello []byte) {
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	e, err := r.cfg.DialEnclave(ctx)
	cancel()
	if err != nil {
		r.count(RouteIssuer, "dial_failed")
		r.log.Warn("relay: failed to reach the enclave's issuer origin", "err", err.Error())
		return
	}
	defer e.Close()
	if !r.track(e, true) {
		return
	}
	defer r.track(e, false)
	r.count(RouteIssuer, "relayed")
	r.active(RouteIssuer, 1)
	defer r.active(RouteIssuer, -1)
	if len(hello) > 0 {
		e.SetWriteDeadline(time.Now().Add(r.cfg.IdleTimeout))
		if _, err := e.Write(hello); err != nil {
			return
		}
	}
	errc := make(chan error, 2)
	go func() { errc <- r.pipe(e, c) }()
	go func() { errc <- r.pipe(c, e) }()
	<-errc
	// One side is done: close both, which ends the other copy.
	c.Close()
	e.Close()
	<-errc
}

// pipe copies src to dst, each read bounded by the idle timeout.
func (r *Relay) pipe(dst, src net.Conn) error {
	buf := make([]byte, 32<<10)
	for {
		src.SetReadDeadline(time.Now().Add(r.cfg.IdleTimeout))
		n, err := src.Read(buf)
		if n > 0 {
			dst.SetWriteDeadline(time.Now().Add(r.cfg.IdleTimeout))
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err != nil {
			if hc, ok := dst.(interface{ CloseWrite() error }); ok && errors.Is(err, io.EOF) {
				hc.CloseWrite()
			}
			return err
		}
	}
}

// Close stops accepting, closes every connection it holds and waits for its
// goroutines. API connections already handed over are the API server's.
func (r *Relay) Close() error {
	r.once.Do(func() {
		r.mu.Lock()
		close(r.done)
		for _, l := range r.ls {
			l.Close()
		}
		for c := range r.conns {
			c.Close()
		}
		r.mu.Unlock()
	})
	r.wg.Wait()
	return nil
}

// prefixConn replays the bytes read to route a connection, then reads on.
type prefixConn struct {
	net.Conn
	r       io.Reader
	once    sync.Once
	onClose func()
}

func (c *prefixConn) Read(b []byte) (int, error) { return c.r.Read(b) }

func (c *prefixConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.onClose)
	return err
}

// pipeListener hands connections from the relay to the API server.
type pipeListener struct {
	ch     chan net.Conn
	done   chan struct{} // the relay's
	closed chan struct{}
	once   sync.Once
	mu     sync.Mutex
	addr   net.Addr
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// Close ends Accept; the relay then closes API connections it routes.
func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *pipeListener) setAddr(a net.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.addr = a
}

func (l *pipeListener) Addr() net.Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.addr == nil {
		return &net.TCPAddr{}
	}
	return l.addr
}
