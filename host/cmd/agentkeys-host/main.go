// Command agentkeys-host is the AgentKeys host: it serves the OIDC discovery
// document and JWKS, sign-in and sessions, and credential minting over HTTPS,
// carrying every identity decision to an agentkeys-enclave over the enclave
// protocol, and writing a fail-closed audit log. It holds no private key.
//
// Run it with -h for every flag; each has an environment variable (BROKER_*).
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/agentkeys/broker/host/api"
	"github.com/agentkeys/broker/host/audit"
	"github.com/agentkeys/broker/host/awscreds"
	"github.com/agentkeys/broker/host/enclaveclient"
	"github.com/agentkeys/broker/host/metrics"
	"github.com/agentkeys/broker/host/ratelimit"
	"github.com/agentkeys/broker/host/revocation"
	"github.com/agentkeys/broker/host/tlsacme"
	"github.com/agentkeys/broker/shared/protocol"
)

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stderr))
}

func run(args []string, getenv func(string) string, stderr io.Writer) int {
	cfg, err := parseConfig(args, getenv, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "agentkeys-host: %v\n", err)
		return 2
	}
	var level slog.Level
	level.UnmarshalText([]byte(cfg.LogLevel))
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := serve(ctx, cfg, log); err != nil {
		fmt.Fprintf(stderr, "agentkeys-host: %v\n", err)
		return 1
	}
	return 0
}

func serve(ctx context.Context, cfg *config, log *slog.Logger) error {
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("failed to create the state dir: %w", err)
	}
	store, err := audit.OpenSQLite(cfg.AuditDB, audit.WithAggregateInterval(cfg.RefusalInterval), audit.WithAggregateClients(cfg.RefusalClients))
	if err != nil {
		return fmt.Errorf("failed to open the audit log: %w", err)
	}
	defer store.Close()
	revs, err := revocation.OpenSQLite(filepath.Join(cfg.StateDir, "sessions.db"))
	if err != nil {
		return err
	}
	defer revs.Close()

	dial, err := protocol.Dialer(cfg.Enclave)
	if err != nil {
		return err
	}
	// The enclave client may connect before the API exists; whoever comes
	// second publishes the newest Info (always read back from the client, so
	// an older Info can never overwrite a newer one).
	var published atomic.Pointer[api.API]
	var enc *enclaveclient.Client
	enc = enclaveclient.New(enclaveclient.Config{Dial: dial, Logger: log, OnInfo: func(protocol.InfoResponse) {
		if a := published.Load(); a != nil {
			if info, ok := enc.Info(); ok {
				a.SetInfo(info)
			}
		}
	}, OnConnect: func(ctx context.Context, call func(context.Context, protocol.Op, any, any) error) error {
		return audit.Resume(ctx, store, call) // the enclave mints nothing until it has the log
	}})
	defer enc.Close()

	apiCfg := api.Config{Issuer: cfg.Issuer, Enclave: enc, Audit: store, Revocations: revs,
		Metrics: metrics.New(enc.Connected), Logger: log, DefaultTTLSeconds: cfg.JWTTTL}
	if cfg.SessionBackend != "" {
		if apiCfg.SessionBackend, err = api.NewSessionBackend(cfg.SessionBackend); err != nil {
			return fmt.Errorf("invalid --session-backend (BROKER_SESSION_BACKEND): %w", err)
		}
		log.Warn("compatibility mode: opaque bearers are validated by the session backend; the enclave must allow host-asserted wallets", "backend", cfg.SessionBackend)
	}
	apiCfg.SessionDuration = cfg.SessionDuration
	apiCfg.TrustedProxies = cfg.TrustedProxies
	if cfg.BehindProxy && len(cfg.TrustedProxies) == 0 {
		log.Warn("--behind-proxy without --trusted-proxies: X-Forwarded-For is ignored, so every client is the proxy's address and shares its limits")
	}
	apiCfg.MetricsElsewhere = cfg.MetricsListen != ""
	if cfg.SignInRate > 0 {
		apiCfg.SignInLimit = ratelimit.New(cfg.SignInRate, max(1, int(4*cfg.SignInRate)), 100_000)
	}
	if cfg.MintRate > 0 {
		apiCfg.MintLimit = ratelimit.New(cfg.MintRate, cfg.MintBurst, 100_000)
	}
	if cfg.WalletMintRate > 0 {
		apiCfg.WalletMintLimit = ratelimit.New(cfg.WalletMintRate, max(1, int(2*cfg.WalletMintRate)), 100_000)
	}
	if cfg.RefusalRate > 0 {
		apiCfg.RefusalLimit = ratelimit.New(cfg.RefusalRate, cfg.RefusalBurst, 100_000)
	}
	if cfg.RoleARN != "" {
		b, err := awscreds.New(ctx, awscreds.Config{Mode: awscreds.Mode(cfg.STSMode), RoleARN: cfg.RoleARN, Region: cfg.AWSRegion,
			Endpoint: cfg.STSEndpoint, StaticAccessKeyID: cfg.DaemonKeyID, StaticSecretAccessKey: cfg.DaemonSecret})
		if err != nil {
			return err
		}
		if b.Mode() == awscreds.ModeAssumeRole && !cfg.SkipStartupCheck {
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			arn, err := b.CheckIdentity(cctx)
			cancel()
			if err != nil {
				return fmt.Errorf("assume-role start-up check: %w\n\thint: give the host AWS credentials (default chain, or DAEMON_ACCESS_KEY_ID/DAEMON_SECRET_ACCESS_KEY), or --skip-startup-check", err)
			}
			log.Info("assume-role identity", "arn", arn)
		}
		apiCfg.AWS = b
		log.Info("AWS credential minting on", "mode", cfg.STSMode, "role", cfg.RoleARN, "region", cfg.AWSRegion, "endpoint", cfg.STSEndpoint)
	} else {
		log.Info("AWS credential minting off: no role configured (BROKER_DATA_ROLE_ARN)")
	}
	a, err := api.New(apiCfg)
	if err != nil {
		return err
	}
	published.Store(a)
	if info, ok := enc.Info(); ok {
		a.SetInfo(info)
	}

	var servers []*http.Server
	errc := make(chan error, 3)
	start := func(srv *http.Server, l net.Listener) {
		servers = append(servers, srv)
		go func() {
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	newServer := func(h http.Handler) *http.Server {
		return &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
			WriteTimeout: 60 * time.Second, IdleTimeout: 120 * time.Second, MaxHeaderBytes: 64 << 10,
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	}

	if cfg.TLSDomain != "" {
		tcfg := tlsacme.Config{Domain: cfg.TLSDomain, CA: cfg.ACMECA, Email: cfg.ACMEEmail,
			StorageDir: filepath.Join(cfg.StateDir, "acme"), HTTPPort: cfg.HTTPPort, TLSPort: cfg.HTTPSPort, Logger: log}
		if cfg.ACMECARoot != "" {
			pem, err := os.ReadFile(cfg.ACMECARoot)
			if err != nil {
				return fmt.Errorf("invalid --acme-ca-root: %w", err)
			}
			tcfg.CARoots = x509.NewCertPool()
			if !tcfg.CARoots.AppendCertsFromPEM(pem) {
				return fmt.Errorf("invalid --acme-ca-root: no PEM certificate in %s", cfg.ACMECARoot)
			}
		}
		m, err := tlsacme.New(tcfg)
		if err != nil {
			return err
		}
		defer m.Close()
		// Listen before obtaining: the CA connects back to these ports.
		hl, err := net.Listen("tcp", fmt.Sprintf(":%d", cfg.HTTPPort))
		if err != nil {
			return fmt.Errorf("failed to listen on the HTTP port: %w", err)
		}
		tl, err := net.Listen("tcp", fmt.Sprintf(":%d", cfg.HTTPSPort))
		if err != nil {
			hl.Close()
			return fmt.Errorf("failed to listen on the HTTPS port: %w", err)
		}
		start(newServer(m.HTTPHandler(issuerRedirect(cfg.Issuer))), hl)
		start(newServer(a), tls.NewListener(tl, m.TLSConfig()))
		log.Info("obtaining a certificate", "domain", cfg.TLSDomain, "ca", cfg.ACMECA)
		octx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		err = m.Obtain(octx)
		cancel()
		if err != nil {
			shutdown(servers, 0)
			if ctx.Err() != nil {
				// Stopped (SIGTERM) while waiting for the CA: a clean stop.
				log.Info("stopped before a certificate was obtained")
				return nil
			}
			return err
		}
		log.Info("serving HTTPS", "issuer", cfg.Issuer, "https_port", cfg.HTTPSPort, "http_port", cfg.HTTPPort)
	} else {
		l, err := net.Listen("tcp", cfg.ListenAddr)
		if err != nil {
			return fmt.Errorf("failed to listen on %s: %w", cfg.ListenAddr, err)
		}
		start(newServer(a), l)
		log.Info("serving HTTP", "addr", l.Addr().String(), "issuer", cfg.Issuer, "behind_proxy", cfg.BehindProxy, "enclave", cfg.Enclave)
	}

	if cfg.MetricsListen != "" {
		ml, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			shutdown(servers, 0)
			return fmt.Errorf("failed to listen on --metrics-listen %s: %w", cfg.MetricsListen, err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", apiCfg.Metrics.Handler())
		start(newServer(mux), ml)
		log.Info("serving metrics", "addr", ml.Addr().String())
	}

	select {
	case <-ctx.Done():
	case err := <-errc:
		shutdown(servers, cfg.ShutdownGrace)
		return err
	}
	log.Info("shutting down; draining in-flight requests", "grace", cfg.ShutdownGrace.String())
	shutdown(servers, cfg.ShutdownGrace)
	log.Info("stopped")
	return nil
}

// issuerRedirect answers plain HTTP (other than ACME challenges) with a 308 to
// the same path on the issuer's origin, keeping its port, so that a host on a
// non-default HTTPS port redirects to where it actually listens.
func issuerRedirect(issuer string) http.Handler {
	u, _ := url.Parse(issuer) // normalised by parseConfig
	origin := "https://" + u.Host
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.Error(w, "plain HTTP only redirects GET and HEAD; use "+origin, http.StatusBadRequest)
			return
		}
		http.Redirect(w, r, origin+r.URL.RequestURI(), http.StatusPermanentRedirect)
	})
}

func shutdown(servers []*http.Server, grace time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	for _, s := range servers {
		if err := s.Shutdown(ctx); err != nil {
			s.Close()
		}
	}
}
