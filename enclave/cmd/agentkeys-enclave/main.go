// Command agentkeys-enclave is the AgentKeys enclave: it derives the broker's
// keys from one seed, verifies wallet sign-ins, issues session tokens, signs
// OIDC JWTs within its measured policy and produces attestation documents. It
// talks only through the enclave protocol, on vsock inside a Nitro Enclave or on
// a unix socket / loopback TCP in simulated mode.
//
// Usage:
//
//	agentkeys-enclave --policy FILE --kms-key-id ARN --kms-region REGION --egress kms.REGION.amazonaws.com:443=8000
//	agentkeys-enclave --simulated --state-dir DIR --policy FILE --listen unix:PATH
//	agentkeys-enclave --simulated --state-dir DIR --policy FILE --kms-key-id ARN --kms-region REGION --kms-endpoint URL
//
// Run it with -h for every flag.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/agentkeys/broker/enclave/attester"
	"github.com/agentkeys/broker/enclave/logtree"
	"github.com/agentkeys/broker/enclave/origin"
	"github.com/agentkeys/broker/enclave/seed"
	"github.com/agentkeys/broker/enclave/service"
	"github.com/agentkeys/broker/shared/cliflag"
	"github.com/agentkeys/broker/shared/policy"
	"github.com/agentkeys/broker/shared/protocol"
)

const usage = `usage: agentkeys-enclave --policy FILE --kms-key-id ARN --kms-region REGION --egress ROUTES [--listen vsock:PORT]
       agentkeys-enclave --simulated --policy FILE [--state-dir DIR] [--listen ADDR] [--kms-key-id ARN --kms-region REGION --kms-endpoint URL]
       [--issuer-origin enclave --origin-listen ADDR [--acme-directory URL --acme-ca-root PEM]]

The AgentKeys enclave. In nitro mode (inside an AWS Nitro Enclave) attestation
comes from /dev/nsm and the seed is sealed by AWS KMS, released only to this
attested image: the enclave waits for the host to call unseal. In simulated mode
(laptops, CI) attestation documents chain to a local simulated root and the seed
is a 0600 file in the state directory, or, with --kms-endpoint, sealed by a
KMS-compatible endpoint exactly as in nitro mode.

With --issuer-origin enclave (the default in nitro mode) TLS for the issuer URL
ends in the enclave: the host relays the origin's connections to --origin-listen
and the enclave serves discovery and the JWKS itself, with a certificate it
obtains by ACME (TLS-ALPN-01) for a key derived from its seed.

Flags:
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run returns the exit status. Help goes to stdout; everything on stderr is a
// JSON log line, start-up errors included.
func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("agentkeys-enclave", flag.ContinueOnError)
	var (
		simulated = fs.Bool("simulated", false, "run as a simulated enclave: file seed, simulated attestation (never for production)")
		stateDir  = fs.String("state-dir", ".agentkeys-enclave", "directory for the seed and the simulated attestation root (simulated mode)")
		listen    = fs.String("listen", "vsock:5005", "where to serve the enclave protocol: unix:PATH, tcp:127.0.0.1:PORT or vsock:PORT")
		policyF   = fs.String("policy", "", "policy file (JSON; see docs/protocol.md); required")
		logLevel  = fs.String("log-level", "info", "log level: debug, info, warn or error")
		limits    connLimits
		tune      serviceTuning
		sealing   sealConfig
		orig      originConfig
	)
	fs.StringVar(&orig.mode, "issuer-origin", "", "who terminates TLS for the issuer URL: enclave (serves discovery and JWKS itself; default in nitro mode) or host (default in simulated mode; the host could publish a key of its own)")
	fs.StringVar(&orig.listen, "origin-listen", "", "with --issuer-origin enclave: where the host relays the issuer origin's TCP connections (default vsock:5006 in nitro mode; tcp:127.0.0.1:PORT or unix:PATH in simulated mode, required)")
	fs.Func("acme-directory", "with --issuer-origin enclave: the ACME CA's directory URL (default "+DefaultACMEDirectory+" in nitro mode, reached through --egress; none in simulated mode, which then serves a DEV-ONLY self-signed certificate); '' for none", func(v string) error {
		orig.acmeDirectory, orig.acmeDirectorySet = v, true
		return nil
	})
	fs.StringVar(&orig.acmeCARoot, "acme-ca-root", "", "PEM file of the roots that verify the ACME CA's HTTPS (tests, Pebble); default: the roots embedded in the binary")
	fs.StringVar(&orig.acmeEmail, "acme-email", "", "contact address of the ACME account (optional)")
	fs.IntVar(&orig.maxConns, "origin-max-conns", origin.DefaultMaxConns, "issuer origin connections served at once; more are closed at once")
	fs.DurationVar(&orig.readTimeout, "origin-read-timeout", origin.DefaultReadTimeout, "bound on an issuer origin connection's TLS handshake and request")
	fs.DurationVar(&orig.idleTimeout, "origin-idle-timeout", origin.DefaultIdleTimeout, "close an idle issuer origin keep-alive connection after this long")
	fs.DurationVar(&orig.acmeTimeout, "acme-timeout", 5*time.Minute, "bound on one attempt to obtain the issuer origin's certificate")
	fs.DurationVar(&orig.acmeRetryMin, "acme-retry-min", time.Minute, "first wait after a failed ACME attempt (it doubles)")
	fs.DurationVar(&orig.acmeRetryMax, "acme-retry-max", time.Hour, "longest wait between failed ACME attempts")
	fs.StringVar(&sealing.keyID, "kms-key-id", "", "KMS key (ARN) that seals the seed; required in nitro mode")
	fs.StringVar(&sealing.region, "kms-region", "", "AWS region of the KMS key; required with --kms-key-id")
	fs.StringVar(&sealing.endpoint, "kms-endpoint", "", "KMS URL (default https://kms.REGION.amazonaws.com); with --simulated, a KMS-compatible endpoint (http allowed) seals the seed instead of a file")
	fs.StringVar(&sealing.egress, "egress", "", "nitro mode: where the enclave may connect, as host:port=vsockport,... (the host's vsock-proxy ports on CID 3), e.g. kms.REGION.amazonaws.com:443=8000")
	fs.DurationVar(&sealing.timeout, "kms-timeout", 30*time.Second, "bound on one KMS call, retries included")
	fs.IntVar(&limits.maxConns, "max-conns", protocol.DefaultMaxConns, "connections served at once; more are closed at once")
	fs.DurationVar(&limits.frameTimeout, "frame-timeout", protocol.DefaultFrameTimeout, "time a frame may take to arrive (or be written) whole once started")
	fs.DurationVar(&limits.idleTimeout, "idle-timeout", protocol.DefaultIdleTimeout, "close a connection with no request in flight after this long")
	fs.IntVar(&tune.sessionCache, "session-cache", service.DefaultSessionCache, "verified session tokens remembered (by SHA-256), so a mint with one skips its signature check; 0 remembers none")
	fs.IntVar(&tune.auditMaxBatch, "audit-max-batch", logtree.DefaultMaxBatch, "most audit log entries in one batch (one checkpoint signature)")
	fs.IntVar(&tune.auditMaxUnacked, "audit-max-unacked", logtree.DefaultMaxUnacked, "audit log entries the host may leave unstored before the enclave stops logging, and so minting")
	usageError := func(err string) int {
		newLogger(stderr, slog.LevelInfo).Error("invalid command line", "err", err, "hint", "run: agentkeys-enclave -h")
		return 2
	}
	if err := cliflag.Parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usage)
			cliflag.PrintDefaults(stdout, fs)
			return 0
		}
		return usageError(err.Error())
	}
	if fs.NArg() > 0 {
		return usageError(fmt.Sprintf("unexpected argument %q", fs.Arg(0)))
	}
	if limits.maxConns < 1 || limits.frameTimeout <= 0 || limits.idleTimeout <= 0 {
		return usageError("--max-conns, --frame-timeout and --idle-timeout must be positive")
	}
	if tune.sessionCache < 0 || tune.auditMaxBatch < 1 || tune.auditMaxUnacked < tune.auditMaxBatch {
		return usageError("--session-cache must be 0 or more, --audit-max-batch at least 1 and --audit-max-unacked at least --audit-max-batch")
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return usageError(fmt.Sprintf("--log-level: invalid value %q: want debug, info, warn or error", *logLevel))
	}
	log := newLogger(stderr, level)
	if sealing.timeout <= 0 {
		return usageError("--kms-timeout must be positive")
	}
	orig.log = log
	if err := serve(log, *simulated, *stateDir, *listen, *policyF, limits, tune, sealing, &orig); err != nil {
		log.Error("exiting on an error", "err", err.Error())
		return 1
	}
	return 0
}

// connLimits are the protocol server's limits (see protocol.Server).
type connLimits struct {
	maxConns                  int
	frameTimeout, idleTimeout time.Duration
}

// newLogger returns the JSON logger and makes it the default, so that what
// libraries write with the standard log package becomes JSON lines too.
func newLogger(w io.Writer, level slog.Level) *slog.Logger {
	log := slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log)
	return log
}

func serve(log *slog.Logger, simulated bool, stateDir, listen, policyFile string, limits connLimits, tune serviceTuning, sealing sealConfig, orig *originConfig) error {
	if policyFile == "" {
		return errors.New("--policy is required\n\thint: a minimal policy is {\"issuer\": \"https://broker.example.com\"}")
	}
	pol, policyBytes, err := policy.Load(policyFile)
	if err != nil {
		return err
	}
	if err := orig.resolve(simulated, pol); err != nil {
		return err
	}
	orig.warnHost(log)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	orig.ctx = ctx
	ol, err := orig.prepare(simulated, sealing.egress)
	if err != nil {
		return err
	}
	if ol != nil {
		defer ol.Close()
	}
	var (
		handler protocol.Handler
		att     attester.Attester
	)
	if simulated && sealing.endpoint == "" {
		handler, att, err = fileSeed(log, pol, policyBytes, stateDir, tune, orig)
	} else {
		handler, att, err = sealedSeed(log, simulated, pol, policyBytes, stateDir, tune, sealing, orig)
	}
	if err != nil {
		return err
	}
	defer att.Close()

	l, err := protocol.Listen(listen)
	if err != nil {
		return fmt.Errorf("failed to listen on %s: %w", listen, err)
	}
	srv := &protocol.Server{Handler: handler, Logger: log,
		MaxConns: limits.maxConns, FrameTimeout: limits.frameTimeout, IdleTimeout: limits.idleTimeout}
	switch h := handler.(type) {
	case *seed.Gate:
		log.Info("enclave waiting for the host to unseal its seed", "listen", listen, "mode", att.Mode(), "issuer", pol.Issuer,
			"policy_digest", pol.Digest(), "kms_key_id", sealing.keyID)
	case *service.Service:
		info := h.Info()
		log.Info("enclave ready", "listen", listen, "mode", info.Mode, "issuer", pol.Issuer,
			"signing_kid", info.SigningKid, "policy_digest", info.PolicyDigest,
			"simulated_root", filepath.Join(stateDir, attester.SimulatedRootCertFile))
	}

	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(l) }()
	if ol != nil {
		go func() {
			if err := orig.server.Serve(ol); err != nil {
				errc <- err
			}
		}()
	}
	select {
	case err := <-errc:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("shutdown did not drain in time", "err", err)
	}
	if orig.server != nil {
		orig.server.Shutdown(sctx)
	}
	log.Info("stopped")
	return nil
}
