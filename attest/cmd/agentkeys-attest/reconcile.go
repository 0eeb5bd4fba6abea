package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/agentkeys/broker/attest"
)

func auditReconcile(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := auditFlags{cmd: "reconcile"}
	var trails []string
	var issuer string
	var skew time.Duration
	var lim attest.CloudTrailLimits
	fs := flag.NewFlagSet("audit reconcile", flag.ContinueOnError)
	f.register(fs)
	fs.Func("cloudtrail", "", func(s string) error { trails = append(trails, s); return nil })
	fs.StringVar(&issuer, "issuer", "", "")
	fs.DurationVar(&skew, "skew", attest.DefaultReconcileSkew, "")
	fs.Int64Var(&lim.MaxFile, "max-file", attest.DefaultCloudTrailMaxFile, "")
	fs.IntVar(&lim.MaxFiles, "max-files", attest.DefaultCloudTrailMaxFiles, "")
	pos, code, ok := parseAuditFlags(fs, args, stdout, stderr)
	if !ok {
		return code
	}
	// Paths may follow --cloudtrail: --cloudtrail a.json b.json.gz dir/
	trails = append(trails, pos...)
	opts, err := f.auditOptions()
	if err != nil {
		return fail(stderr, err)
	}
	switch {
	case f.log == "":
		return fail(stderr, usagef("audit reconcile needs --log URL|DIR: the audit log to reconcile with"))
	case len(trails) == 0:
		return fail(stderr, usagef("audit reconcile needs --cloudtrail PATH: CloudTrail log files or a directory of them"))
	case f.jwt != "" || f.proof != "" || f.since != "":
		return fail(stderr, usagef("audit reconcile does not take --jwt, --proof or --since: use audit verify"))
	case skew < 0 || lim.MaxFile <= 0 || lim.MaxFiles <= 0:
		return fail(stderr, usagef("--skew must not be negative, --max-file and --max-files must be positive"))
	}
	if issuer == "" {
		if !strings.HasPrefix(f.log, "https://") && !strings.HasPrefix(f.log, "http://") {
			return fail(stderr, usagef("audit reconcile needs --issuer URL when --log is a directory"))
		}
		issuer = strings.TrimSuffix(strings.TrimSuffix(f.log, "/"), "/v1/audit")
	}
	log, err := f.openLog()
	if err != nil {
		return fail(stderr, err)
	}

	sessions, skipped, err := attest.ReadCloudTrail(trails, issuer, lim)
	if err != nil {
		return fail(stderr, err)
	}
	want := attest.WantedIndexes(sessions)
	entries := map[int64][]byte{}
	opts.Entry = func(i int64, e []byte) {
		if want[i] {
			entries[i] = append([]byte(nil), e...)
		}
	}
	bar := newProgressBar(stderr)
	opts.Progress = bar.update
	res := attest.VerifyAuditLog(ctx, log, opts)
	bar.done()
	if !res.OK() {
		// The log itself is wrong: nothing to reconcile with.
		report(stdout, res.Report, f.json)
		return 1
	}
	logName, _, err := attest.CheckpointLogName(res.Checkpoint, opts.ManifestKey, issuer)
	if err != nil {
		return fail(stderr, fmt.Errorf("--log is not a log of --issuer %s: %w", issuer, err))
	}
	rec := attest.Reconcile(sessions, logName, entries, skew)
	rec.Skipped = skipped
	if f.json {
		enc := json.NewEncoder(stdout)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		enc.Encode(struct {
			OK bool `json:"ok"`
			attest.Reconciliation
			LogName string `json:"log_name"`
			LogSize int64  `json:"log_size"`
		}{rec.OK(), rec, logName, res.Tree.N})
	} else {
		fmt.Fprintf(stdout, "✓ log: %s, size %d, every entry and tile verified under the checkpoint\n", attest.LogLabel(logName), res.Tree.N)
		rec.WriteText(stdout)
	}
	if !rec.OK() {
		return 1
	}
	return 0
}
