// Command agentkeys-host is the AgentKeys host: it serves the OIDC discovery
// document and JWKS, sign-in and sessions, and credential minting over HTTPS,
// carrying every identity decision to an agentkeys-enclave over the enclave
// protocol, and writing a fail-closed audit log. It holds no private key.
//
// Run it with -h for every flag; each has an environment variable (BROKER_*).
//
// This file is wiring only: flags → logger → dependencies → handler → serve
// (package host/server owns the listeners, ACME and the graceful stop).
package main

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/agentkeys/broker/host/api"
	"github.com/agentkeys/broker/host/audit"
	"github.com/agentkeys/broker/host/awscreds"
	"github.com/agentkeys/broker/host/enclaveclient"
	"github.com/agentkeys/broker/host/metrics"
	"github.com/agentkeys/broker/host/pgdb"
	"github.com/agentkeys/broker/host/ratelimit"
	"github.com/agentkeys/broker/host/relay"
	"github.com/agentkeys/broker/host/revocation"
	"github.com/agentkeys/broker/host/sealedseed"
	"github.com/agentkeys/broker/host/server"
	"github.com/agentkeys/broker/host/tlsacme"
	"github.com/agentkeys/broker/host/witness"
	"github.com/agentkeys/broker/shared/protocol"
)

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// run returns the exit status: 0, 1 when serving failed, 2 on a bad
// configuration. Help goes to stdout; everything on stderr is a JSON log line,
// start-up errors included.
func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, err := parseConfig(args, getenv, stdout)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		newLogger(stderr, "info").Error("invalid configuration", "err", err.Error(), "hint", "run: agentkeys-host -h")
		return 2
	}
	log := newLogger(stderr, cfg.LogLevel)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := serve(ctx, cfg, log); err != nil {
		log.Error("exiting on an error", "err", err.Error())
		return 1
	}
	return 0
}

// newLogger returns the JSON logger and makes it the default, so that what
// libraries write with the standard log package becomes JSON lines too.
func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	l.UnmarshalText([]byte(level)) // checked by parseConfig
	log := slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l}))
	slog.SetDefault(log)
	return log
}

// deps are the host's dependencies: stores, the enclave connection, metrics
// and the optional AWS broker.
type deps struct {
	audit   audit.Store
	revs    revocation.Store
	enc     *enclaveclient.Client
	metrics *metrics.Metrics
	aws     *awscreds.Broker
	// witnesses is nil without --witness.
	witnesses *witness.Witnesses
	closers   []func() error
}

func (d *deps) close() {
	for i := len(d.closers) - 1; i >= 0; i-- {
		d.closers[i]()
	}
}

func serve(ctx context.Context, cfg *config, log *slog.Logger) error {
	d, err := openDeps(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer d.close()
	apiCfg, err := apiConfig(cfg, d, log)
	if err != nil {
		return err
	}
	a, err := api.New(apiCfg)
	if err != nil {
		return err
	}
	scfg, err := serverConfig(cfg, a, d, log)
	if err != nil {
		return err
	}
	if err := issuerOrigin(ctx, cfg, &scfg, d, log); err != nil {
		return err
	}
	log.Info("starting", "issuer", cfg.Issuer, "api_url", cfg.APIURL, "issuer_origin", cfg.IssuerOrigin, "enclave", cfg.Enclave,
		"behind_proxy", cfg.BehindProxy, "metrics", metricsWhere(cfg))
	return server.Run(ctx, scfg)
}

func openDeps(ctx context.Context, cfg *config, log *slog.Logger) (_ *deps, err error) {
	d := &deps{}
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("failed to create the state dir: %w", err)
	}
	store, revs, err := openStores(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	d.audit, d.closers = store, append(d.closers, store.Close)
	d.revs, d.closers = revs, append(d.closers, revs.Close)
	dial, err := protocol.Dialer(cfg.Enclave)
	if err != nil {
		return nil, err
	}
	// A sealed enclave (nitro mode) is unsealed on connect with the blob in
	// --sealed-seed and the host's default AWS credential chain.
	keeper, err := sealedseed.New(sealedseed.Config{BlobPath: cfg.SealedSeed, Logger: log,
		Credentials: sealedseed.DefaultCredentials(cfg.AWSRegion, 5*time.Minute)})
	if err != nil {
		return nil, err
	}
	d.enc = enclaveclient.New(enclaveclient.Config{Dial: dial, Logger: log, Unseal: keeper.Unseal,
		OnConnect: func(ctx context.Context, call enclaveclient.CallFunc) error {
			return audit.Resume(ctx, store, cfg.AuditLogName, call) // the enclave mints nothing until it has the log
		}})
	d.closers = append(d.closers, d.enc.Close)
	rctx, stopRefresh := context.WithCancel(ctx)
	go keeper.Refresh(rctx, d.enc.Call)
	d.closers = append(d.closers, func() error { stopRefresh(); return nil })
	d.metrics = metrics.New(d.enc)
	if len(cfg.Witnesses) > 0 {
		ws, err := witness.New(witness.Config{Source: store, Witnesses: cfg.Witnesses, Interval: cfg.WitnessInterval,
			Registerer: d.metrics.Registry, Logger: log})
		if err != nil {
			return nil, fmt.Errorf("invalid --witness (BROKER_WITNESSES): %w", err)
		}
		wctx, stopWitnesses := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { ws.Run(wctx); close(done) }()
		d.witnesses, d.closers = ws, append(d.closers, func() error { stopWitnesses(); <-done; return nil })
		log.Info("audit log witnesses", "count", len(cfg.Witnesses), "interval", cfg.WitnessInterval.String())
	}

	if cfg.RoleARN == "" {
		log.Info("AWS credential minting off: no role configured (BROKER_DATA_ROLE_ARN)")
		return d, nil
	}
	b, err := awscreds.New(ctx, awscreds.Config{Mode: awscreds.Mode(cfg.STSMode), RoleARN: cfg.RoleARN, Region: cfg.AWSRegion,
		Endpoint: cfg.STSEndpoint, StaticAccessKeyID: cfg.DaemonKeyID, StaticSecretAccessKey: cfg.DaemonSecret})
	if err != nil {
		return nil, err
	}
	if b.Mode() == awscreds.ModeAssumeRole && !cfg.SkipStartupCheck {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		arn, err := b.CheckIdentity(cctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("assume-role start-up check: %w\n\thint: give the host AWS credentials (default chain, or DAEMON_ACCESS_KEY_ID/DAEMON_SECRET_ACCESS_KEY), or --skip-startup-check", err)
		}
		log.Info("assume-role identity", "arn", arn)
	}
	d.aws = b
	log.Info("AWS credential minting on", "mode", cfg.STSMode, "role", cfg.RoleARN, "region", cfg.AWSRegion, "endpoint", cfg.STSEndpoint)
	return d, nil
}

// openStores opens the audit store and the revocation list: SQLite files in
// the state dir, or with --audit-dsn both in the PostgreSQL database that
// several hosts share. The DSN's password is never logged.
func openStores(ctx context.Context, cfg *config, log *slog.Logger) (audit.Store, revocation.Store, error) {
	opts := []audit.Option{audit.WithAggregateInterval(cfg.RefusalInterval), audit.WithAggregateClients(cfg.RefusalClients)}
	if cfg.AuditDSN == "" {
		store, err := audit.OpenSQLite(cfg.AuditDB, opts...)
		if err != nil {
			return nil, nil, fmt.Errorf("failed to open the audit log: %w", err)
		}
		revs, err := revocation.OpenSQLite(filepath.Join(cfg.StateDir, "sessions.db"))
		if err != nil {
			store.Close()
			return nil, nil, err
		}
		return store, revs, nil
	}
	octx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	store, err := audit.OpenPostgres(octx, cfg.AuditDSN, cfg.AuditLogName, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("failed to open the audit log in PostgreSQL (--audit-dsn %s): %w", pgdb.Redact(cfg.AuditDSN), err)
	}
	revs, err := revocation.OpenPostgres(octx, cfg.AuditDSN)
	if err != nil {
		store.Close()
		return nil, nil, fmt.Errorf("failed to open the revocation list in PostgreSQL (--audit-dsn %s): %w", pgdb.Redact(cfg.AuditDSN), err)
	}
	log.Info("audit store and revocation list in PostgreSQL", "dsn", pgdb.Redact(cfg.AuditDSN), "log", cfg.AuditLogName, "log_size", store.LogSize())
	return store, revs, nil
}

// apiConfig is the API's configuration from the host's.
func apiConfig(cfg *config, d *deps, log *slog.Logger) (api.Config, error) {
	apiCfg := api.Config{Issuer: cfg.Issuer, Enclave: d.enc, Audit: d.audit, AuditLogName: cfg.AuditLogName, Revocations: d.revs,
		Metrics: d.metrics, Logger: log, DefaultTTLSeconds: cfg.JWTTTL, AWS: d.aws}
	if d.witnesses != nil {
		apiCfg.Witnesses = d.witnesses
	}
	if cfg.SessionBackend != "" {
		var err error
		if apiCfg.SessionBackend, err = api.NewSessionBackend(cfg.SessionBackend); err != nil {
			return api.Config{}, fmt.Errorf("invalid --session-backend (BROKER_SESSION_BACKEND): %w", err)
		}
		log.Warn("compatibility mode: opaque bearers are validated by the session backend; the enclave must allow host-asserted wallets", "backend", cfg.SessionBackend)
	}
	apiCfg.SessionDuration = cfg.SessionDuration
	apiCfg.TrustedProxies = cfg.TrustedProxies
	if cfg.BehindProxy && len(cfg.TrustedProxies) == 0 {
		log.Warn("--behind-proxy without --trusted-proxies: X-Forwarded-For is ignored, so every client is the proxy's address and shares its limits")
	}
	apiCfg.MetricsElsewhere = !cfg.MetricsOnAPI
	if cfg.SignInRate > 0 {
		apiCfg.SignInLimit = ratelimit.New(cfg.SignInRate, max(1, int(4*cfg.SignInRate)), 100_000)
	}
	if cfg.ReadRate > 0 {
		apiCfg.ReadLimit = ratelimit.New(cfg.ReadRate, max(1, int(5*cfg.ReadRate)), 100_000)
	}
	if cfg.PageRate > 0 {
		apiCfg.PageLimit = ratelimit.New(cfg.PageRate, max(1, int(4*cfg.PageRate)), 100_000)
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
	return apiCfg, nil
}

// serverConfig is the listeners' configuration from the host's.
func serverConfig(cfg *config, h *api.API, d *deps, log *slog.Logger) (server.Config, error) {
	scfg := server.Config{API: h, Addr: cfg.ListenAddr, Issuer: cfg.Issuer, ShutdownGrace: cfg.ShutdownGrace, Logger: log}
	if cfg.MetricsListen != "" {
		scfg.Metrics, scfg.MetricsAddr = d.metrics.Handler(), cfg.MetricsListen
	}
	if cfg.TLSDomain == "" {
		return scfg, nil
	}
	scfg.ACME = &tlsacme.Config{Domain: cfg.TLSDomain, CA: cfg.ACMECA, Email: cfg.ACMEEmail,
		StorageDir: filepath.Join(cfg.StateDir, "acme"), HTTPPort: cfg.HTTPPort, TLSPort: cfg.HTTPSPort, Logger: log}
	if cfg.ACMECARoot != "" {
		pem, err := os.ReadFile(cfg.ACMECARoot)
		if err != nil {
			return server.Config{}, fmt.Errorf("invalid --acme-ca-root: %w", err)
		}
		scfg.ACME.CARoots = x509.NewCertPool()
		if !scfg.ACME.CARoots.AppendCertsFromPEM(pem) {
			return server.Config{}, fmt.Errorf("invalid --acme-ca-root: no PEM certificate in %s", cfg.ACMECARoot)
		}
	}
	return scfg, nil
}

// issuerOrigin sets up the relay of the issuer origin to the enclave and the
// keeper of its certificate chain, or warns that the host serves it.
func issuerOrigin(ctx context.Context, cfg *config, scfg *server.Config, d *deps, log *slog.Logger) error {
	if cfg.IssuerOrigin != "enclave" {
		log.Warn("WARNING: --issuer-origin host: this host serves the issuer's discovery document and JWKS, so whoever controls it could publish a key of its own that AWS would trust. Use --issuer-origin enclave in production (docs/trust.md).")
		return nil
	}
	dial, err := protocol.Dialer(cfg.EnclaveOrigin)
	if err != nil {
		return fmt.Errorf("invalid --enclave-origin: %w", err)
	}
	u, _ := url.Parse(cfg.Issuer)
	r, err := relay.New(relay.Config{IssuerHost: u.Hostname(), AllToEnclave: cfg.IssuerOriginPort != 0, DialEnclave: dial,
		MaxConns: cfg.RelayMaxConns, HelloTimeout: cfg.RelayHelloTimeout, IdleTimeout: cfg.RelayIdleTimeout,
		Metrics: d.metrics, Logger: log})
	if err != nil {
		return err
	}
	scfg.Relay, scfg.RelayAddr, scfg.APIURL = r, cfg.RelayAddr, cfg.APIURL
	k := &relay.Keeper{Path: filepath.Join(cfg.StateDir, relay.ChainFile), Call: d.enc.Call, Logger: log}
	kctx, stopKeeper := context.WithCancel(ctx)
	go k.Run(kctx)
	d.closers = append(d.closers, func() error { stopKeeper(); return nil })
	return nil
}

// metricsWhere says where /metrics is served, for the start-up log line.
func metricsWhere(cfg *config) string {
	switch {
	case cfg.MetricsListen != "":
		return cfg.MetricsListen
	case cfg.MetricsOnAPI:
		return "api listener"
	default:
		return "off (public listener; set --metrics-listen or --metrics-public)"
	}
}
