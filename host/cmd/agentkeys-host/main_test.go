package main

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"filippo.io/torchwood"
	"github.com/rogpeppe/go-internal/testscript"

	"github.com/agentkeys/broker/enclave/logtree"
	"github.com/agentkeys/broker/host/api"
	"github.com/agentkeys/broker/host/audit"
	"github.com/agentkeys/broker/host/enclaveclient"
	"github.com/agentkeys/broker/host/metrics"
	"github.com/agentkeys/broker/host/revocation"
	"github.com/agentkeys/broker/shared/auditlog"
	"github.com/agentkeys/broker/shared/policy"
	"github.com/agentkeys/broker/shared/protocol"

	"github.com/agentkeys/broker/internal/lockedbuf"
	"github.com/agentkeys/broker/internal/scriptcmd"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"agentkeys-host": func() { os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr)) },
	})
}

// TestScripts runs testdata/script/*.txt against the real binary.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{Dir: "testdata/script", Cmds: map[string]func(*testscript.TestScript, bool, []string){
		"waithttp": cmdWaitHTTP,
		"jsonlog":  scriptcmd.JSONLog,
	}})
}

// waithttp URL STATUS: poll URL (bounded) until it answers with STATUS.
func cmdWaitHTTP(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: waithttp URL STATUS")
	}
	var last string
	for range 400 {
		resp, err := http.Get(args[0])
		if err == nil {
			resp.Body.Close()
			last = resp.Status
			if strconv.Itoa(resp.StatusCode) == args[1] {
				return
			}
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	ts.Fatalf("%s never answered %s (last: %s)", args[0], args[1], last)
}

// Cosignature/v1 verifier keys of two witnesses (Ed25519 keys from fixed
// seeds).
var testWitnessKey, testWitnessKey2 = cosignatureKey("a.example/witness"), cosignatureKey("b.example/witness")

func cosignatureKey(name string) string {
	seed := sha256.Sum256([]byte(name))
	s, err := torchwood.NewCosignatureSigner(name, ed25519.NewKeyFromSeed(seed[:]))
	if err != nil {
		panic(err)
	}
	return s.Verifier().String()
}

func TestConfig(t *testing.T) {
	env := func(kv ...string) func(string) string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	tests := []struct {
		name   string
		args   []string
		getenv func(string) string
		check  func(*config) bool
		err    string
	}{
		{"defaults", nil, env(), func(c *config) bool {
			return c.Issuer == "http://127.0.0.1:8091" && c.ListenAddr == "127.0.0.1:8091" && c.Enclave == "vsock:16:5005" &&
				c.AuditDB == "/var/lib/agentkeys-host/audit.db" && c.ShutdownGrace.Seconds() == 10
		}, ""},
		{"env", nil, env("BROKER_PORT", "9000", "BROKER_OIDC_ISSUER", "http://localhost:9000/", "BROKER_AUDIT_DB_PATH", "/x/a.db", "BROKER_OIDC_JWT_TTL_SECONDS", "600"),
			func(c *config) bool {
				return c.Issuer == "http://localhost:9000" && c.ListenAddr == "127.0.0.1:9000" && c.AuditDB == "/x/a.db" && c.JWTTTL == 600
			}, ""},
		{"flag beats env", []string{"--port", "9001"}, env("BROKER_PORT", "9000"), func(c *config) bool { return c.Port == 9001 }, ""},
		{"behind proxy", []string{"--issuer-origin", "host", "--behind-proxy", "--issuer", "https://b.example.com"}, env(), func(c *config) bool {
			return c.ListenAddr == ":8091" && c.Issuer == "https://b.example.com"
		}, ""},
		{"tls", []string{"--issuer-origin", "host", "--tls-domain", "b.example.com", "--issuer", "https://b.example.com/"}, env(), func(c *config) bool {
			return c.ListenAddr == "" && c.HTTPSPort == 443 && c.HTTPPort == 80
		}, ""},
		{"aws defaults off", nil, env(), func(c *config) bool {
			return c.RoleARN == "" && c.STSMode == "web-identity" && c.AWSRegion == "us-east-1" && c.SessionDuration.Seconds() == 3600
		}, ""},
		{"aws role from account id", nil, env("ACCOUNT_ID", "123456789012", "REGION", "eu-west-1"), func(c *config) bool {
			return c.RoleARN == "arn:aws:iam::123456789012:role/agentkeys-data-role" && c.AWSRegion == "eu-west-1"
		}, ""},
		{"aws legacy role", nil, env("BROKER_AGENT_ROLE_ARN", "arn:aws:iam::123456789012:role/legacy", "ACCOUNT_ID", "999999999999"), func(c *config) bool {
			return c.RoleARN == "arn:aws:iam::123456789012:role/legacy"
		}, ""},
		{"aws data role wins", nil, env("BROKER_DATA_ROLE_ARN", "arn:aws:iam::123456789012:role/data", "BROKER_AGENT_ROLE_ARN", "arn:aws:iam::123456789012:role/legacy", "BROKER_AWS_REGION", "us-west-2", "REGION", "eu-west-1"), func(c *config) bool {
			return c.RoleARN == "arn:aws:iam::123456789012:role/data" && c.AWSRegion == "us-west-2"
		}, ""},
		{"bad role", nil, env("BROKER_DATA_ROLE_ARN", "role/x"), nil, "BROKER_DATA_ROLE_ARN"},
		{"bad account id", nil, env("ACCOUNT_ID", "12"), nil, "12-digit"},
		{"bad sts mode", nil, env("BROKER_STS_MODE", "magic"), nil, "BROKER_STS_MODE"},
		{"bad session duration", nil, env("BROKER_SESSION_DURATION_SECONDS", "60"), nil, "BROKER_SESSION_DURATION_SECONDS"},
		{"half a static pair", nil, env("DAEMON_ACCESS_KEY_ID", "AKIA"), nil, "both DAEMON_ACCESS_KEY_ID"},
		{"bad sts endpoint", nil, env("BROKER_STS_ENDPOINT", "sts.local"), nil, "BROKER_STS_ENDPOINT"},
		{"tls domain gives the issuer", []string{"--issuer-origin", "host", "--tls-domain", "B.example.com"}, env(), func(c *config) bool { return c.Issuer == "https://b.example.com" }, ""},
		{"sign-in rate", nil, env("BROKER_SIGN_IN_RATE", "0.5"), func(c *config) bool { return c.SignInRate == 0.5 }, ""},
		{"page rate default", nil, env(), func(c *config) bool { return c.PageRate == 2 }, ""},
		{"page rate", []string{"--page-rate", "0"}, env(), func(c *config) bool { return c.PageRate == 0 }, ""},
		{"bad page rate", nil, env("BROKER_PAGE_RATE", "-1"), nil, "BROKER_PAGE_RATE"},
		{"read rate default", nil, env(), func(c *config) bool { return c.ReadRate == 200 }, ""},
		{"read rate", []string{"--read-rate", "0"}, env(), func(c *config) bool { return c.ReadRate == 0 }, ""},
		{"bad read rate", nil, env("BROKER_READ_RATE", "x"), nil, "BROKER_READ_RATE"},
		{"metrics listen", nil, env("BROKER_METRICS_LISTEN", "127.0.0.1:9091"), func(c *config) bool { return c.MetricsListen == "127.0.0.1:9091" }, ""},
		{"bad metrics listen", nil, env("BROKER_METRICS_LISTEN", "9091"), nil, "BROKER_METRICS_LISTEN"},
		{"metrics on loopback api", nil, env(), func(c *config) bool { return c.MetricsOnAPI }, ""},
		{"metrics off behind proxy", []string{"--issuer-origin", "host", "--behind-proxy", "--issuer", "https://b.example.com"}, env(), func(c *config) bool { return !c.MetricsOnAPI }, ""},
		{"metrics off with tls", []string{"--issuer-origin", "host", "--tls-domain", "b.example.com"}, env(), func(c *config) bool { return !c.MetricsOnAPI }, ""},
		{"metrics public", []string{"--issuer-origin", "host", "--behind-proxy", "--issuer", "https://b.example.com", "--metrics-public"}, env(), func(c *config) bool { return c.MetricsOnAPI }, ""},
		{"metrics public env", []string{"--issuer-origin", "host", "--tls-domain", "b.example.com"}, env("BROKER_METRICS_PUBLIC", "true"), func(c *config) bool { return c.MetricsOnAPI }, ""},
		{"metrics listen moves it", []string{"--metrics-listen", "127.0.0.1:9091"}, env(), func(c *config) bool { return !c.MetricsOnAPI }, ""},
		{"metrics listen and public", []string{"--metrics-listen", "127.0.0.1:9091", "--metrics-public"}, env(), nil, "exclude each other"},
		{"bad metrics public", nil, env("BROKER_METRICS_PUBLIC", "yes please"), nil, "BROKER_METRICS_PUBLIC"},
		{"flag error names the flag with --", []string{"--port"}, env(), nil, "--port: needs a value"},
		{"unknown flag with --", []string{"-nope"}, env(), nil, "--nope: no such flag"},
		{"bad sign-in rate", nil, env("BROKER_SIGN_IN_RATE", "-1"), nil, "BROKER_SIGN_IN_RATE"},
		{"bad port env", nil, env("BROKER_PORT", "http"), nil, "BROKER_PORT"},
		{"bad ttl", nil, env("BROKER_OIDC_JWT_TTL_SECONDS", "7200"), nil, "BROKER_OIDC_JWT_TTL_SECONDS"},
		{"bad grace", nil, env("BROKER_SHUTDOWN_GRACE_SECONDS", "-1"), nil, "BROKER_SHUTDOWN_GRACE_SECONDS"},
		{"bad behind proxy", nil, env("BROKER_BEHIND_PROXY", "maybe"), nil, "BROKER_BEHIND_PROXY"},
		{"bad log level", nil, env("BROKER_LOG_LEVEL", "loud"), nil, "BROKER_LOG_LEVEL"},
		{"http issuer off loopback", nil, env("BROKER_OIDC_ISSUER", "http://b.example.com"), nil, "must use https"},
		{"issuer with query", nil, env("BROKER_OIDC_ISSUER", "https://b.example.com/?x=1"), nil, "BROKER_OIDC_ISSUER"},
		{"https without tls", nil, env("BROKER_OIDC_ISSUER", "https://b.example.com"), nil, "needs --tls-domain"},
		{"tls domain mismatch", []string{"--tls-domain", "a.example.com", "--issuer", "https://b.example.com"}, env(), nil, "must be https://a.example.com"},
		{"tls and proxy", []string{"--tls-domain", "a.example.com", "--issuer", "https://a.example.com", "--behind-proxy"}, env(), nil, "exclude each other"},
		{"missing ca root", []string{"--acme-ca-root", "/nonexistent.pem"}, env(), nil, "BROKER_ACME_CA_ROOT"},
		{"extra argument", []string{"serve"}, env(), nil, "unexpected argument"},
		{"abuse limit defaults", nil, env(), func(c *config) bool {
			return len(c.TrustedProxies) == 0 && c.MintRate == 10000 && c.MintBurst == 20000 && c.WalletMintRate == 10000 && c.RefusalRate == 10 &&
				c.RefusalBurst == 50 && c.RefusalInterval == time.Minute && c.RefusalClients == 1000
		}, ""},
		{"trusted proxies", nil, env("BROKER_TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.7,2001:db8::/32"), func(c *config) bool {
			return fmt.Sprint(c.TrustedProxies) == "[10.0.0.0/8 192.0.2.7/32 2001:db8::/32]"
		}, ""},
		{"abuse limits set", []string{"--mint-rate", "0", "--mint-burst", "1", "--refusal-rate", "0.5", "--refusal-burst", "5", "--refusal-interval", "10s", "--refusal-clients", "7"}, env(), func(c *config) bool {
			return c.MintRate == 0 && c.MintBurst == 1 && c.RefusalRate == 0.5 && c.RefusalBurst == 5 && c.RefusalInterval == 10*time.Second && c.RefusalClients == 7
		}, ""},
		{"bad trusted proxies", nil, env("BROKER_TRUSTED_PROXIES", "10.0.0.0/8,proxy.local"), nil, "BROKER_TRUSTED_PROXIES"},
		{"bad trusted proxy prefix", nil, env("BROKER_TRUSTED_PROXIES", "10.0.0.0/40"), nil, "BROKER_TRUSTED_PROXIES"},
		{"bad mint rate", nil, env("BROKER_MINT_RATE", "-1"), nil, "BROKER_MINT_RATE"},
		{"mint rate not a number", nil, env("BROKER_MINT_RATE", "NaN"), nil, "BROKER_MINT_RATE"},
		{"mint rate too high", nil, env("BROKER_MINT_RATE", "1e7"), nil, "BROKER_MINT_RATE"},
		{"bad mint burst", nil, env("BROKER_MINT_BURST", "0"), nil, "BROKER_MINT_BURST"},
		{"wallet mint rate", nil, env("BROKER_MINT_RATE_PER_WALLET", "2.5"), func(c *config) bool { return c.WalletMintRate == 2.5 }, ""},
		{"bad wallet mint rate", nil, env("BROKER_MINT_RATE_PER_WALLET", "-3"), nil, "BROKER_MINT_RATE_PER_WALLET"},
		{"bad refusal rate", nil, env("BROKER_REFUSAL_RATE", "x"), nil, "BROKER_REFUSAL_RATE"},
		{"refusal rate too high", nil, env("BROKER_REFUSAL_RATE", "10001"), nil, "BROKER_REFUSAL_RATE"},
		{"bad refusal burst", nil, env("BROKER_REFUSAL_BURST", "-5"), nil, "BROKER_REFUSAL_BURST"},
		{"bad refusal interval", nil, env("BROKER_REFUSAL_INTERVAL", "60"), nil, "BROKER_REFUSAL_INTERVAL"},
		{"refusal interval too short", nil, env("BROKER_REFUSAL_INTERVAL", "100ms"), nil, "BROKER_REFUSAL_INTERVAL"},
		{"refusal interval too long", []string{"--refusal-interval", "2h"}, env(), nil, "BROKER_REFUSAL_INTERVAL"},
		{"bad refusal clients", nil, env("BROKER_REFUSAL_CLIENTS", "0"), nil, "BROKER_REFUSAL_CLIENTS"},

		// The issuer origin.
		{"issuer origin: host for a loopback issuer", nil, env(), func(c *config) bool { return c.IssuerOrigin == "host" }, ""},
		{"issuer origin: enclave for an https issuer on vsock, by SNI", []string{"--tls-domain", "api.b.example.com", "--issuer", "https://b.example.com", "--api-url", "https://api.b.example.com"}, env(),
			func(c *config) bool {
				return c.IssuerOrigin == "enclave" && c.EnclaveOrigin == "vsock:16:5006" && c.RelayAddr == "" && c.APIURL == "https://api.b.example.com" && c.RelayMaxConns == 256
			}, ""},
		{"issuer origin: a port of its own", []string{"--issuer", "https://localhost:8443", "--issuer-origin", "enclave", "--issuer-origin-port", "8443", "--enclave", "unix:/e.sock", "--enclave-origin", "unix:/o.sock"}, env(),
			func(c *config) bool {
				return c.IssuerOrigin == "enclave" && c.RelayAddr == "127.0.0.1:8443" && c.APIURL == "http://127.0.0.1:8091" && c.ListenAddr == "127.0.0.1:8091"
			}, ""},
		{"issuer origin: an API URL of its own", []string{"--issuer", "https://localhost:8443", "--api-url", "http://127.0.0.1:8091", "--issuer-origin", "enclave", "--issuer-origin-port", "8443", "--enclave", "unix:/e.sock", "--enclave-origin", "unix:/o.sock"}, env(),
			func(c *config) bool { return c.APIURL == "http://127.0.0.1:8091" }, ""},
		{"issuer origin: SNI needs an API host of its own", []string{"--tls-domain", "b.example.com", "--issuer", "https://b.example.com"}, env(), nil, "API origin needs a host name of its own"},
		{"issuer origin: SNI needs TLS", []string{"--behind-proxy", "--issuer", "https://b.example.com"}, env(), nil, "needs --tls-domain"},
		{"issuer origin: http issuer", []string{"--issuer-origin", "enclave"}, env(), nil, "it must be https"},
		{"issuer origin: port mismatch", []string{"--issuer", "https://localhost:8443", "--issuer-origin", "enclave", "--issuer-origin-port", "9443", "--enclave-origin", "unix:/o.sock"}, env(), nil, "must be --issuer-origin-port 9443"},
		{"issuer origin: no enclave origin", []string{"--issuer", "https://localhost:8443", "--issuer-origin", "enclave", "--issuer-origin-port", "8443", "--enclave", "unix:/e.sock"}, env(), nil, "BROKER_ENCLAVE_ORIGIN"},
		{"issuer origin: bad mode", []string{"--issuer-origin", "both"}, env(), nil, "want enclave or host"},
		{"relay: bad max conns", nil, env("BROKER_RELAY_MAX_CONNS", "0"), nil, "BROKER_RELAY_MAX_CONNS"},
		{"relay: bad hello timeout", nil, env("BROKER_RELAY_HELLO_TIMEOUT", "10"), nil, "BROKER_RELAY_HELLO_TIMEOUT"},
		{"no witnesses", nil, env(), func(c *config) bool { return len(c.Witnesses) == 0 && c.WitnessInterval == 5*time.Second }, ""},
		{"witnesses env", nil, env("BROKER_WITNESSES", "https://a.example/w="+testWitnessKey+",http://127.0.0.1:9="+testWitnessKey2, "BROKER_WITNESS_INTERVAL", "30s"), func(c *config) bool {
			return len(c.Witnesses) == 2 && c.Witnesses[0].URL == "https://a.example/w" && c.Witnesses[0].VerifierKey == testWitnessKey &&
				c.Witnesses[1].URL == "http://127.0.0.1:9" && c.WitnessInterval == 30*time.Second
		}, ""},
		{"witness flags beat env", []string{"--witness", "https://b.example=" + testWitnessKey2, "--witness", "https://c.example=" + testWitnessKey},
			env("BROKER_WITNESSES", "https://a.example/w="+testWitnessKey), func(c *config) bool {
				return len(c.Witnesses) == 2 && c.Witnesses[0].URL == "https://b.example" && c.Witnesses[1].URL == "https://c.example"
			}, ""},
		{"bad witness", []string{"--witness", "https://a.example"}, env(), nil, "invalid --witness (BROKER_WITNESSES)"},
		{"bad witness key", nil, env("BROKER_WITNESSES", "https://a.example=a.example+00000000+AQ"), nil, "BROKER_WITNESSES"},
		{"bad witness interval", []string{"--witness-interval", "100ms"}, env(), nil, "BROKER_WITNESS_INTERVAL"},
		{"default audit log", nil, env(), func(c *config) bool { return c.AuditLogName == "" }, ""},
		{"audit log name env", nil, env("BROKER_AUDIT_LOG_NAME", "host-a"), func(c *config) bool { return c.AuditLogName == "host-a" }, ""},
		{"audit log name flag beats env", []string{"--audit-log-name", "eu-1"}, env("BROKER_AUDIT_LOG_NAME", "host-a"), func(c *config) bool { return c.AuditLogName == "eu-1" }, ""},
		{"bad audit log name", []string{"--audit-log-name", "Host_A"}, env(), nil, `invalid --audit-log-name (BROKER_AUDIT_LOG_NAME) "Host_A": want empty (the default log) or 1 to 63 lowercase`},
		{"audit log name with slash", nil, env("BROKER_AUDIT_LOG_NAME", "a/b"), nil, "BROKER_AUDIT_LOG_NAME"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseConfig(tt.args, tt.getenv, &strings.Builder{})
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || !tt.check(c) {
				t.Fatalf("config %+v, err %v", c, err)
			}
		})
	}
}

// TestImportsNoEnclaveCode: the host talks to the enclave only through shared/.
func TestImportsNoEnclaveCode(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "github.com/agentkeys/broker/enclave/") || strings.HasPrefix(pkg, "github.com/agentkeys/broker/internal/") {
			t.Errorf("the host imports %s", pkg)
		}
	}
}

// TestStopWhileObtaining: SIGTERM (a cancelled context) while the CA has not
// answered is a clean stop, not a certificate failure.
func TestStopWhileObtaining(t *testing.T) {
	// A "CA" that accepts connections and never answers.
	hang, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hang.Close()
	go func() {
		for {
			c, err := hang.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	ports := make([]int, 2)
	for i := range ports {
		l, _ := net.Listen("tcp", "127.0.0.1:0")
		ports[i] = l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	dir := t.TempDir()
	cfg, err := parseConfig([]string{"--tls-domain", "localhost", "--issuer", fmt.Sprintf("https://localhost:%d", ports[0]),
		"--https-port", strconv.Itoa(ports[0]), "--http-port", strconv.Itoa(ports[1]),
		"--acme-ca", "https://" + hang.Addr().String() + "/dir", "--state-dir", dir, "--enclave", "unix:" + dir + "/none.sock"},
		func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	logs := &lockedbuf.Buffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, slog.New(slog.NewJSONHandler(logs, nil))) }()
	for i := 0; !strings.Contains(logs.String(), "obtaining a certificate"); i++ {
		if i > 2000 {
			t.Fatalf("never started obtaining:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("stop while obtaining: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not return after cancel")
	}
	if !strings.Contains(logs.String(), "stopped before a certificate was obtained") {
		t.Fatalf("log:\n%s", logs.String())
	}
}

// drainEnclave is a stand-in enclave (over the real protocol) whose mint
// blocks until released, to hold a request in flight across a shutdown.
type drainEnclave struct {
	issuer   string
	inMint   chan struct{}
	release  chan struct{}
	released sync.Once
	log      *logtree.Log // a real audit log, as the enclave keeps
	resumes  chan string  // if set, gets the log named by each audit_resume
}

func (d *drainEnclave) Handle(ctx context.Context, op protocol.Op, body []byte) (any, error) {
	switch op {
	case protocol.OpInfo:
		return protocol.InfoResponse{ProtocolVersion: protocol.Version, Mode: "simulated", Policy: policy.Default(d.issuer)}, nil
	case protocol.OpAuditResume:
		var req protocol.AuditResumeRequest
		if err := protocol.Unmarshal(body, &req); err != nil {
			return nil, err
		}
		if d.resumes != nil {
			select {
			case d.resumes <- req.Log:
			default:
			}
		}
		return d.log.Resume(req)
	case protocol.OpMintOIDC:
		d.inMint <- struct{}{}
		<-d.release
		logged, err := d.log.Append(func(i int64) ([]byte, error) {
			return auditlog.Entry{Version: 1, Kind: "oidc_jwt", Outcome: "ok", Wallet: "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed", JTI: auditlog.EntryID("", i)}.Marshal()
		})
		if err != nil {
			return nil, err
		}
		return protocol.MintOIDCResponse{JWT: "aaa.bbb.ccc", Wallet: "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed", SessionID: "s1", Kid: "k",
			JTI: auditlog.EntryID("", logged.Index), Audience: "sts.amazonaws.com", IssuedAt: 1, ExpiresAt: 301, Log: logged}, nil
	}
	return nil, protocol.Errorf(protocol.CodeUnknownOp, "no")
}

func newDrainLog(t *testing.T, issuer string) *logtree.Log {
	t.Helper()
	origin := strings.TrimPrefix(issuer, "http://") + "/audit"
	l, err := logtree.New(logtree.Config{Origin: origin, Key: ed25519.NewKeyFromSeed(make([]byte, 32))})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestAuditLogNamePresented: the host presents --audit-log-name in the
// audit_resume it sends on connecting.
func TestAuditLogNamePresented(t *testing.T) {
	dir := t.TempDir()
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	issuer := fmt.Sprintf("http://127.0.0.1:%d", port)
	enc := &drainEnclave{issuer: issuer, log: newDrainLog(t, issuer), resumes: make(chan string, 16)}
	el, err := protocol.Listen("unix:" + dir + "/e.sock")
	if err != nil {
		t.Fatal(err)
	}
	esrv := &protocol.Server{Handler: enc}
	go esrv.Serve(el)
	defer esrv.Shutdown(context.Background())
	cfg, err := parseConfig([]string{"--port", strconv.Itoa(port), "--state-dir", dir, "--enclave", "unix:" + dir + "/e.sock"},
		func(k string) string { return map[string]string{"BROKER_AUDIT_LOG_NAME": "host-a"}[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, slog.New(slog.DiscardHandler)) }()
	select {
	case name := <-enc.resumes:
		if name != "host-a" {
			t.Errorf("audit_resume named %q, want host-a", name)
		}
	case <-time.After(60 * time.Second):
		t.Error("the host sent no audit_resume")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
}

// TestShutdownDrainsInFlight: a mint in flight when the host is told to stop
// completes (and is audited) before the host exits.
func TestShutdownDrainsInFlight(t *testing.T) {
	dir := t.TempDir()
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	issuer := fmt.Sprintf("http://127.0.0.1:%d", port)
	enc := &drainEnclave{issuer: issuer, inMint: make(chan struct{}, 1), release: make(chan struct{}), log: newDrainLog(t, issuer)}
	el, err := protocol.Listen("unix:" + dir + "/e.sock")
	if err != nil {
		t.Fatal(err)
	}
	esrv := &protocol.Server{Handler: enc}
	go esrv.Serve(el)
	defer esrv.Shutdown(context.Background())
	defer enc.released.Do(func() { close(enc.release) })

	cfg, err := parseConfig([]string{"--port", strconv.Itoa(port), "--state-dir", dir, "--enclave", "unix:" + dir + "/e.sock", "--shutdown-grace", "30"},
		func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, slog.New(slog.DiscardHandler)) }()
	for i := 0; ; i++ {
		resp, err := http.Get(issuer + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if i > 2000 {
			t.Fatal("host never became ready")
		}
		time.Sleep(10 * time.Millisecond)
	}

	type result struct {
		status int
		body   string
		err    error
	}
	res := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest("POST", issuer+"/v1/mint-oidc-jwt", nil)
		req.Header.Set("Authorization", "Bearer aaa.eyJzaWQiOiJzMSJ9.ccc")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			res <- result{err: err}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		res <- result{status: resp.StatusCode, body: string(b)}
	}()
	<-enc.inMint // the request is inside the enclave call
	cancel()     // SIGTERM
	// New requests are refused once the listener closes; wait for that.
	for i := 0; ; i++ {
		if _, err := http.Get(issuer + "/healthz"); err != nil {
			break
		}
		if i > 2000 {
			t.Fatal("the listener never closed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	enc.released.Do(func() { close(enc.release) })
	r := <-res
	if r.err != nil || r.status != 200 || !strings.Contains(r.body, `"jwt":"aaa.bbb.ccc"`) {
		t.Fatalf("in-flight mint across shutdown: %+v", r)
	}
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
	// Its audit record is durable.
	store, err := audit.OpenSQLite(cfg.AuditDB)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	recs, _ := store.List(context.Background(), 0, 10)
	if len(recs) != 1 || recs[0].Outcome != "ok" || recs[0].JTI != "0" || recs[0].Logged == nil || store.LogSize() != 1 {
		t.Fatalf("audit: %+v, log size %d", recs, store.LogSize())
	}
}

// TestMetricsPlacement: /metrics is on the API listener only on loopback (the
// Rust broker's layout) or when asked (--metrics-public); with TLS or behind a
// proxy it is off the public listener, and --metrics-listen gives it its own.
func TestMetricsPlacement(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		onAPI     bool
		ownListen bool
	}{
		{"loopback", nil, true, false},
		{"loopback, own listener", []string{"--metrics-listen", "127.0.0.1:9091"}, false, true},
		{"behind proxy", []string{"--behind-proxy", "--issuer", "https://b.example.com", "--issuer-origin", "host"}, false, false},
		{"behind proxy, public", []string{"--behind-proxy", "--issuer", "https://b.example.com", "--issuer-origin", "host", "--metrics-public"}, true, false},
		{"behind proxy, own listener", []string{"--behind-proxy", "--issuer", "https://b.example.com", "--issuer-origin", "host", "--metrics-listen", "127.0.0.1:9091"}, false, true},
		{"tls", []string{"--tls-domain", "b.example.com", "--issuer-origin", "host"}, false, false},
		{"tls, public", []string{"--tls-domain", "b.example.com", "--issuer-origin", "host", "--metrics-public"}, true, false},
		{"tls, issuer origin by SNI", []string{"--tls-domain", "api.b.example.com", "--issuer", "https://b.example.com", "--api-url", "https://api.b.example.com"}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg, err := parseConfig(append(tt.args, "--state-dir", dir), func(string) string { return "" }, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			dial, _ := protocol.Dialer("unix:" + dir + "/none.sock")
			enc := enclaveclient.New(enclaveclient.Config{Dial: dial})
			defer enc.Close()
			d := &deps{audit: audit.NewMemory(), revs: revocation.NewMemory(), enc: enc, metrics: metrics.New(enc)}
			log := slog.New(slog.DiscardHandler)
			acfg, err := apiConfig(cfg, d, log)
			if err != nil {
				t.Fatal(err)
			}
			a, err := api.New(acfg)
			if err != nil {
				t.Fatal(err)
			}
			rec := httptest.NewRecorder()
			a.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
			if got := rec.Code == 200; got != tt.onAPI {
				t.Errorf("GET /metrics on the API: %d, want it served: %t", rec.Code, tt.onAPI)
			}
			scfg, err := serverConfig(cfg, a, d, log)
			if err != nil {
				t.Fatal(err)
			}
			if got := scfg.Metrics != nil; got != tt.ownListen || (got && scfg.MetricsAddr != "127.0.0.1:9091") {
				t.Errorf("metrics listener %q (handler %t), want one: %t", scfg.MetricsAddr, got, tt.ownListen)
			}
		})
	}
}

// TestStandardLogIsJSON: what libraries print with the standard log package
// reaches the JSON log.
func TestStandardLogIsJSON(t *testing.T) {
	w, flags, def := stdlog.Writer(), stdlog.Flags(), slog.Default()
	t.Cleanup(func() { slog.SetDefault(def); stdlog.SetOutput(w); stdlog.SetFlags(flags) })
	var buf strings.Builder
	newLogger(&buf, "info")
	stdlog.Printf("a library speaks")
	var rec map[string]any
	if err := json.Unmarshal([]byte(buf.String()), &rec); err != nil || rec["msg"] != "a library speaks" {
		t.Fatalf("standard log output: %q (%v)", buf.String(), err)
	}
}

// TestWitnessWiring: --witness builds the witness set over the audit store,
// its lag gauge on the host's metrics registry, and hands it to the API;
// without the flag there is none.
func TestWitnessWiring(t *testing.T) {
	for _, withWitness := range []bool{false, true} {
		dir := t.TempDir()
		args := []string{"--state-dir", dir, "--enclave", "unix:" + dir + "/none.sock"}
		if withWitness {
			args = append(args, "--witness", "http://127.0.0.1:1="+testWitnessKey)
		}
		cfg, err := parseConfig(args, func(string) string { return "" }, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		d, err := openDeps(context.Background(), cfg, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		apiCfg, err := apiConfig(cfg, d, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		mfs, err := d.metrics.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		gauge := false
		for _, mf := range mfs {
			gauge = gauge || mf.GetName() == "agentkeys_witness_lag_entries"
		}
		if (d.witnesses != nil) != withWitness || (apiCfg.Witnesses != nil) != withWitness || gauge != withWitness {
			t.Errorf("--witness %v: witnesses %v, in the API config %v, lag gauge registered %v", withWitness, d.witnesses != nil, apiCfg.Witnesses != nil, gauge)
		}
		d.close()
	}
}
