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
	if len(f.logs) > 1 && (opts.Key != "" || f.logNameSet) {
		return fail(stderr, usagef("several --log need --manifest FILE without --key or --log-name: each log's key is the manifest's under its checkpoint's origin"))
	}
	if issuer == "" {
		for _, l := range f.logs {
			if !strings.HasPrefix(l, "https://") && !strings.HasPrefix(l, "http://") {
				return fail(stderr, usagef("audit reconcile needs --issuer URL when --log is a directory"))
			}
			i := strings.TrimSuffix(strings.TrimSuffix(l, "/"), "/v1/audit")
			if issuer != "" && i != issuer {
				return fail(stderr, usagef("the --log URLs are of %s and %s: give --issuer URL, the issuer whose logs they are", issuer, i))
			}
			issuer = i
		}
	}
	var logs []attest.AuditLog
	for _, l := range f.logs {
		log, err := f.openLog(l)
		if err != nil {
			return fail(stderr, err)
		}
		logs = append(logs, log)
	}

	sessions, skipped, err := attest.ReadCloudTrail(trails, issuer, lim)
	if err != nil {
		return fail(stderr, err)
	}
	// Each log is verified, then named by its checkpoint's origin; each
	// session is reconciled with the log its tag names.
	want := attest.WantedIndexes(sessions)
	byLog := map[string]map[int64][]byte{}
	type verified struct {
		Name string `json:"log_name"`
		Size int64  `json:"log_size"`
	}
	var done []verified
	for k, log := range logs {
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
			if len(logs) > 1 {
				fmt.Fprintf(stdout, "--log %s:\n", f.logs[k])
			}
			report(stdout, res.Report, f.json)
			return 1
		}
		name, _, err := attest.CheckpointLogName(res.Checkpoint, opts.ManifestKey, issuer)
		if err != nil {
			return fail(stderr, fmt.Errorf("--log %s is not a log of --issuer %s: %w", f.logs[k], issuer, err))
		}
		if _, dup := byLog[name]; dup {
			return fail(stderr, usagef("two --log are %s: give each log once", attest.LogLabel(name)))
		}
		byLog[name] = entries
		done = append(done, verified{name, res.Tree.N})
	}
	rec := attest.Reconcile(sessions, byLog, skew)
	rec.Skipped = skipped
	if f.json {
		enc := json.NewEncoder(stdout)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		enc.Encode(struct {
			OK bool `json:"ok"`
			attest.Reconciliation
			Logs []verified `json:"logs"`
		}{rec.OK(), rec, done})
	} else {
		for _, v := range done {
			fmt.Fprintf(stdout, "✓ log: %s, size %d, every entry and tile verified under the checkpoint\n", attest.LogLabel(v.Name), v.Size)
		}
		rec.WriteText(stdout)
	}
	if !rec.OK() {
		return 1
	}
	return 0
}
