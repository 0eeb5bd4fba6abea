// Command agentkeys-attest is the auditor's tool for an AgentKeys broker: it
// verifies the enclave's attestation document, the key manifest the document
// binds, and that the JWKS relying parties fetch holds exactly the attested
// keys — against a live issuer or from saved files.
//
//	$ agentkeys-attest verify --issuer https://broker.example.com --pcr0 … --pcr1 … --pcr2 …
//	$ agentkeys-attest verify --issuer http://127.0.0.1:8091 --root .agentkeys-dev/simulated-root.pem
//	$ agentkeys-attest verify --document doc.b64 --manifest manifest.json --jwks jwks.json --at document
//
// Run agentkeys-attest -h for the flags; README.md repeats them. The checks are
// those of package github.com/agentkeys/broker/attest.
package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/agentkeys/broker/attest"
	"github.com/agentkeys/broker/shared/cliflag"
	"github.com/agentkeys/broker/shared/jwk"
	"github.com/agentkeys/broker/shared/manifest"
)

const usage = `Usage:
    agentkeys-attest verify --issuer URL [flags]
    agentkeys-attest verify --document FILE --manifest FILE [--jwks FILE] [flags]
    agentkeys-attest verify --document FILE --document-only [flags]
    agentkeys-attest watch --issuer URL --manifest-from URL|FILE [flags]
    agentkeys-attest pcrs FILE.eif
    agentkeys-attest audit verify --log URL|DIR --key VKEY [flags]
    agentkeys-attest audit export DIR --log URL
    agentkeys-attest audit reconcile --log URL|DIR --key VKEY --cloudtrail PATH... [flags]

verify checks an attestation document (COSE signature, chain to the AWS Nitro
root or --root, age, nonce, PCRs, not debug mode), that its user_data is the
SHA-256 of the key manifest, that the manifest validates, that the JWKS holds
exactly the manifest's keys, and that discovery, --jwt and the manifest name the
same issuer. It prints one line per check and exits 0 only if all pass.

Source (one of):
    --issuer URL         Live: fetch discovery, the JWKS it names, and an
                         attestation document for a fresh random nonce; and
                         check that the certificate served at the issuer URL
                         carries the TLS key the manifest names (issuer tls
                         key, when the enclave serves the issuer origin).
      --api-url URL      Where the attestation document is fetched: the API
                         origin, when it differs from the issuer (default:
                         the issuer).
    --document FILE      Offline: a saved document, raw CBOR or base64.
      --manifest FILE    The manifest bytes the document binds.
      --jwks FILE        A saved JWKS to compare with the manifest.
      --document-only    Check the document alone (no manifest): for a Nitro
                         document that is not agentkeys'.

Trust and time:
    --root PEM           Trust this root (e.g. .agentkeys-dev/simulated-root.pem)
                         instead of the embedded AWS Nitro Enclaves root G1.
    --at TIME            Verify at TIME (RFC 3339), or "document" for the
                         document's own timestamp (archived documents; no age
                         limit). Default: now.
    --max-age D          Oldest acceptable document at the verification time
                         (default 5m; 0: no limit).
    --max-skew D         How far in the future a timestamp may be (default 1m).

Pins:
    --pcr0, --pcr1, --pcr2, --pcr3, --pcr8 HEX
                         Pin a PCR (48 bytes of hex): it must be present and equal.
    --measurements FILE  Pin the PCRs of nitro-cli build-enclave / describe-eif
                         JSON output.
    --allow-debug        Accept a debug-mode enclave (PCR0/1/2 all zero) with a
                         warning.

Other:
    --jwt FILE           A JWT the issuer signed: its ES256 signature must verify
                         with a manifest key and its iss name the issuer.
    --json               Print one JSON object instead of the report.
    --timeout D          Per-request timeout, live (default 10s).
    --max-body N         Largest response body read, live (default 1048576).

watch fetches discovery and the JWKS as a relying party would, every
--interval, and raises an alarm (a JSON log line on stderr, the gauge
agentkeys_attest_watch_alarm{reason} = 1) when the JWKS holds a key no verified
manifest lists (unlisted_key), discovery's issuer or jwks_uri changes
(issuer_changed, jwks_uri_changed), the JWKS is served with Cache-Control
no-cache, no-store or max-age=0 (jwks_no_cache), no manifest verifies this round
(manifest), a fetch fails (fetch), or the issuer URL is served with a TLS key
that no verified manifest with issuer_origin enclave names (issuer_tls_key).

    --issuer URL           The issuer relying parties use.
    --manifest-from URL    Every round, fetch URL/.well-known/attestation for a
                           fresh nonce and verify it (trust, pins and --max-age
                           as for verify); its manifest's keys are known keys.
    --manifest-from FILE   Or: a manifest you verified before (verify --document
                           … --manifest FILE), trusted as given.
    --interval D           Time between rounds (default 1m).
    --once                 One round; exit 1 if it raised an alarm.
    --metrics-listen ADDR  Serve Prometheus metrics on ADDR/metrics.
    --root, --max-age, --max-skew, --pcrN, --measurements, --allow-debug,
    --timeout, --max-body  As for verify.

pcrs computes an Enclave Image File's PCR0, PCR1, PCR2 (and PCR8 when signed)
from the file itself and prints them as nitro-cli describe-eif does; give the
output to --measurements.

audit verifies the audit log: checkpoint and witness cosignatures, every entry
against the tree, consistency with a saved checkpoint, the inclusion of a JWT,
or a saved tlog-proof; audit export saves the log for offline checks; audit
reconcile checks CloudTrail's STS sessions against the verified log. Run
agentkeys-attest audit -h for its flags.

Exit status: 0 if every check passes (verify) or no alarm was raised (watch
--once), 1 if one fails, 2 on a usage error.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// usageError is a mistake in the command line.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(args) == 0 {
		return fail(stderr, usagef("missing command"))
	}
	switch cmd, args := args[0], args[1:]; cmd {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	case "verify":
		return verify(ctx, args, stdout, stderr)
	case "watch":
		return watch(ctx, args, stdout, stderr)
	case "pcrs":
		return pcrs(args, stdout, stderr)
	case "audit":
		return audit(ctx, args, stdout, stderr)
	default:
		return fail(stderr, usagef("unknown command %q", cmd))
	}
}

func fail(stderr io.Writer, err error) int {
	fmt.Fprintf(stderr, "agentkeys-attest: %v\n", err)
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintln(stderr, "hint: run: agentkeys-attest -h")
		return 2
	}
	return 1
}

// trustFlags are the flags verify and watch share: what to trust, what to pin,
// and the limits of live requests.
type trustFlags struct {
	issuer, root, measurements string
	allowDebug                 bool
	maxAge, maxSkew, timeout   time.Duration
	maxBody                    int64
	pcrs                       map[uint]string
}

func (f *trustFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.issuer, "issuer", "", "")
	fs.StringVar(&f.root, "root", "", "")
	fs.DurationVar(&f.maxAge, "max-age", 5*time.Minute, "")
	fs.DurationVar(&f.maxSkew, "max-skew", time.Minute, "")
	fs.StringVar(&f.measurements, "measurements", "", "")
	fs.BoolVar(&f.allowDebug, "allow-debug", false, "")
	fs.DurationVar(&f.timeout, "timeout", 10*time.Second, "")
	fs.Int64Var(&f.maxBody, "max-body", 1<<20, "")
	f.pcrs = map[uint]string{}
	for _, i := range []uint{0, 1, 2, 3, 8} {
		fs.Func(fmt.Sprintf("pcr%d", i), "", func(s string) error { f.pcrs[i] = s; return nil })
	}
}

// options returns the document options of the flags (without the time).
func (f *trustFlags) options() (attest.DocumentOptions, error) {
	opts := attest.DocumentOptions{MaxAge: f.maxAge, MaxSkew: f.maxSkew, AllowDebug: f.allowDebug}
	if f.maxAge < 0 || f.maxSkew < 0 || f.timeout <= 0 || f.maxBody <= 0 {
		return opts, usagef("--max-age and --max-skew must not be negative, --timeout and --max-body must be positive")
	}
	if f.root != "" {
		b, err := readFile(f.root, 64<<10)
		if err != nil {
			return opts, err
		}
		c, err := attest.ParseRootPEM(b)
		if err != nil {
			return opts, fmt.Errorf("--root %s: %w", f.root, err)
		}
		opts.Roots = x509.NewCertPool()
		opts.Roots.AddCert(c)
		opts.RootName = fmt.Sprintf("the root of %s (%s)", f.root, c.Subject.CommonName)
	}
	pins, err := f.pins()
	if err != nil {
		return opts, err
	}
	opts.PCRs = pins
	return opts, nil
}

func (f *trustFlags) live() attest.LiveOptions {
	return attest.LiveOptions{Client: &http.Client{Timeout: f.timeout}, MaxBody: f.maxBody}
}

// parseFlags parses args; ok is false when the command should exit with code.
func parseFlags(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (code int, ok bool) {
	fs.SetOutput(io.Discard)
	if err := cliflag.Parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usage)
			return 0, false
		}
		return fail(stderr, usageError{err.Error()}), false
	}
	if fs.NArg() > 0 {
		return fail(stderr, usagef("%s: unexpected argument %q", fs.Name(), fs.Arg(0))), false
	}
	return 0, true
}

// verifyFlags are the flags of verify.
type verifyFlags struct {
	trustFlags
	document, manifest, jwks, jwt, at, apiURL string
	documentOnly, json                        bool
}

func verify(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var f verifyFlags
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	f.register(fs)
	fs.StringVar(&f.document, "document", "", "")
	fs.StringVar(&f.manifest, "manifest", "", "")
	fs.StringVar(&f.jwks, "jwks", "", "")
	fs.BoolVar(&f.documentOnly, "document-only", false, "")
	fs.StringVar(&f.jwt, "jwt", "", "")
	fs.StringVar(&f.at, "at", "", "")
	fs.StringVar(&f.apiURL, "api-url", "", "")
	fs.BoolVar(&f.json, "json", false, "")
	if code, ok := parseFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	r, err := f.run(ctx)
	if err != nil {
		return fail(stderr, err)
	}
	return report(stdout, r, f.json)
}

// run checks the flags, reads the files and verifies. A usage or file error is
// returned; a verification failure is in the report.
func (f *verifyFlags) run(ctx context.Context) (attest.Report, error) {
	var r attest.Report
	live := f.issuer != ""
	switch {
	case live && f.document != "":
		return r, usagef("give --issuer (live) or --document (offline), not both")
	case !live && f.document == "":
		return r, usagef("give --issuer URL to verify a live issuer, or --document FILE to verify a saved document")
	case live && (f.manifest != "" || f.jwks != "" || f.documentOnly):
		return r, usagef("--manifest, --jwks and --document-only are for offline verification (--document); live, they are fetched")
	case !live && f.manifest == "" && !f.documentOnly:
		return r, usagef("offline verification needs --manifest FILE, the manifest the document binds (or --document-only to check the document alone)")
	case f.documentOnly && (f.manifest != "" || f.jwks != "" || f.jwt != ""):
		return r, usagef("--document-only checks no manifest: drop --manifest, --jwks and --jwt")
	}
	opts, err := f.options()
	if err != nil {
		return r, err
	}
	switch f.at {
	case "":
	case "document":
		opts.AtDocument = true
	default:
		at, err := time.Parse(time.RFC3339, f.at)
		if err != nil {
			return r, usagef("--at %q is neither an RFC 3339 time (2026-01-02T03:04:05Z) nor \"document\"", f.at)
		}
		opts.At = at
	}
	if live && opts.AtDocument {
		return r, usagef("--at document is for archived documents; live, the document is verified now")
	}
	var token string
	if f.jwt != "" {
		b, err := readFile(f.jwt, 64<<10)
		if err != nil {
			return r, err
		}
		token = strings.TrimSpace(string(b))
	}

	if live {
		lo := f.live()
		lo.JWT, lo.APIURL = token, f.apiURL
		return attest.VerifyLive(ctx, f.issuer, opts, lo), nil
	}
	in := attest.Offline{JWT: token}
	b, err := readFile(f.document, 2*attest.MaxDocumentSize)
	if err != nil {
		return r, err
	}
	if in.Document, err = attest.DecodeDocumentFile(b); err != nil {
		return r, fmt.Errorf("--document %s: %w", f.document, err)
	}
	if f.manifest != "" {
		if in.Manifest, err = readFile(f.manifest, manifest.MaxSize); err != nil {
			return r, err
		}
	}
	if f.jwks != "" {
		b, err := readFile(f.jwks, 1<<20)
		if err != nil {
			return r, err
		}
		var set jwk.Set
		if err := json.Unmarshal(b, &set); err != nil {
			return r, fmt.Errorf("--jwks %s is not a JWK Set: %w", f.jwks, err)
		}
		in.JWKS = &set
	}
	return attest.VerifyOffline(in, opts), nil
}

// pins merges --measurements and the --pcrN flags; a PCR given twice must
// have the same value.
func (f *trustFlags) pins() (map[uint][]byte, error) {
	pins := map[uint][]byte{}
	if f.measurements != "" {
		b, err := readFile(f.measurements, 64<<10)
		if err != nil {
			return nil, err
		}
		if pins, err = attest.ParseMeasurements(b); err != nil {
			return nil, usagef("--measurements %s: %v", f.measurements, err)
		}
	}
	for i, s := range f.pcrs {
		v, err := attest.ParsePCR(s)
		if err != nil {
			return nil, usagef("--pcr%d: %v", i, err)
		}
		if old, ok := pins[i]; ok && string(old) != string(v) {
			return nil, usagef("--pcr%d differs from PCR%d in --measurements", i, i)
		}
		pins[i] = v
	}
	return pins, nil
}

// readFile reads at most max bytes of a file named by a flag.
func readFile(path string, max int64) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("failed to read %s: %w", path, err)
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, max+1))
	if err != nil {
		return nil, fmt.Errorf("failed to read %s: %w", path, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, max)
	}
	return b, nil
}

// report prints r, as text or (asJSON) one JSON object, and returns the exit
// status: 0 only if every check passed.
func report(stdout io.Writer, r attest.Report, asJSON bool) int {
	if asJSON {
		out := struct {
			OK           bool           `json:"ok"`
			Checks       []attest.Check `json:"checks"`
			FirstFailure *attest.Check  `json:"first_failure"`
		}{r.OK(), r.Checks, r.FirstFailure()}
		enc := json.NewEncoder(stdout)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		enc.Encode(out)
	} else {
		r.WriteText(stdout)
	}
	if !r.OK() {
		return 1
	}
	return 0
}
