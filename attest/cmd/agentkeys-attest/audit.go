package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/agentkeys/broker/attest"
	"github.com/agentkeys/broker/shared/auditlog"
	"github.com/agentkeys/broker/shared/cliflag"
	"github.com/agentkeys/broker/shared/manifest"
	"github.com/agentkeys/broker/shared/tlogproof"
)

const auditUsage = `Usage:
    agentkeys-attest audit verify --log URL|DIR --key VKEY [--witness VKEY]... [--since FILE] [--jwt FILE] [--json]
    agentkeys-attest audit verify --log URL|DIR --manifest FILE [--log-name NAME] [--witness VKEY]... […]
    agentkeys-attest audit verify --proof FILE --jwt FILE --key VKEY [--witness VKEY]... [--log URL|DIR]
    agentkeys-attest audit export DIR --log URL
    agentkeys-attest audit reconcile --log URL|DIR --key VKEY|--manifest FILE [--witness VKEY]... [--issuer URL] --cloudtrail PATH... [--skew D] [--json]
    agentkeys-attest audit reconcile --log URL|DIR --log URL|DIR... --manifest FILE [--witness VKEY]... --issuer URL --cloudtrail PATH... […]

verify reads the audit log (over HTTP from the issuer's /v1/audit/ tiles, or a
directory written by export), checks the checkpoint's signature with --key and
a cosignature from every --witness, recomputes the Merkle tree from every entry
and compares its root with the checkpoint's, and checks that every hash tile
the log serves is the one the entries give. It exits 1 naming the first entry
that was altered, deleted or reordered.

    --log URL|DIR      The log: https://broker.example.com (/v1/audit/ is
                       appended to a bare origin) or an exported directory.
    --key VKEY         The log's note verifier key: the manifest's
                       checkpoint_verifier_key for the default log, or
                       that key under the name ORIGIN/NAME for the log
                       named NAME (GET /v1/audit/verifier-key serves it,
                       but take it from a verified manifest).
    --manifest FILE    A key manifest that verify accepted: --key must then
                       be a key of one of its enclave's logs; without --key
                       the key is the manifest's for the log the
                       checkpoint's origin names (or --log-name names).
    --log-name NAME    With --manifest, the log to verify: the host's
                       --audit-log-name ("" or absent: the checkpoint's).
    --witness VKEY     A witness's cosignature/v1 verifier key; repeatable.
                       Each must have cosigned the checkpoint.
    --since FILE       A checkpoint saved by an earlier run: the log must be
                       consistent with it (no fork, no rollback). On success
                       the new checkpoint is written to FILE. A missing FILE
                       is created (trust on first use).
    --jwt FILE         A JWT the issuer minted: its jti (the log entry id:
                       INDEX, or NAME/INDEX for the log named NAME) must
                       name this log (known from --manifest, else from the
                       JWT's iss) and an entry in it, proven under the
                       checkpoint, that records the JWT.
    --proof FILE       A saved tlog-proof (GET /v1/audit/proof/INDEX) for
                       --jwt: checked offline; with --log, the entry it proves
                       is read from the log and hashed.
    --timeout D        Per-request timeout (default 30s).
    --max-body N       Largest response read (default 16842240: a full bundle).
    --json             Print one JSON object instead of the report.

A progress bar is drawn on stderr when it is a terminal.

export downloads the checkpoint, every entry bundle and every hash tile into
DIR (paths as on the server) for verify --log DIR.

reconcile verifies the log as verify does, then reads CloudTrail logs (files
{"Records":[...]}, .json or .json.gz, or directories of them, as aws s3 sync
of the trail bucket leaves them) and checks every successful STS
AssumeRoleWithWebIdentity call for the issuer: its agentkeys_log_index
principal tag (the entry id: INDEX, or NAME/INDEX in the log named NAME) must
name an oidc_jwt entry of the log verified, of the wallet in its
agentkeys_user_wallet tag, and the call's eventTime must be within the entry's
[time - skew, exp + skew]. The log's name is its checkpoint's origin relative
to the issuer's default log (HOST/PATH/audit). It prints one line per session
that does not (missing_tag, other_log: the tag names another log of the
issuer, reconcile it with that log; unknown_index, wrong_wallet,
time_out_of_range) and a summary, and exits 0 only when every session matches.
--log may be given once per log of the issuer (with --manifest, which gives
each log's key by its checkpoint's origin): each session is then reconciled
with the log its tag names, and other_log means a log not given.

    --cloudtrail PATH  A CloudTrail log file or directory; repeatable, and
                       further paths may follow it.
    --issuer URL       The issuer whose sessions to check (default: --log
                       when it is a URL).
    --skew D           Clock skew allowed each side (default 5m0s).
    --max-file N       Largest CloudTrail file, decompressed (default 268435456).
    --max-files N      Most CloudTrail files read (default 100000).
`

func audit(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		return fail(stderr, usagef("audit: missing command (verify, export or reconcile)"))
	}
	switch cmd, args := args[0], args[1:]; cmd {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, auditUsage)
		return 0
	case "verify":
		return auditVerify(ctx, args, stdout, stderr)
	case "export":
		return auditExport(ctx, args, stdout, stderr)
	case "reconcile":
		return auditReconcile(ctx, args, stdout, stderr)
	default:
		return fail(stderr, usagef("audit: unknown command %q (verify, export or reconcile)", cmd))
	}
}

type auditFlags struct {
	log, key, since, jwt, proof string
	logs                        []string // every --log, for reconcile (log is the last)
	manifest, logName           string
	logNameSet                  bool
	cmd                         string // verify or reconcile, for messages
	witnesses                   []string
	timeout                     time.Duration
	maxBody                     int64
	json                        bool
}

func (f *auditFlags) register(fs *flag.FlagSet) {
	fs.Func("log", "", func(s string) error { f.log, f.logs = s, append(f.logs, s); return nil })
	fs.StringVar(&f.key, "key", "", "")
	fs.StringVar(&f.manifest, "manifest", "", "")
	fs.Func("log-name", "", func(s string) error { f.logName, f.logNameSet = s, true; return nil })
	fs.Func("witness", "", func(s string) error { f.witnesses = append(f.witnesses, s); return nil })
	fs.StringVar(&f.since, "since", "", "")
	fs.StringVar(&f.jwt, "jwt", "", "")
	fs.StringVar(&f.proof, "proof", "", "")
	fs.DurationVar(&f.timeout, "timeout", 30*time.Second, "")
	fs.Int64Var(&f.maxBody, "max-body", attest.DefaultAuditMaxBody, "")
	fs.BoolVar(&f.json, "json", false, "")
}

func parseAuditFlags(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) ([]string, int, bool) {
	fs.SetOutput(io.Discard)
	// Flags may follow the positional DIR of export.
	var pos []string
	for {
		if err := cliflag.Parse(fs, args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprint(stdout, auditUsage)
				return nil, 0, false
			}
			return nil, fail(stderr, usageError{err.Error()}), false
		}
		if fs.NArg() == 0 {
			return pos, 0, true
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// auditOptions is the key the log is checked with, from --key, --manifest
// and --log-name, and the witnesses.
func (f *auditFlags) auditOptions() (attest.AuditOptions, error) {
	opts := attest.AuditOptions{Key: strings.TrimSpace(f.key), Witnesses: f.witnesses}
	if f.manifest == "" {
		if f.logNameSet {
			return opts, usagef("--log-name needs --manifest FILE: the manifest whose key the named log is signed with")
		}
		if opts.Key == "" {
			return opts, usagef("audit %s needs --key VKEY (the manifest's checkpoint_verifier_key) or --manifest FILE", f.cmd)
		}
		return opts, nil
	}
	if f.logNameSet && opts.Key != "" {
		return opts, usagef("give --key or --log-name, not both: --log-name derives the key from --manifest")
	}
	b, err := readFile(f.manifest, manifest.MaxSize)
	if err != nil {
		return opts, err
	}
	m, err := manifest.Parse(b)
	if err != nil {
		return opts, fmt.Errorf("--manifest %s: %w", f.manifest, err)
	}
	opts.ManifestKey = m.CheckpointVerifierKey
	if f.logNameSet {
		if opts.Key, err = auditlog.LogVerifierKey(m.CheckpointVerifierKey, f.logName); err != nil {
			return opts, usagef("--log-name %q: %v", f.logName, err)
		}
	}
	return opts, nil
}

// openLog opens the --log at path (f.log unless reconcile's several).
func (f *auditFlags) openLog(path string) (attest.AuditLog, error) {
	if len(f.logs) > 1 && f.cmd != "reconcile" {
		return nil, usagef("--log is given %d times: only audit reconcile takes several logs", len(f.logs))
	}
	if f.timeout <= 0 || f.maxBody <= 0 {
		return nil, usagef("--timeout and --max-body must be positive")
	}
	if strings.HasPrefix(path, "http://") || strings.HasPrefix(path, "https://") {
		return attest.NewHTTPAuditLog(path, &http.Client{Timeout: f.timeout}, f.maxBody)
	}
	if st, err := os.Stat(path); err != nil || !st.IsDir() {
		return nil, usagef("--log %q is neither an http(s) URL nor a directory", path)
	}
	return attest.NewDirAuditLog(path), nil
}

func auditVerify(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := auditFlags{cmd: "verify"}
	fs := flag.NewFlagSet("audit verify", flag.ContinueOnError)
	f.register(fs)
	pos, code, ok := parseAuditFlags(fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		return fail(stderr, usagef("audit verify: unexpected argument %q", pos[0]))
	}
	opts, err := f.auditOptions()
	if err != nil {
		return fail(stderr, err)
	}
	if len(f.logs) > 1 {
		return fail(stderr, usagef("audit verify takes one --log, not %d: verify each log on its own", len(f.logs)))
	}
	if f.proof == "" && f.log == "" {
		return fail(stderr, usagef("audit verify needs --log URL|DIR (or --proof FILE --jwt FILE)"))
	}
	if f.proof != "" && f.jwt == "" {
		return fail(stderr, usagef("--proof needs --jwt FILE: the token the proof is for"))
	}
	if f.proof != "" && f.since != "" {
		return fail(stderr, usagef("--since checks a whole log: do not combine it with --proof"))
	}
	if f.jwt != "" {
		b, err := readFile(f.jwt, 64<<10)
		if err != nil {
			return fail(stderr, err)
		}
		opts.JWT = strings.TrimSpace(string(b))
	}
	var log attest.AuditLog
	if f.log != "" {
		var err error
		if log, err = f.openLog(f.log); err != nil {
			return fail(stderr, err)
		}
	}

	var r attest.Report
	if f.proof != "" {
		proof, err := readFile(f.proof, tlogproof.MaxSize)
		if err != nil {
			return fail(stderr, err)
		}
		if log != nil {
			r = attest.VerifyAuditProofFromLog(ctx, proof, log, opts)
		} else {
			r = attest.VerifyAuditProof(proof, nil, opts)
		}
	} else {
		var saved []byte
		if f.since != "" {
			b, err := readFile(f.since, tlogproof.MaxSize)
			switch {
			case errors.Is(err, os.ErrNotExist):
			case err != nil:
				return fail(stderr, err)
			default:
				saved = b
			}
			opts.Since = saved
		}
		bar := newProgressBar(stderr)
		opts.Progress = bar.update
		res := attest.VerifyAuditLog(ctx, log, opts)
		bar.done()
		r = res.Report
		if f.since != "" && res.OK() {
			if saved == nil {
				r.Checks = append(r.Checks, attest.Check{Name: "since", Status: attest.StatusWarn,
					Detail: fmt.Sprintf("%s did not exist: nothing to be consistent with; saved this checkpoint (trust on first use)", f.since)})
			}
			if err := writeAtomic(f.since, res.Checkpoint); err != nil {
				return fail(stderr, fmt.Errorf("failed to save the checkpoint to --since: %w", err))
			}
		}
	}
	return report(stdout, r, f.json)
}

func auditExport(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := auditFlags{cmd: "export"}
	fs := flag.NewFlagSet("audit export", flag.ContinueOnError)
	f.register(fs)
	pos, code, ok := parseAuditFlags(fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return fail(stderr, usagef("audit export: want exactly one directory"))
	}
	if !strings.HasPrefix(f.log, "http://") && !strings.HasPrefix(f.log, "https://") {
		return fail(stderr, usagef("audit export needs --log URL: the issuer (https://broker.example.com)"))
	}
	log, err := f.openLog(f.log)
	if err != nil {
		return fail(stderr, err)
	}
	bar := newProgressBar(stderr)
	tree, err := attest.ExportAuditLog(ctx, log, pos[0], bar.update)
	bar.done()
	if err != nil {
		return fail(stderr, err)
	}
	fmt.Fprintf(stdout, "exported %d entries to %s; check them with: agentkeys-attest audit verify --log %s --key VKEY\n", tree.N, pos[0], pos[0])
	return 0
}

// writeAtomic replaces path with b.
func writeAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".checkpoint-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// progressBar draws on stderr only when stderr is a terminal.
type progressBar struct {
	w    io.Writer
	on   bool
	last time.Time
}

func newProgressBar(stderr io.Writer) *progressBar {
	f, ok := stderr.(*os.File)
	on := false
	if ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			on = true
		}
	}
	return &progressBar{w: stderr, on: on}
}

func (p *progressBar) update(done, total int64) {
	if !p.on || total == 0 || (done < total && time.Since(p.last) < 100*time.Millisecond) {
		return
	}
	p.last = time.Now()
	const width = 40
	n := int(done * width / total)
	fmt.Fprintf(p.w, "\r[%s%s] %d/%d tiles", strings.Repeat("=", n), strings.Repeat(" ", width-n), done, total)
}

func (p *progressBar) done() {
	if p.on && !p.last.IsZero() {
		fmt.Fprintln(p.w)
	}
}
