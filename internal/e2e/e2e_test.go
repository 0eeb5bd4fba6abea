// Package e2e runs the real binaries together: agentkeys-enclave (simulated),
// agentkeys-host and the agentkeys CLI, built from this tree, on loopback. A
// JWT minted through them is verified by github.com/coreos/go-oidc against the
// live discovery document and JWKS, as an independent relying party (AWS) would.
package e2e

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/decred/dcrd/dcrec/secp256k1/v4"

	"github.com/agentkeys/broker/host/audit"
	"github.com/agentkeys/broker/host/client"
	"github.com/agentkeys/broker/internal/pebbletest"
	"github.com/agentkeys/broker/internal/stsserver"
	"github.com/agentkeys/broker/shared/jwk"

	"github.com/agentkeys/broker/internal/lockedbuf"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds the three binaries once per test run.
func binaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "agentkeys-e2e-bin")
		if buildErr != nil {
			return
		}
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		cmd := exec.Command("go", "build", "-o", binDir+"/", "./enclave/cmd/agentkeys-enclave", "./host/cmd/agentkeys-host", "./host/cmd/agentkeys")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	pebbletest.Cleanup()
	os.Exit(code)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// proc is a started binary with its stderr captured.
type proc struct {
	cmd    *exec.Cmd
	stderr *lockedbuf.Buffer
	done   chan error
}

func start(t *testing.T, env []string, name string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(name, args...), stderr: &lockedbuf.Buffer{}, done: make(chan error, 1)}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("%s stderr:\n%s", filepath.Base(name), p.stderr.String())
		}
	})
	return p
}

// stop sends SIGTERM and waits (bounded) for a clean exit.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err // for the cleanup
		if err != nil {
			t.Fatalf("%s exited with %v\n%s", p.cmd.Path, err, p.stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not stop on SIGTERM", p.cmd.Path)
	}
}

func waitReady(t *testing.T, url string, want int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == want {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s/readyz never answered %d", url, want)
}

type broker struct {
	issuer, dir, bin, sock string
	enclave, host          *proc
}

func startBroker(t *testing.T, env ...string) *broker {
	bin := binaries(t)
	dir := t.TempDir()
	b := &broker{dir: dir, bin: bin, sock: filepath.Join(dir, "enclave.sock")}
	b.issuer = fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	os.WriteFile(filepath.Join(dir, "policy.json"), []byte(fmt.Sprintf(`{"issuer": %q}`, b.issuer)), 0o600)
	b.startEnclave(t)
	b.host = start(t, append([]string{
		"BROKER_OIDC_ISSUER=" + b.issuer,
		"BROKER_PORT=" + strings.TrimPrefix(b.issuer, "http://127.0.0.1:"),
		"BROKER_ENCLAVE=unix:" + b.sock,
		"BROKER_STATE_DIR=" + filepath.Join(dir, "host"),
	}, env...), filepath.Join(bin, "agentkeys-host"))
	waitReady(t, b.issuer, 200)
	return b
}

func (b *broker) startEnclave(t *testing.T) {
	b.enclave = start(t, nil, filepath.Join(b.bin, "agentkeys-enclave"), "--simulated",
		"--state-dir", filepath.Join(b.dir, "enclave"), "--policy", filepath.Join(b.dir, "policy.json"), "--listen", "unix:"+b.sock)
}

// signIn makes a fresh wallet and signs it in at issuer through the Go client
// library, over hc when it is not nil.
func signIn(t *testing.T, issuer string, hc *http.Client) (*client.Client, *client.Session) {
	t.Helper()
	key, err := secp256k1.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(issuer)
	if err != nil {
		t.Fatal(err)
	}
	if hc != nil {
		c.HTTP = hc
	}
	sess, err := c.SignIn(t.Context(), key, client.SignInOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return c, sess
}

func TestEndToEnd(t *testing.T) {
	b := startBroker(t)
	ctx := context.Background()

	// A fresh wallet signs in and mints, through the Go client library.
	c, sess := signIn(t, b.issuer, nil)
	jwt, err := c.MintJWT(ctx, sess.Token, "", 0)
	if err != nil {
		t.Fatal(err)
	}

	// An independent relying party verifies it against the live discovery
	// document and JWKS.
	provider, err := oidc.NewProvider(ctx, b.issuer)
	if err != nil {
		t.Fatal(err)
	}
	verifier := provider.Verifier(&oidc.Config{ClientID: "sts.amazonaws.com", SupportedSigningAlgs: []string{"ES256"}})
	idt, err := verifier.Verify(ctx, jwt.Token)
	if err != nil {
		t.Fatalf("go-oidc rejects the minted JWT: %v", err)
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		t.Fatal(err)
	}
	if idt.Issuer != b.issuer || idt.Subject != "agentkeys:agent:"+sess.Wallet || claims["agentkeys_user_wallet"] != sess.Wallet {
		t.Fatalf("claims: %v", claims)
	}
	tags, _ := json.Marshal(claims["https://aws.amazon.com/tags"])
	jti, _ := claims["jti"].(string)
	if string(tags) != fmt.Sprintf(`{"principal_tags":{"agentkeys_log_index":[%q],"agentkeys_user_wallet":[%q]},"transitive_tag_keys":["agentkeys_user_wallet","agentkeys_log_index"]}`, jti, sess.Wallet) {
		t.Fatalf("tags claim: %s", tags)
	}
	// The kid is the RFC 7638 thumbprint of the published key.
	resp, err := http.Get(b.issuer + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	var set jwk.Set
	json.NewDecoder(resp.Body).Decode(&set)
	resp.Body.Close()
	if len(set.Keys) != 1 || set.Keys[0].Kid != set.Keys[0].Thumbprint() {
		t.Fatalf("jwks: %+v", set)
	}
	header := strings.Split(jwt.Token, ".")[0]
	if !strings.Contains(decodeSegment(t, header), `"kid":"`+set.Keys[0].Kid+`"`) {
		t.Fatalf("JWT header %s does not name the JWKS kid", decodeSegment(t, header))
	}

	// The enclave is killed: the host answers 503 without hanging, and reports it.
	b.enclave.stop(t)
	waitReady(t, b.issuer, 503)
	_, err = c.MintJWT(ctx, sess.Token, "", 0)
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != 503 || ce.Kind != "enclave_unavailable" {
		t.Fatalf("mint with the enclave down: %v", err)
	}
	// The enclave comes back: the host recovers without a restart, and the
	// session (signed with the same derived key) is still good.
	b.startEnclave(t)
	waitReady(t, b.issuer, 200)
	if _, err := c.MintJWT(ctx, sess.Token, "", 0); err != nil {
		t.Fatalf("after the enclave came back: %v", err)
	}

	// The host drains and stops on SIGTERM; the audit log holds every outcome.
	b.host.stop(t)
	if !strings.Contains(b.host.stderr.String(), `"msg":"stopped"`) {
		t.Fatalf("host did not log a clean stop:\n%s", b.host.stderr.String())
	}
	store, err := audit.OpenSQLite(filepath.Join(b.dir, "host", "audit.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	recs, err := store.List(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range recs {
		got = append(got, r.Kind+"/"+r.Outcome)
		if r.Outcome == "ok" && r.Kind == "oidc_jwt" && (r.Wallet != sess.Wallet || r.JTI == "" || r.BearerSHA256 != audit.HashBearer(sess.Token)) {
			t.Errorf("mint record: %+v", r)
		}
	}
	if strings.Join(got, " ") != "session/ok oidc_jwt/ok oidc_jwt/enclave_error oidc_jwt/ok" {
		t.Fatalf("audit log: %v", got)
	}
}

// TestAWSCreds: the host binary configured as an operator would
// (BROKER_STS_ENDPOINT, BROKER_DATA_ROLE_ARN) serves /v1/mint-aws-creds through
// a local STS that verifies its JWTs against the live issuer.
func TestAWSCreds(t *testing.T) {
	const role = "arn:aws:iam::123456789012:role/agentkeys-data-role"
	// The STS must trust the issuer, whose port is chosen by startBroker; route
	// through a handler that is filled in once the issuer is known.
	var sts *stsserver.Server
	var mu sync.Mutex
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		s := sts
		mu.Unlock()
		s.ServeHTTP(w, r)
	}))
	defer front.Close()
	b := startBroker(t, "BROKER_STS_ENDPOINT="+front.URL, "BROKER_DATA_ROLE_ARN="+role)
	mu.Lock()
	sts = stsserver.New(stsserver.Options{Roles: []stsserver.Role{{ARN: role, ProviderIssuer: b.issuer, RequireTag: "agentkeys_user_wallet"}}, AllowHTTPIssuer: true})
	mu.Unlock()

	c, sess := signIn(t, b.issuer, nil)
	cr, err := c.MintAWSCreds(context.Background(), sess.Token, 0)
	if err != nil {
		t.Fatal(err)
	}
	issued, ok := sts.Issued(cr.AccessKeyID)
	if !ok || issued.PrincipalTags["agentkeys_user_wallet"] != sess.Wallet || cr.Wallet != sess.Wallet {
		t.Fatalf("issued %+v for %s", issued, sess.Wallet)
	}
	if !strings.Contains(b.host.stderr.String(), `"msg":"AWS credential minting on"`) {
		t.Fatalf("host log:\n%s", b.host.stderr.String())
	}
}

// TestCLI drives the agentkeys binary against the live binaries.
func TestCLI(t *testing.T) {
	b := startBroker(t)
	home := t.TempDir()
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(filepath.Join(b.bin, "agentkeys"), args...)
		cmd.Env = append(os.Environ(), "HOME="+home, "AGENTKEYS_BROKER="+b.issuer)
		out, err := cmd.Output()
		if err != nil {
			var ee *exec.ExitError
			errors.As(err, &ee)
			t.Fatalf("agentkeys %v: %v\n%s", args, err, ee.Stderr)
		}
		return string(out)
	}
	run("wallet", "new")
	run("login")
	out := filepath.Join(home, "token")
	run("jwt", "--out", out)
	tok, _ := os.ReadFile(out)
	provider, err := oidc.NewProvider(context.Background(), b.issuer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := provider.Verifier(&oidc.Config{ClientID: "sts.amazonaws.com"}).Verify(context.Background(), string(tok)); err != nil {
		t.Fatalf("JWT from the CLI: %v", err)
	}
	run("logout")
}

// TestMakeDev runs scripts/dev.sh (what make dev runs) with its own port and
// state directory, waits for its ready line, checks the issuer answers, and
// stops it with SIGINT as Ctrl-C would.
func TestMakeDev(t *testing.T) {
	bin := binaries(t)
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	dev := t.TempDir()
	port := freePort(t)
	// A pid file left by an instance that died (its process is gone) is stale
	// and does not stop a start.
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dev, "dev.pid"), []byte(strconv.Itoa(gone.Process.Pid)+"\n"), 0o600)
	cmd := exec.Command("bash", "scripts/dev.sh")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "BIN="+bin, "AGENTKEYS_DEV_DIR="+dev, fmt.Sprintf("BROKER_PORT=%d", port))
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := make(chan string, 64)
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			lines <- s.Text()
		}
		close(lines)
	}()
	issuer := fmt.Sprintf("http://127.0.0.1:%d", port)
	timeout := time.After(60 * time.Second)
	for ready := false; !ready; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("dev.sh exited before it was ready")
			}
			ready = strings.Contains(l, "ready") && strings.Contains(l, issuer)
		case <-timeout:
			t.Fatal("dev.sh never printed its ready line")
		}
	}
	resp, err := http.Get(issuer + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"issuer":"`+issuer+`"`) {
		t.Fatalf("discovery: %d %s", resp.StatusCode, body)
	}
	// The transparency page, which the ready message points to.
	if resp, err = http.Get(issuer + "/"); err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || !strings.Contains(string(body), issuer) {
		t.Fatalf("the transparency page: %d %s\n%.300s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}

	// A second make dev in the same directory refuses before starting
	// anything, and leaves the running instance's logs alone.
	logsBefore := map[string][]byte{}
	for _, log := range []string{"enclave.log", "host.log"} {
		logsBefore[log], _ = os.ReadFile(filepath.Join(dev, log))
		if len(logsBefore[log]) == 0 {
			t.Fatalf("%s is empty while the first instance runs", log)
		}
	}
	second := exec.Command("bash", "scripts/dev.sh")
	second.Dir = root
	second.Env = cmd.Env
	var secondOut, secondErr strings.Builder
	second.Stdout, second.Stderr = &secondOut, &secondErr
	err = second.Run()
	if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("a second dev.sh: %v\nstdout: %s\nstderr: %s", err, secondOut.String(), secondErr.String())
	}
	if !strings.Contains(secondErr.String(), "already running in "+dev) || strings.Contains(secondOut.String(), "ready") {
		t.Fatalf("a second dev.sh said:\nstdout: %s\nstderr: %s", secondOut.String(), secondErr.String())
	}
	for log, before := range logsBefore {
		after, _ := os.ReadFile(filepath.Join(dev, log))
		if !strings.HasPrefix(string(after), string(before)) {
			t.Errorf("%s was rewritten by the second dev.sh:\nbefore: %s\nafter: %s", log, before, after)
		}
	}
	if resp, err := http.Get(issuer + "/readyz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("the first instance after the second tried: %v", err)
	} else {
		resp.Body.Close()
	}

	if _, err := os.Stat(filepath.Join(dev, "simulated-root.pem")); err != nil {
		t.Fatalf("simulated root not written: %v", err)
	}
	cmd.Process.Signal(os.Interrupt)
	var rest strings.Builder
	for l := range lines {
		rest.WriteString(l + "\n")
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("dev.sh after Ctrl-C: %v\n%s", err, rest.String())
	}
	if !strings.Contains(rest.String(), "stopped") {
		t.Fatalf("no stop message: %s", rest.String())
	}
	for _, log := range []string{"enclave.log", "host.log"} {
		b, _ := os.ReadFile(filepath.Join(dev, log))
		if !strings.Contains(string(b), `"msg":"stopped"`) {
			t.Errorf("%s does not show a clean stop:\n%s", log, b)
		}
	}
	if _, err := os.Stat(filepath.Join(dev, "dev.pid")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dev.pid left behind after a clean stop: %v", err)
	}
}

func decodeSegment(t *testing.T, s string) string {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestAWSCredsAssumeRole: the host binary in assume-role mode checks its own
// AWS identity at start (GetCallerIdentity), refuses to start when that fails,
// and tags the sessions it assumes with the wallet.
func TestAWSCredsAssumeRole(t *testing.T) {
	const role = "arn:aws:iam::123456789012:role/agentkeys-data-role"
	sts := stsserver.New(stsserver.Options{
		Roles:      []stsserver.Role{{ARN: role, RequireTag: "agentkeys_user_wallet"}},
		AccessKeys: []stsserver.AccessKey{{ID: "AKIAHOSTEXAMPLE00001", Secret: "host-secret", ARN: "arn:aws:iam::123456789012:user/broker-host"}},
	})
	url := sts.Start(t)
	env := []string{"BROKER_STS_MODE=assume-role", "BROKER_STS_ENDPOINT=" + url, "BROKER_DATA_ROLE_ARN=" + role, "DAEMON_ACCESS_KEY_ID=AKIAHOSTEXAMPLE00001"}

	// A wrong secret: the start-up check fails and the host does not start.
	bin := binaries(t)
	dir := t.TempDir()
	bad := start(t, append(env, "DAEMON_SECRET_ACCESS_KEY=wrong-secret-Zq9x", "BROKER_STATE_DIR="+dir, "BROKER_ENCLAVE=unix:"+dir+"/none.sock",
		fmt.Sprintf("BROKER_PORT=%d", freePort(t))), filepath.Join(bin, "agentkeys-host"))
	select {
	case err := <-bad.done:
		bad.done <- err
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(bad.stderr.String(), "assume-role start-up check") ||
			!strings.Contains(bad.stderr.String(), "SignatureDoesNotMatch") || strings.Contains(bad.stderr.String(), "Zq9x") {
			t.Fatalf("host with a wrong secret: %v\n%s", err, bad.stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("host with a wrong secret did not exit")
	}

	// The right secret: it starts, and mints with the wallet as session tag
	// and source identity.
	b := startBroker(t, append(env, "DAEMON_SECRET_ACCESS_KEY=host-secret")...)
	if !strings.Contains(b.host.stderr.String(), `"msg":"assume-role identity","arn":"arn:aws:iam::123456789012:user/broker-host"`) {
		t.Fatalf("host log:\n%s", b.host.stderr.String())
	}
	c, sess := signIn(t, b.issuer, nil)
	cr, err := c.MintAWSCreds(context.Background(), sess.Token, 900)
	if err != nil {
		t.Fatal(err)
	}
	issued, ok := sts.Issued(cr.AccessKeyID)
	if !ok || issued.Action != "AssumeRole" || issued.SourceIdentity != sess.Wallet || issued.PrincipalTags["agentkeys_user_wallet"] != sess.Wallet {
		t.Fatalf("issued: %+v", issued)
	}
}
