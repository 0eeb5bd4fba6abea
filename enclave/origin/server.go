package origin

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of the Server's limits; agentkeys-enclave's flags default to them.
const (
	DefaultMaxConns    = 256
	DefaultReadTimeout = 10 * time.Second // TLS handshake and request, from accept
	DefaultIdleTimeout = 60 * time.Second
	maxHeaderBytes     = 8 << 10
	writeTimeout       = 20 * time.Second
)

// Server serves the issuer origin on relayed connections. Its zero value uses
// the defaults; set the fields before Serve.
type Server struct {
	MaxConns    int           // connections served at once; more are closed at once
	ReadTimeout time.Duration // bound on the TLS handshake plus one request
	IdleTimeout time.Duration // keep-alive between requests
	Logger      *slog.Logger

	origin atomic.Pointer[Origin]
	mu     sync.Mutex
	srv    *http.Server
}

// Set gives the server the origin it serves. Until then every handshake fails
// (nitro mode: the seed is not open yet).
func (s *Server) Set(o *Origin) { s.origin.Store(o) }

// Serve accepts connections on l until Shutdown.
func (s *Server) Serve(l net.Listener) error {
	maxConns := s.MaxConns
	if maxConns <= 0 {
		maxConns = DefaultMaxConns
	}
	rt, it := s.ReadTimeout, s.IdleTimeout
	if rt <= 0 {
		rt = DefaultReadTimeout
	}
	if it <= 0 {
		it = DefaultIdleTimeout
	}
	log := s.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tlsCfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			o := s.origin.Load()
			if o == nil {
				return nil, errors.New("the issuer origin is not ready (the enclave's seed is not open yet)")
			}
			c := o.TLSConfig()
			if cc, err := c.GetConfigForClient(hello); cc != nil || err != nil {
				return cc, err
			}
			return c, nil
		},
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.origin.Load().Handler().ServeHTTP(w, r)
	})
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: rt,
		ReadTimeout:       rt,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       it,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		// A TLS-ALPN-01 validation ends with the handshake.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){
			"acme-tls/1": func(_ *http.Server, c *tls.Conn, _ http.Handler) { c.Close() },
		},
	}
	s.mu.Lock()
	s.srv = srv
	s.mu.Unlock()
	err := srv.Serve(tls.NewListener(&capListener{Listener: l, sem: make(chan struct{}, maxConns), log: log}, tlsCfg))
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("origin: %w", err)
}

// Shutdown stops accepting and waits for in-flight requests until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	srv := s.srv
	s.mu.Unlock()
	if srv == nil {
		return nil
	}
	return srv.Shutdown(ctx)
}

// capListener closes connections beyond its capacity as soon as they are
// accepted, so a flood cannot hold the accept loop.
type capListener struct {
	net.Listener
	sem chan struct{}
	log *slog.Logger
}

func (l *capListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.sem <- struct{}{}:
			return &capConn{Conn: c, release: func() { <-l.sem }}, nil
		default:
			l.log.Warn("issuer origin connection refused: at the connection limit", "max_conns", cap(l.sem))
			c.Close()
		}
	}
}

type capConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *capConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
