// Package server runs the host's listeners from start to graceful stop: the
// API on plain HTTP (loopback, or behind a TLS-terminating proxy) or on HTTPS
// with an ACME certificate (plus plain HTTP for ACME challenges and redirects
// to the issuer), and an optional listener of its own for /metrics.
//
// # Start here
//
// [Run] listens, obtains the certificate if there is one to obtain, serves,
// and on the context's end (SIGTERM) stops accepting and drains in-flight
// requests for at most [Config.ShutdownGrace]. The binary in
// host/cmd/agentkeys-host builds the handler and calls Run.
//
// # The issuer origin
//
// With [Config.Relay] the enclave serves the issuer origin (docs/trust.md):
// the relay (host/relay) carries that origin's TCP connections to the enclave
// unopened, either on the HTTPS port, routing by SNI (connections for other
// names go to the API's certmagic TLS), or on [Config.RelayAddr] of its own.
//
// Every http.Server here has bounded timeouts and header sizes, and writes its
// own errors (TLS handshakes, malformed requests) to the slog logger at warn
// level, so the host's log stays one JSON stream.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/agentkeys/broker/host/relay"
	"github.com/agentkeys/broker/host/tlsacme"
)

// Config configures Run.
type Config struct {
	// API is the public handler.
	API http.Handler
	// Addr is where the API listens on plain HTTP (HOST:PORT). Unused with ACME.
	Addr string
	// ACME, if set, serves the API over HTTPS on ACME.TLSPort with a
	// certificate for ACME.Domain, and plain HTTP on ACME.HTTPPort for the
	// CA's challenges and a 308 redirect to Issuer.
	ACME *tlsacme.Config
	// Issuer is the normalised issuer URL.
	Issuer string
	// APIURL is the API's URL (the redirect target with ACME); default Issuer.
	APIURL string
	// Relay, if set, relays the issuer origin's connections to the enclave:
	// on RelayAddr (HOST:PORT) of its own, or, without RelayAddr, on the
	// HTTPS port by SNI (ACME required).
	Relay     *relay.Relay
	RelayAddr string
	// Metrics, if set, is served as GET /metrics on its own listener at
	// MetricsAddr (HOST:PORT), and nowhere else by this package.
	Metrics     http.Handler
	MetricsAddr string
	// ShutdownGrace bounds how long a stop waits for in-flight requests.
	ShutdownGrace time.Duration
	// ObtainTimeout bounds the wait for the first certificate (default 5 minutes).
	ObtainTimeout time.Duration
	Logger        *slog.Logger
}

// Limits of every http.Server the host runs.
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 30 * time.Second
	writeTimeout      = 60 * time.Second
	idleTimeout       = 120 * time.Second
	maxHeaderBytes    = 64 << 10
)

// group is the set of running servers, stopped together.
type group struct {
	log     *slog.Logger
	servers []*http.Server
	relay   *relay.Relay
	errc    chan error
}

// startRelay serves the relay on l.
func (g *group) startRelay(r *relay.Relay, l net.Listener) {
	g.relay = r
	go func() {
		if err := r.Serve(l); err != nil {
			g.errc <- err
		}
	}()
}

func (g *group) start(h http.Handler, l net.Listener) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: readHeaderTimeout, ReadTimeout: readTimeout,
		WriteTimeout: writeTimeout, IdleTimeout: idleTimeout, MaxHeaderBytes: maxHeaderBytes,
		ErrorLog: slog.NewLogLogger(g.log.Handler(), slog.LevelWarn)}
	g.servers = append(g.servers, srv)
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			g.errc <- err
		}
	}()
}

// stop stops accepting and waits at most grace for in-flight requests, then
// closes what is left.
func (g *group) stop(grace time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if g.relay != nil {
		// Relayed issuer origin connections are the enclave's to drain;
		// the relay stops accepting and closes what it holds.
		g.relay.Close()
	}
	for _, s := range g.servers {
		if err := s.Shutdown(ctx); err != nil {
			s.Close()
		}
	}
}

// Run serves until ctx is done, then drains and returns nil; or until a
// listener fails, and returns its error. A stop while the first certificate is
// still being obtained is a clean stop.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.ObtainTimeout <= 0 {
		cfg.ObtainTimeout = 5 * time.Minute
	}
	if cfg.APIURL == "" {
		cfg.APIURL = cfg.Issuer
	}
	if cfg.Relay != nil && cfg.RelayAddr == "" && cfg.ACME == nil {
		return errors.New("server: relaying the issuer origin by SNI needs the host's own TLS (ACME); give the relay a port of its own")
	}
	// Room for every server's error: none blocks on a full channel.
	g := &group{log: log, errc: make(chan error, 4)}
	if cfg.Relay != nil && cfg.RelayAddr != "" {
		rl, err := net.Listen("tcp", cfg.RelayAddr)
		if err != nil {
			return fmt.Errorf("failed to listen on the issuer origin port %s: %w", cfg.RelayAddr, err)
		}
		g.startRelay(cfg.Relay, rl)
		log.Info("relaying the issuer origin to the enclave", "addr", rl.Addr().String(), "issuer", cfg.Issuer)
	}

	if cfg.ACME != nil {
		m, err := tlsacme.New(withLogger(*cfg.ACME, log))
		if err != nil {
			return err
		}
		defer m.Close()
		stopped, err := serveACME(ctx, cfg, m, g)
		if err != nil || stopped {
			g.stop(0)
			return err
		}
	} else {
		l, err := net.Listen("tcp", cfg.Addr)
		if err != nil {
			return fmt.Errorf("failed to listen on %s: %w", cfg.Addr, err)
		}
		g.start(cfg.API, l)
		log.Info("serving HTTP", "addr", l.Addr().String(), "issuer", cfg.Issuer, "api_url", cfg.APIURL)
	}

	if cfg.Metrics != nil {
		ml, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			g.stop(0)
			return fmt.Errorf("failed to listen on --metrics-listen %s: %w", cfg.MetricsAddr, err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", cfg.Metrics)
		g.start(mux, ml)
		log.Info("serving metrics", "addr", ml.Addr().String())
	}

	select {
	case <-ctx.Done():
	case err := <-g.errc:
		g.stop(cfg.ShutdownGrace)
		return err
	}
	log.Info("shutting down; draining in-flight requests", "grace", cfg.ShutdownGrace.String())
	g.stop(cfg.ShutdownGrace)
	log.Info("stopped")
	return nil
}

// serveACME starts the HTTPS and HTTP listeners and obtains the certificate.
// stopped reports a stop (ctx done) before the certificate came.
func serveACME(ctx context.Context, cfg Config, m *tlsacme.Manager, g *group) (stopped bool, err error) {
	acfg := cfg.ACME
	// Listen before obtaining: the CA connects back to these ports.
	hl, err := net.Listen("tcp", fmt.Sprintf(":%d", acfg.HTTPPort))
	if err != nil {
		return false, fmt.Errorf("failed to listen on the HTTP port: %w", err)
	}
	tl, err := net.Listen("tcp", fmt.Sprintf(":%d", acfg.TLSPort))
	if err != nil {
		hl.Close()
		return false, fmt.Errorf("failed to listen on the HTTPS port: %w", err)
	}
	g.start(m.HTTPHandler(IssuerRedirect(cfg.APIURL)), hl)
	if cfg.Relay != nil && cfg.RelayAddr == "" {
		// One port, two origins: the relay reads each ClientHello's SNI and
		// sends the issuer's to the enclave, the rest to the API's TLS.
		g.startRelay(cfg.Relay, tl)
		g.start(cfg.API, tls.NewListener(cfg.Relay.API(), m.TLSConfig()))
		g.log.Info("relaying the issuer origin to the enclave by SNI", "https_port", acfg.TLSPort, "issuer", cfg.Issuer)
	} else {
		g.start(cfg.API, tls.NewListener(tl, m.TLSConfig()))
	}
	g.log.Info("obtaining a certificate", "domain", acfg.Domain, "ca", acfg.CA)
	octx, cancel := context.WithTimeout(ctx, cfg.ObtainTimeout)
	err = m.Obtain(octx)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			// Stopped (SIGTERM) while waiting for the CA: a clean stop.
			g.log.Info("stopped before a certificate was obtained")
			return true, nil
		}
		return false, err
	}
	g.log.Info("serving HTTPS", "issuer", cfg.Issuer, "https_port", acfg.TLSPort, "http_port", acfg.HTTPPort)
	return false, nil
}

func withLogger(c tlsacme.Config, log *slog.Logger) tlsacme.Config {
	if c.Logger == nil {
		c.Logger = log
	}
	return c
}

// IssuerRedirect answers plain HTTP (other than ACME challenges) with a 308 to
// the same path on the given origin (the API's), keeping its port, so that a host on a
// non-default HTTPS port redirects to where it actually listens.
func IssuerRedirect(issuer string) http.Handler {
	u, _ := url.Parse(issuer) // normalised by the caller
	origin := "https://" + u.Host
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.Error(w, "plain HTTP only redirects GET and HEAD; use "+origin, http.StatusBadRequest)
			return
		}
		http.Redirect(w, r, origin+r.URL.RequestURI(), http.StatusPermanentRedirect)
	})
}
