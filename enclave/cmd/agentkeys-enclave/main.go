// Command agentkeys-enclave is the AgentKeys enclave: it derives the broker's
// keys from one seed, verifies wallet sign-ins, issues session tokens, signs
// OIDC JWTs within its measured policy and produces attestation documents. It
// talks only through the enclave protocol, on vsock inside a Nitro Enclave or on
// a unix socket / loopback TCP in simulated mode.
//
// Usage:
//
//	agentkeys-enclave --simulated --state-dir DIR --policy FILE --listen unix:PATH
//
// Run it with -h for every flag.
package main

import (
	"context"
	"crypto/rand"
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
	"github.com/agentkeys/broker/enclave/seed"
	"github.com/agentkeys/broker/enclave/service"
	"github.com/agentkeys/broker/shared/cliflag"
	"github.com/agentkeys/broker/shared/policy"
	"github.com/agentkeys/broker/shared/protocol"
)

const usage = `usage: agentkeys-enclave --simulated --policy FILE [--state-dir DIR] [--listen ADDR]

The AgentKeys enclave. In simulated mode (laptops, CI) the seed is a 0600 file in
the state directory and attestation documents chain to a local simulated root;
nitro mode (inside an AWS Nitro Enclave, seed sealed by KMS) is not available yet.

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
	)
	fs.IntVar(&limits.maxConns, "max-conns", protocol.DefaultMaxConns, "connections served at once; more are closed at once")
	fs.DurationVar(&limits.frameTimeout, "frame-timeout", protocol.DefaultFrameTimeout, "time a frame may take to arrive (or be written) whole once started")
	fs.DurationVar(&limits.idleTimeout, "idle-timeout", protocol.DefaultIdleTimeout, "close a connection with no request in flight after this long")
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
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return usageError(fmt.Sprintf("--log-level: invalid value %q: want debug, info, warn or error", *logLevel))
	}
	log := newLogger(stderr, level)
	if err := serve(log, *simulated, *stateDir, *listen, *policyF, limits); err != nil {
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

func serve(log *slog.Logger, simulated bool, stateDir, listen, policyFile string, limits connLimits) error {
	if policyFile == "" {
		return errors.New("--policy is required\n\thint: a minimal policy is {\"issuer\": \"https://broker.example.com\"}")
	}
	pol, policyBytes, err := policy.Load(policyFile)
	if err != nil {
		return err
	}
	if !simulated {
		return errors.New("nitro mode needs a KMS-sealed seed, which this build does not have yet\n\thint: run with --simulated on a laptop or in CI")
	}

	log.Warn("WARNING: SIMULATED ENCLAVE. The seed is a file on this machine and attestation documents chain to a local root, never to AWS. Not for production.", "state_dir", stateDir)

	s, created, err := seed.LoadOrCreate(stateDir, rand.Reader)
	if err != nil {
		return err
	}
	if created {
		log.Info("created a new seed", "path", filepath.Join(stateDir, seed.FileName))
	}
	att, err := attester.NewSimulated(attester.SimulatedOptions{StateDir: stateDir, AppData: policyBytes})
	if err != nil {
		seed.Wipe(s)
		return err
	}
	defer att.Close()
	svc, err := service.New(service.Config{Policy: pol, Seed: s, Attester: att, Logger: log})
	seed.Wipe(s)
	if err != nil {
		return err
	}
	info := svc.Info()

	l, err := protocol.Listen(listen)
	if err != nil {
		return fmt.Errorf("failed to listen on %s: %w", listen, err)
	}
	srv := &protocol.Server{Handler: svc, Logger: log,
		MaxConns: limits.maxConns, FrameTimeout: limits.frameTimeout, IdleTimeout: limits.idleTimeout}
	log.Info("enclave ready", "listen", listen, "mode", info.Mode, "issuer", pol.Issuer,
		"signing_kid", info.SigningKid, "policy_digest", info.PolicyDigest,
		"simulated_root", filepath.Join(stateDir, attester.SimulatedRootCertFile))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
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
	log.Info("stopped")
	return nil
}
