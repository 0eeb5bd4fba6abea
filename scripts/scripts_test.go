package scripts_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// result is what one script run produced.
type result struct {
	code           int
	stdout, stderr string
}

// run runs scripts/NAME with args, stdin empty (never a terminal).
func run(t *testing.T, env []string, name string, args ...string) result {
	t.Helper()
	cmd := exec.Command("./"+name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader("")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return result{code, stdout.String(), stderr.String()}
}

func mustRun(t *testing.T, env []string, name string, args ...string) result {
	t.Helper()
	r := run(t, env, name, args...)
	if r.code != 0 {
		t.Fatalf("%s %q: exit %d\nstdout:\n%s\nstderr:\n%s", name, args, r.code, r.stdout, r.stderr)
	}
	return r
}

// need skips (or, when CI is set, fails) the test if tool is missing.
func need(t *testing.T, tool string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not installed, and CI is set: the CI image must install it (Debian package %q)", tool, tool)
		}
		t.Skipf("%s is not installed; install it (apt-get install -y %s) to run this test", tool, tool)
	}
}

var scripts = []string{"setup-host.sh", "run-enclave.sh", "kms-policy.sh"}

func TestHelp(t *testing.T) {
	for _, s := range scripts {
		t.Run(s, func(t *testing.T) {
			for _, h := range []string{"--help", "-h"} {
				r := mustRun(t, nil, s, h)
				if !strings.HasPrefix(r.stdout, "Usage: "+s) || r.stderr != "" {
					t.Fatalf("%s %s: stdout %q, stderr %q", s, h, r.stdout, r.stderr)
				}
			}
			// Every flag the script parses is in its help.
			src, err := os.ReadFile(s)
			if err != nil {
				t.Fatal(err)
			}
			help := mustRun(t, nil, s, "--help").stdout
			flags := regexp.MustCompile(`--[a-z][a-z-]+`).FindAllString(strings.Join(caseLines(string(src)), "\n"), -1)
			slices.Sort(flags)
			flags = slices.Compact(flags)
			if len(flags) < 3 {
				t.Fatalf("found only %q in the flag parser; the test's pattern is stale", flags)
			}
			for _, f := range flags {
				if !strings.Contains(help, f) {
					t.Errorf("%s parses %s but --help does not mention it", s, f)
				}
			}
		})
	}
}

// caseLines returns the case patterns of the script's flag loop.
func caseLines(src string) []string {
	var out []string
	in := false
	for _, l := range strings.Split(src, "\n") {
		if strings.HasPrefix(l, "while [ $# -gt 0 ]") {
			in = true
		}
		if in && strings.HasPrefix(l, "done") {
			break
		}
		if in && strings.Contains(l, ")") && strings.HasPrefix(strings.TrimSpace(l), "-") {
			out = append(out, l[:strings.Index(l, ")")])
		}
	}
	return out
}

func TestBadFlags(t *testing.T) {
	m := "testdata/measurements.json"
	role, admin := "arn:aws:iam::123456789012:role/agentkeys-host", "arn:aws:iam::123456789012:role/key-admin"
	setup := func(extra ...string) []string {
		return append([]string{"--non-interactive", "--dry-run", "--region", "us-east-1", "--issuer", "https://issuer.example.com"}, extra...)
	}
	policy := func(extra ...string) []string {
		return append([]string{"--non-interactive", "--measurements", m, "--role-arn", role, "--admin-arn", admin}, extra...)
	}
	tests := []struct {
		script string
		args   []string
		want   string
	}{
		{"setup-host.sh", []string{"--bogus"}, "unknown flag --bogus"},
		{"setup-host.sh", []string{"--region"}, "flag --region needs a value"},
		{"setup-host.sh", []string{"--region=us-east-1"}, "--flag value"},
		{"setup-host.sh", []string{"--non-interactive", "--issuer", "https://a.example"}, "flag --region is required"},
		{"setup-host.sh", []string{"--non-interactive", "--region", "us-east-1"}, "flag --issuer is required"},
		{"setup-host.sh", setup("--region", "US East"), "flag --region"},
		{"setup-host.sh", setup("--issuer", "http://issuer.example.com"), "flag --issuer"},
		{"setup-host.sh", setup("--issuer", "https://issuer.example.com/?x=1"), "flag --issuer"},
		{"setup-host.sh", setup("--domain", "Bad_Domain"), "flag --domain"},
		{"setup-host.sh", setup("--cpu-count", "two"), "flag --cpu-count"},
		{"setup-host.sh", setup("--cpu-count", "0"), "flag --cpu-count"},
		{"setup-host.sh", setup("--memory-mib", "12"), "flag --memory-mib"},
		{"setup-host.sh", setup("--enclave-cid", "3"), "flag --enclave-cid"},
		{"setup-host.sh", setup("--kms-proxy-port", "70000"), "flag --kms-proxy-port"},
		{"setup-host.sh", setup("--sts-proxy-port", "8000"), "--sts-proxy-port must differ"},
		{"setup-host.sh", setup("--prefix", "relative/dir"), "flag --prefix"},
		{"setup-host.sh", setup("--eif-path", "image.eif"), "absolute"},
		{"run-enclave.sh", []string{"--nope"}, "unknown flag --nope"},
		{"run-enclave.sh", []string{"--dry-run", "--memory", "lots"}, "flag --memory"},
		{"run-enclave.sh", []string{"--dry-run", "--cpu-count"}, "flag --cpu-count needs a value"},
		{"run-enclave.sh", []string{"--dry-run", "--enclave-cid", "2"}, "flag --enclave-cid"},
		{"run-enclave.sh", []string{"--dry-run", "--enclave-name", "a b"}, "flag --enclave-name"},
		{"kms-policy.sh", []string{"--what"}, "unknown flag --what"},
		{"kms-policy.sh", []string{"--non-interactive", "--role-arn", role, "--admin-arn", admin}, "flag --measurements is required"},
		{"kms-policy.sh", []string{"--non-interactive", "--measurements", m, "--admin-arn", admin}, "flag --role-arn is required"},
		{"kms-policy.sh", []string{"--non-interactive", "--measurements", m, "--role-arn", role}, "flag --admin-arn is required"},
		{"kms-policy.sh", policy("--role-arn", "arn:aws:iam::123456789012:instance-profile/x"), "flag --role-arn"},
		{"kms-policy.sh", policy("--admin-arn", "alice"), "flag --admin-arn"},
		{"kms-policy.sh", policy("--pcrs", "0,,1"), "flag --pcrs"},
		{"kms-policy.sh", policy("--pcrs", "1,2"), "flag --pcrs must include 0"},
		{"kms-policy.sh", policy("--pcrs", "0,3"), "flag --pcrs: PCR 3"},
		{"kms-policy.sh", policy("--dry-run"), "flag --dry-run only means something with --output"},
	}
	for _, tt := range tests {
		t.Run(tt.script+" "+strings.Join(tt.args, " "), func(t *testing.T) {
			r := run(t, nil, tt.script, tt.args...)
			if r.code != 2 {
				t.Fatalf("exit %d, want 2\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
			}
			if !strings.Contains(r.stderr, tt.want) {
				t.Fatalf("stderr %q does not say %q", r.stderr, tt.want)
			}
			if r.stdout != "" {
				t.Fatalf("stdout %q on a usage error", r.stdout)
			}
		})
	}
}

// The files setup-host.sh manages, relative to --prefix.
var hostFiles = []string{
	"/etc/nitro_enclaves/allocator.yaml",
	"/etc/nitro_enclaves/vsock-proxy.yaml",
	"/etc/systemd/system/agentkeys-vsock-proxy-kms.service",
	"/etc/systemd/system/agentkeys-vsock-proxy-sts.service",
	"/usr/local/lib/agentkeys/run-enclave.sh",
	"/etc/systemd/system/agentkeys-enclave.service",
	"/etc/agentkeys/host.env",
	"/etc/systemd/system/agentkeys-host.service",
}

func setupArgs(prefix string, extra ...string) []string {
	return append([]string{"--non-interactive", "--prefix", prefix, "--region", "eu-west-1",
		"--issuer", "https://id.example.org/agents", "--cpu-count", "4", "--memory-mib", "3072"}, extra...)
}

func TestSetupHostDryRun(t *testing.T) {
	for _, fresh := range []bool{true, false} {
		prefix := t.TempDir()
		if fresh {
			prefix = filepath.Join(prefix, "not-yet")
		}
		r := mustRun(t, nil, "setup-host.sh", setupArgs(prefix, "--dry-run")...)
		for _, f := range hostFiles {
			if !strings.Contains(r.stdout, "would write "+f+" ") {
				t.Errorf("the plan does not name %s:\n%s", f, r.stdout)
			}
		}
		for _, want := range []string{"would create /var/lib/agentkeys-host/ (mode 0700)", "skipped (--prefix): useradd", "dry run: nothing was written"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("the plan does not say %q:\n%s", want, r.stdout)
			}
		}
		if fresh {
			if _, err := os.Stat(prefix); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("--dry-run created the prefix directory (%v)", err)
			}
		} else if got := tree(t, prefix); len(got) != 0 {
			t.Fatalf("--dry-run wrote %v", keys(got))
		}
	}
}

func TestSetupHostWrites(t *testing.T) {
	prefix := t.TempDir()
	r := mustRun(t, nil, "setup-host.sh", setupArgs(prefix)...)
	for _, f := range hostFiles {
		if !strings.Contains(r.stdout, "wrote "+f+" ") {
			t.Errorf("stdout does not report writing %s:\n%s", f, r.stdout)
		}
	}
	got := tree(t, prefix)
	want := map[string]struct {
		mode fs.FileMode
		has  []string
	}{
		"/etc/nitro_enclaves/allocator.yaml": {0o644, []string{"\nmemory_mib: 3072\n", "\ncpu_count: 4\n"}},
		"/etc/nitro_enclaves/vsock-proxy.yaml": {0o644, []string{"\nallowlist:\n",
			"\n- {address: kms.eu-west-1.amazonaws.com, port: 443}\n",
			"\n- {address: sts.eu-west-1.amazonaws.com, port: 443}\n"}},
		"/etc/systemd/system/agentkeys-vsock-proxy-kms.service": {0o644, []string{
			"\nExecStart=/usr/bin/vsock-proxy 8000 kms.eu-west-1.amazonaws.com 443 --config /etc/nitro_enclaves/vsock-proxy.yaml\n",
			"\n[Install]\nWantedBy=multi-user.target\n"}},
		"/etc/systemd/system/agentkeys-vsock-proxy-sts.service": {0o644, []string{
			"\nExecStart=/usr/bin/vsock-proxy 8001 sts.eu-west-1.amazonaws.com 443 --config /etc/nitro_enclaves/vsock-proxy.yaml\n"}},
		"/etc/systemd/system/agentkeys-enclave.service": {0o644, []string{
			"\nExecStart=/usr/local/lib/agentkeys/run-enclave.sh --non-interactive --eif-path /opt/agentkeys/agentkeys-enclave.eif --cpu-count 4 --memory 3072 --enclave-cid 16 --enclave-name agentkeys\n",
			"\nExecStop=/usr/bin/nitro-cli terminate-enclave --enclave-name agentkeys\n",
			"\nRequires=nitro-enclaves-allocator.service\n", "\nType=oneshot\n", "\nRemainAfterExit=yes\n"}},
		"/etc/systemd/system/agentkeys-host.service": {0o644, []string{
			"\nUser=agentkeys\n", "\nEnvironmentFile=/etc/agentkeys/host.env\n",
			"\nEnvironmentFile=-/etc/agentkeys/host.local.env\n", "\nExecStart=/usr/local/bin/agentkeys-host\n",
			"\nRequires=agentkeys-enclave.service\n", "\nReadWritePaths=/var/lib/agentkeys-host\n"}},
		"/etc/agentkeys/host.env": {0o640, []string{
			"\nBROKER_OIDC_ISSUER=https://id.example.org/agents\n", "\nBROKER_TLS_DOMAIN=id.example.org\n",
			"\nBROKER_ENCLAVE=vsock:16:5005\n", "\nBROKER_STATE_DIR=/var/lib/agentkeys-host\n", "\nBROKER_AWS_REGION=eu-west-1\n"}},
		"/usr/local/lib/agentkeys/run-enclave.sh": {0o755, nil},
		"/var/lib/agentkeys-host/":                {fs.ModeDir | 0o700, nil},
	}
	for p, w := range want {
		e, ok := got[p]
		if !ok {
			t.Errorf("%s was not written", p)
			continue
		}
		if e.mode != w.mode {
			t.Errorf("%s: mode %v, want %v", p, e.mode, w.mode)
		}
		for _, s := range w.has {
			if !strings.Contains(e.content, s) {
				t.Errorf("%s lacks %q:\n%s", p, s, e.content)
			}
		}
	}
	src, _ := os.ReadFile("run-enclave.sh")
	if got["/usr/local/lib/agentkeys/run-enclave.sh"].content != string(src) {
		t.Error("the installed run-enclave.sh differs from scripts/run-enclave.sh")
	}
	// Only the files above (and their parent directories).
	for p, e := range got {
		if _, ok := want[p]; !ok && !e.mode.IsDir() {
			t.Errorf("unexpected file %s", p)
		}
	}
	// The unit's run-enclave.sh command line parses with the real script.
	unit := got["/etc/systemd/system/agentkeys-enclave.service"].content
	line := regexp.MustCompile(`(?m)^ExecStart=\S+ (.*)$`).FindStringSubmatch(unit)
	r = mustRun(t, nil, "run-enclave.sh", append(strings.Fields(line[1]), "--dry-run")...)
	if !strings.Contains(r.stdout, "nitro-cli run-enclave --eif-path /opt/agentkeys/agentkeys-enclave.eif --cpu-count 4 --memory 3072 --enclave-cid 16") {
		t.Errorf("the unit's command line does not reach nitro-cli as written: %s", r.stdout)
	}
}

func TestSetupHostIdempotent(t *testing.T) {
	prefix := t.TempDir()
	mustRun(t, nil, "setup-host.sh", setupArgs(prefix)...)
	first := tree(t, prefix)
	r := mustRun(t, nil, "setup-host.sh", setupArgs(prefix)...)
	if second := tree(t, prefix); !equalTrees(first, second) {
		t.Fatalf("a second run changed the tree:\n%v", diffTrees(first, second))
	}
	for _, word := range []string{"wrote ", "created ", "daemon-reload", "restart"} {
		if strings.Contains(r.stdout, word) {
			t.Errorf("the second run says %q:\n%s", word, r.stdout)
		}
	}
	// A dry run now has nothing to do.
	r = mustRun(t, nil, "setup-host.sh", setupArgs(prefix, "--dry-run")...)
	if strings.Contains(r.stdout, "would write") || strings.Contains(r.stdout, "would create") {
		t.Errorf("a dry run after a run still plans writes:\n%s", r.stdout)
	}

	// Changing one flag rewrites exactly the files that depend on it.
	mustRun(t, nil, "setup-host.sh", setupArgs(prefix, "--cpu-count", "6")...)
	changed := diffTrees(first, tree(t, prefix))
	wantChanged := []string{"/etc/nitro_enclaves/allocator.yaml", "/etc/systemd/system/agentkeys-enclave.service"}
	if !slices.Equal(changed, wantChanged) {
		t.Fatalf("--cpu-count 6 changed %v, want %v", changed, wantChanged)
	}

	// A file changed by hand is put back; its mode too.
	env := filepath.Join(prefix, "etc/agentkeys/host.env")
	os.WriteFile(env, []byte("BROKER_OIDC_ISSUER=https://evil.example\n"), 0o644)
	r = mustRun(t, nil, "setup-host.sh", setupArgs(prefix, "--cpu-count", "6")...)
	if !strings.Contains(r.stdout, "wrote /etc/agentkeys/host.env (mode 0640)") {
		t.Errorf("the edited host.env was not rewritten:\n%s", r.stdout)
	}
	if fi, err := os.Stat(env); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("host.env mode %v, %v", fi.Mode(), err)
	}
}

func TestSetupHostChinaRegion(t *testing.T) {
	prefix := t.TempDir()
	mustRun(t, nil, "setup-host.sh", "--non-interactive", "--prefix", prefix, "--region", "cn-north-1", "--issuer", "https://id.example.cn")
	b, err := os.ReadFile(filepath.Join(prefix, "etc/nitro_enclaves/vsock-proxy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "{address: kms.cn-north-1.amazonaws.com.cn, port: 443}") {
		t.Fatalf("China regions use amazonaws.com.cn:\n%s", b)
	}
}

// TestSetupHostInteractive answers the prompts on a pseudo-terminal made by
// script(1).
func TestSetupHostInteractive(t *testing.T) {
	need(t, "script")
	prefix := t.TempDir()
	cmd := exec.Command("script", "-qec", "./setup-host.sh --prefix "+prefix, "/dev/null")
	cmd.Stdin = strings.NewReader("ap-south-1\nhttps://keys.example.net\n\ny\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("interactive run: %v\n%s", err, out)
	}
	for _, prompt := range []string{"AWS region", "OIDC issuer URL", "DNS name for HTTPS [keys.example.net]", "Proceed? [y/N]"} {
		if !bytes.Contains(out, []byte(prompt)) {
			t.Errorf("no prompt %q in:\n%s", prompt, out)
		}
	}
	b, err := os.ReadFile(filepath.Join(prefix, "etc/agentkeys/host.env"))
	if err != nil {
		t.Fatalf("no host.env after the interactive run: %v\n%s", err, out)
	}
	for _, want := range []string{"BROKER_AWS_REGION=ap-south-1\n", "BROKER_OIDC_ISSUER=https://keys.example.net\n", "BROKER_TLS_DOMAIN=keys.example.net\n"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("host.env lacks %q:\n%s", want, b)
		}
	}
}

func TestRunEnclaveDryRun(t *testing.T) {
	r := mustRun(t, nil, "run-enclave.sh", "--dry-run", "--eif-path", "/srv/a.eif", "--cpu-count", "4", "--memory", "4096", "--enclave-cid", "20")
	want := "would run: nitro-cli run-enclave --eif-path /srv/a.eif --cpu-count 4 --memory 4096 --enclave-cid 20 --enclave-name agentkeys\n"
	if r.stdout != want {
		t.Fatalf("stdout %q, want %q", r.stdout, want)
	}
	if strings.Contains(r.stderr, "DEBUG") {
		t.Fatalf("a debug warning without --debug-mode: %s", r.stderr)
	}

	r = mustRun(t, nil, "run-enclave.sh", "--dry-run", "--debug-mode")
	if !strings.HasSuffix(strings.TrimSpace(r.stdout), " --debug-mode") {
		t.Fatalf("--debug-mode is not passed on: %s", r.stdout)
	}
	for _, w := range []string{"WARNING: DEBUG MODE", "ALL-ZERO PCRs", "KMS will", "refuse"} {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("the debug warning lacks %q:\n%s", w, r.stderr)
		}
	}
}

// TestRunEnclaveCallsNitroCLI runs the script against a stand-in nitro-cli.
func TestRunEnclaveCallsNitroCLI(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "calls")
	eif := filepath.Join(dir, "a.eif")
	os.WriteFile(eif, []byte("eif"), 0o644)
	fake := `#!/usr/bin/env bash
echo "$*" >>"` + log + `"
if [ "$1" = describe-enclaves ]; then cat "` + dir + `/running" 2>/dev/null || echo '[]'; fi
`
	os.WriteFile(filepath.Join(dir, "nitro-cli"), []byte(fake), 0o755)
	env := []string{"PATH=" + dir + ":" + os.Getenv("PATH")}

	r := mustRun(t, env, "run-enclave.sh", "--non-interactive", "--eif-path", eif)
	calls, _ := os.ReadFile(log)
	want := "describe-enclaves\nrun-enclave --eif-path " + eif + " --cpu-count 2 --memory 2048 --enclave-cid 16 --enclave-name agentkeys\n"
	if string(calls) != want {
		t.Fatalf("nitro-cli calls:\n%s\nwant:\n%s\n(stdout %s)", calls, want, r.stdout)
	}

	// Already running: nothing more is started.
	os.Remove(log)
	os.WriteFile(filepath.Join(dir, "running"), []byte(`[{"EnclaveName": "agentkeys", "EnclaveCID": 16, "State": "RUNNING"}]`), 0o644)
	r = mustRun(t, env, "run-enclave.sh", "--non-interactive", "--eif-path", eif)
	calls, _ = os.ReadFile(log)
	if string(calls) != "describe-enclaves\n" || !strings.Contains(r.stdout, "already running") {
		t.Fatalf("with the enclave running: calls %q, stdout %q", calls, r.stdout)
	}

	// A missing image is an error that names it.
	r = run(t, env, "run-enclave.sh", "--non-interactive", "--eif-path", filepath.Join(dir, "none.eif"))
	if r.code != 1 || !strings.Contains(r.stderr, "none.eif not found") {
		t.Fatalf("missing image: exit %d, stderr %q", r.code, r.stderr)
	}
}

// policyDoc is the subset of an IAM policy document the tests read.
type policyDoc struct {
	Version   string
	Id        string
	Statement []struct {
		Sid       string
		Effect    string
		Principal struct{ AWS string }
		Action    []string
		Resource  string
		Condition map[string]map[string]any
	}
}

func policyFor(t *testing.T, args ...string) policyDoc {
	t.Helper()
	r := mustRun(t, nil, "kms-policy.sh", append([]string{"--non-interactive",
		"--role-arn", "arn:aws:iam::123456789012:role/agentkeys-host",
		"--admin-arn", "arn:aws:iam::123456789012:role/key-admin"}, args...)...)
	var p policyDoc
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("the policy is not the JSON expected: %v\n%s", err, r.stdout)
	}
	return p
}

func readPCRs(t *testing.T, file string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var m struct{ Measurements map[string]any }
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for k, v := range m.Measurements {
		if s, ok := v.(string); ok && strings.HasPrefix(k, "PCR") {
			out[k] = strings.ToLower(s)
		}
	}
	return out
}

func TestKMSPolicy(t *testing.T) {
	need(t, "jq")
	pcr := readPCRs(t, "testdata/measurements.json")
	next := readPCRs(t, "testdata/measurements-next.json")
	const imageKey = "kms:RecipientAttestation:ImageSha384"
	tests := []struct {
		name  string
		args  []string
		allow map[string][]string // condition key → allowed values
	}{
		{"PCR0 only", []string{"--measurements", "testdata/measurements.json"},
			map[string][]string{imageKey: {pcr["PCR0"]}}},
		{"PCR0,1,2", []string{"--measurements", "testdata/measurements.json", "--pcrs", "0,1,2"},
			map[string][]string{imageKey: {pcr["PCR0"]}, "kms:RecipientAttestation:PCR1": {pcr["PCR1"]}, "kms:RecipientAttestation:PCR2": {pcr["PCR2"]}}},
		{"two images", []string{"--measurements", "testdata/measurements.json", "--measurements", "testdata/measurements-next.json", "--pcrs", "2,0,1"},
			map[string][]string{
				imageKey:                        sorted(pcr["PCR0"], next["PCR0"]),
				"kms:RecipientAttestation:PCR1": {pcr["PCR1"]}, // the same in both
				"kms:RecipientAttestation:PCR2": sorted(pcr["PCR2"], next["PCR2"])}},
		{"signed image PCR8", []string{"--measurements", "testdata/measurements-next.json", "--pcrs", "0,8"},
			map[string][]string{imageKey: {next["PCR0"]}, "kms:RecipientAttestation:PCR8": {next["PCR8"]}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := policyFor(t, tt.args...)
			if p.Version != "2012-10-17" {
				t.Errorf("Version %q", p.Version)
			}
			bySid := map[string]int{}
			for i, s := range p.Statement {
				bySid[s.Sid] = i
				if s.Resource != "*" {
					t.Errorf("%s: Resource %q (a key policy's resource is the key: \"*\")", s.Sid, s.Resource)
				}
			}
			sensitive := []string{"kms:Decrypt", "kms:GenerateDataKey", "kms:Encrypt", "kms:ReEncryptFrom", "kms:ReEncryptTo"}

			admin := p.Statement[bySid["KeyAdministration"]]
			if admin.Effect != "Allow" || admin.Principal.AWS != "arn:aws:iam::123456789012:role/key-admin" || admin.Condition != nil {
				t.Errorf("KeyAdministration: %+v", admin)
			}
			for _, a := range admin.Action {
				for _, s := range sensitive {
					if ok, _ := path.Match(a, s); ok {
						t.Errorf("the administrator's %q allows %s", a, s)
					}
				}
			}
			if !slices.Contains(admin.Action, "kms:Put*") || !slices.Contains(admin.Action, "kms:ScheduleKeyDeletion") {
				t.Errorf("the administrator cannot manage the key: %v", admin.Action)
			}

			allow := p.Statement[bySid["EnclaveSeedWithAttestation"]]
			if allow.Effect != "Allow" || allow.Principal.AWS != "arn:aws:iam::123456789012:role/agentkeys-host" {
				t.Errorf("EnclaveSeedWithAttestation: %+v", allow)
			}
			if !slices.Equal(allow.Action, []string{"kms:Decrypt", "kms:GenerateDataKey"}) {
				t.Errorf("the enclave statement allows %v", allow.Action)
			}
			if len(allow.Condition) != 1 {
				t.Errorf("the enclave statement's conditions: %v", allow.Condition)
			}
			if got := values(t, allow.Condition["StringEqualsIgnoreCase"]); !equalMaps(got, tt.allow) {
				t.Errorf("allowed on %v, want %v", got, tt.allow)
			}

			deny := p.Statement[bySid["DenyWithoutAttestation"]]
			if deny.Effect != "Deny" || deny.Principal.AWS != "*" {
				t.Errorf("DenyWithoutAttestation: %+v", deny)
			}
			for _, a := range []string{"kms:Decrypt", "kms:GenerateDataKey", "kms:Encrypt", "kms:ReEncryptFrom"} {
				if !slices.ContainsFunc(deny.Action, func(d string) bool { ok, _ := path.Match(d, a); return ok }) {
					t.Errorf("DenyWithoutAttestation does not cover %s: %v", a, deny.Action)
				}
			}
			if want := map[string]map[string]any{"Null": {imageKey: "true"}}; !jsonEqual(deny.Condition, want) {
				t.Errorf("DenyWithoutAttestation condition %v, want %v", deny.Condition, want)
			}

			// One Deny per pinned PCR, on exactly the allowed values.
			for key, vals := range tt.allow {
				n := strings.TrimPrefix(key, "kms:RecipientAttestation:PCR")
				if key == imageKey {
					n = "0"
				}
				i, ok := bySid["DenyOtherPCR"+n]
				if !ok {
					t.Errorf("no DenyOtherPCR%s", n)
					continue
				}
				d := p.Statement[i]
				got := values(t, d.Condition["StringNotEqualsIgnoreCase"])
				if d.Effect != "Deny" || d.Principal.AWS != "*" || len(d.Condition) != 1 || !equalMaps(got, map[string][]string{key: vals}) {
					t.Errorf("DenyOtherPCR%s: %+v", n, d)
				}
			}
			if want := 3 + len(tt.allow); len(p.Statement) != want {
				t.Errorf("%d statements, want %d", len(p.Statement), want)
			}

			// Nothing else allows the seed operations.
			for _, s := range p.Statement {
				if s.Effect == "Allow" && s.Sid != "EnclaveSeedWithAttestation" {
					for _, a := range s.Action {
						for _, x := range sensitive {
							if ok, _ := path.Match(a, x); ok {
								t.Errorf("%s allows %s", s.Sid, x)
							}
						}
					}
				}
			}
		})
	}
}

func TestKMSPolicyRefuses(t *testing.T) {
	need(t, "jq")
	dir := t.TempDir()
	hex := func(c string) string { return strings.Repeat(c, 96) }
	files := map[string]string{
		"zeros":    `{"Measurements": {"HashAlgorithm": "Sha384 { ... }", "PCR0": "` + hex("0") + `"}}`,
		"sha256":   `{"Measurements": {"HashAlgorithm": "Sha256 { ... }", "PCR0": "` + hex("a") + `"}}`,
		"short":    `{"Measurements": {"HashAlgorithm": "Sha384 { ... }", "PCR0": "abcd"}}`,
		"nothex":   `{"Measurements": {"HashAlgorithm": "Sha384 { ... }", "PCR0": "` + hex("g") + `"}}`,
		"number":   `{"Measurements": {"HashAlgorithm": "Sha384 { ... }", "PCR0": 7}}`,
		"none":     `{"EifVersion": 4}`,
		"garbage":  `Measurements: PCR0`,
		"injected": `{"Measurements": {"HashAlgorithm": "Sha384 { ... }", "PCR0": "` + hex("a") + `\"}, {\"x\": \"y"}}`,
	}
	tests := []struct{ file, pcrs, want string }{
		{"zeros", "0", "PCR0 is all zeros"},
		{"sha256", "0", "HashAlgorithm is not Sha384"},
		{"short", "0", "PCR0 is not 96 hex digits"},
		{"nothex", "0", "PCR0 is not 96 hex digits"},
		{"number", "0", "no PCR0"},
		{"none", "0", `no "Measurements" object`},
		{"garbage", "0", "measurements file"},
		{"injected", "0", "PCR0 is not 96 hex digits"},
		{"../testdata/measurements.json", "0,8", "no PCR8"},
		{"missing", "0", "not found"},
	}
	for name, c := range files {
		os.WriteFile(filepath.Join(dir, name), []byte(c), 0o644)
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			f := filepath.Join(dir, tt.file)
			if strings.HasPrefix(tt.file, "..") {
				f = strings.TrimPrefix(tt.file, "../")
			}
			r := run(t, nil, "kms-policy.sh", "--non-interactive", "--measurements", f, "--pcrs", tt.pcrs,
				"--role-arn", "arn:aws:iam::123456789012:role/r", "--admin-arn", "arn:aws:iam::123456789012:root")
			if r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, tt.want) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit 1 and %q", r.code, r.stdout, r.stderr, tt.want)
			}
		})
	}
}

func TestKMSPolicyOutputFile(t *testing.T) {
	need(t, "jq")
	out := filepath.Join(t.TempDir(), "policy.json")
	args := []string{"--non-interactive", "--measurements", "testdata/measurements.json", "--output", out,
		"--role-arn", "arn:aws:iam::123456789012:role/r", "--admin-arn", "arn:aws:iam::123456789012:root"}
	r := mustRun(t, nil, "kms-policy.sh", append(args, "--dry-run")...)
	if r.stdout != "would write "+out+"\n" {
		t.Fatalf("dry run: %q", r.stdout)
	}
	if _, err := os.Stat(out); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("--dry-run wrote %s", out)
	}
	if r := mustRun(t, nil, "kms-policy.sh", args...); r.stdout != "wrote "+out+"\n" {
		t.Fatalf("first run: %q", r.stdout)
	}
	b, _ := os.ReadFile(out)
	if !json.Valid(b) || !bytes.Contains(b, []byte("kms:RecipientAttestation:ImageSha384")) {
		t.Fatalf("the file is not the policy:\n%s", b)
	}
	if r := mustRun(t, nil, "kms-policy.sh", args...); r.stdout != "unchanged "+out+"\n" {
		t.Fatalf("second run: %q", r.stdout)
	}
	stdout := mustRun(t, nil, "kms-policy.sh", slices.Delete(slices.Clone(args), 3, 5)...).stdout
	if stdout != string(b) {
		t.Fatal("--output and stdout differ")
	}
}

// TestShellcheck: every script passes shellcheck at warning level, and the
// deployment scripts at every level (info and style too).
func TestShellcheck(t *testing.T) {
	need(t, "shellcheck")
	files, err := filepath.Glob("*.sh")
	if err != nil || len(files) < len(scripts) {
		t.Fatalf("scripts: %v, %v", files, err)
	}
	for _, c := range []struct {
		severity string
		files    []string
	}{{"warning", files}, {"style", scripts}} {
		args := append([]string{"--external-sources", "--severity", c.severity}, c.files...)
		if out, err := exec.Command("shellcheck", args...).CombinedOutput(); err != nil {
			t.Errorf("shellcheck --severity %s %v: %v\n%s", c.severity, c.files, err, out)
		}
	}
}

// entry is one file or directory in a tree snapshot.
type entry struct {
	mode    fs.FileMode
	content string
	mtime   time.Time
	inode   uint64 // a rewrite (temporary file, rename) makes a new inode
}

// tree snapshots everything under root, keyed by "/"-rooted path
// (directories end in "/").
func tree(t *testing.T, root string) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel := "/" + filepath.ToSlash(strings.TrimPrefix(p, root+string(filepath.Separator)))
		e := entry{mode: fi.Mode(), mtime: fi.ModTime()}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			e.inode = st.Ino
		}
		if d.IsDir() {
			rel += "/"
			e.mode = fs.ModeDir | fi.Mode().Perm()
		} else {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			e.content = string(b)
		}
		out[rel] = e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func equalTrees(a, b map[string]entry) bool { return len(diffTrees(a, b)) == 0 }

// diffTrees lists the paths whose mode, content, mtime or inode differ, sorted.
// Directories are left out: their mtimes change when files in them do.
func diffTrees(a, b map[string]entry) []string {
	var out []string
	for p, e := range a {
		f, ok := b[p]
		if !ok || (!e.mode.IsDir() && (e.mode != f.mode || e.content != f.content || !e.mtime.Equal(f.mtime) || e.inode != f.inode)) ||
			(e.mode.IsDir() && e.mode != f.mode) {
			out = append(out, p)
		}
	}
	for p := range b {
		if _, ok := a[p]; !ok {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

func keys(m map[string]entry) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sorted(s ...string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return slices.Compact(s)
}

// values reads a condition block whose values are lists of strings.
func values(t *testing.T, block map[string]any) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for k, v := range block {
		list, ok := v.([]any)
		if !ok {
			t.Fatalf("condition %s is %T, want a list", k, v)
		}
		for _, x := range list {
			s, ok := x.(string)
			if !ok {
				t.Fatalf("condition %s holds %T", k, x)
			}
			out[k] = append(out[k], s)
		}
		slices.Sort(out[k])
	}
	return out
}

func equalMaps(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}
