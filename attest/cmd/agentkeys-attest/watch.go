package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/agentkeys/broker/attest"
	"github.com/agentkeys/broker/shared/manifest"
)

func watch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var (
		f                           trustFlags
		manifestFrom, metricsListen string
		interval                    time.Duration
		once                        bool
	)
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	f.register(fs)
	fs.StringVar(&manifestFrom, "manifest-from", "", "")
	fs.StringVar(&metricsListen, "metrics-listen", "", "")
	fs.DurationVar(&interval, "interval", time.Minute, "")
	fs.BoolVar(&once, "once", false, "")
	if code, ok := parseFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	switch {
	case f.issuer == "":
		return fail(stderr, usagef("watch needs --issuer URL, the issuer relying parties use"))
	case manifestFrom == "":
		return fail(stderr, usagef("watch needs --manifest-from URL|FILE: where verified manifests come from"))
	case interval <= 0:
		return fail(stderr, usagef("--interval must be positive"))
	}
	opts, err := f.options()
	if err != nil {
		return fail(stderr, err)
	}
	cfg := attest.WatchConfig{Issuer: f.issuer, Document: opts, Live: f.live(),
		Log: slog.New(slog.NewJSONHandler(stderr, nil))}
	if strings.HasPrefix(manifestFrom, "http://") || strings.HasPrefix(manifestFrom, "https://") {
		cfg.ManifestURL = manifestFrom
	} else {
		b, err := readFile(manifestFrom, manifest.MaxSize)
		if err != nil {
			return fail(stderr, err)
		}
		m, err := manifest.Parse(b)
		if err != nil {
			return fail(stderr, fmt.Errorf("--manifest-from %s: %w", manifestFrom, err))
		}
		cfg.Manifests = []manifest.Manifest{m}
	}
	w, err := attest.NewWatcher(cfg)
	if err != nil {
		return fail(stderr, err)
	}
	if metricsListen != "" {
		l, err := net.Listen("tcp", metricsListen)
		if err != nil {
			return fail(stderr, fmt.Errorf("failed to listen for metrics on %s: %w", metricsListen, err))
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", w.MetricsHandler())
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second}
		go func() {
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				cfg.Log.Error("metrics server", "err", err.Error())
			}
		}()
		defer srv.Close()
	}
	if once {
		alarms := w.Round(ctx)
		for _, a := range alarms {
			fmt.Fprintf(stdout, "ALARM %s: %s\n", a.Reason, a.Detail)
		}
		if len(alarms) > 0 {
			return 1
		}
		fmt.Fprintln(stdout, "OK: no alarm")
		return 0
	}
	w.Run(ctx, interval)
	return 0
}
