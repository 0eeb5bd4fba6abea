package api_test

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentkeys/broker/host/api"
	"github.com/agentkeys/broker/host/audit"
	"github.com/agentkeys/broker/host/awscreds"
	"github.com/agentkeys/broker/host/revocation"
	"github.com/agentkeys/broker/internal/lockedbuf"
	"github.com/agentkeys/broker/internal/stsserver"
	"github.com/agentkeys/broker/internal/testbroker"
	"github.com/agentkeys/broker/shared/policy"
	"github.com/agentkeys/broker/shared/protocol"
)

// awsBrokerWith is awsBroker with an adjusted enclave policy.
func awsBrokerWith(t *testing.T, mode awscreds.Mode, adjust func(*policy.Policy)) (*testbroker.Broker, *stsserver.Server) {
	t.Helper()
	var sts *stsserver.Server
	b := testbroker.Start(t, testbroker.Options{Policy: adjust, AWS: func(issuer string) *awscreds.Broker {
		sts = stsserver.New(stsserver.Options{
			Roles:           []stsserver.Role{{ARN: testRole, ProviderIssuer: issuer, RequireTag: "agentkeys_user_wallet", MaxSessionDuration: 12 * time.Hour}},
			AccessKeys:      []stsserver.AccessKey{{ID: "AKIAHOSTEXAMPLE00001", Secret: "host-secret", ARN: "arn:aws:iam::123456789012:user/broker-host"}},
			AllowHTTPIssuer: true,
		})
		cfg := awscreds.Config{Mode: mode, RoleARN: testRole, Endpoint: sts.Start(t), Backoff: time.Millisecond}
		if mode == awscreds.ModeAssumeRole {
			cfg.StaticAccessKeyID, cfg.StaticSecretAccessKey = "AKIAHOSTEXAMPLE00001", "host-secret"
		}
		ab, err := awscreds.New(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		return ab
	}})
	return b, sts
}

// TestAWSLifetimeClampedToSession: credentials never outlive the session behind
// them; with less than 900 s of it left the answer is 400, STS is not called,
// and the refusal is audited with the wallet. In both modes.
func TestAWSLifetimeClampedToSession(t *testing.T) {
	for _, mode := range []awscreds.Mode{awscreds.ModeWebIdentity, awscreds.ModeAssumeRole} {
		t.Run(string(mode), func(t *testing.T) {
			// A session of 1800 s: the default 3600 s is cut to what is left.
			b, sts := awsBrokerWith(t, mode, func(p *policy.Policy) { p.SessionLifetime = 1800 })
			tok, wallet := signIn(t, b)
			r := mintCreds(t, b, tok, "")
			if r.status != 200 {
				t.Fatalf("mint: %d %s", r.status, r.body)
			}
			calls := sts.Calls()
			d := calls[len(calls)-1].DurationSeconds
			if d > 1800 || d < 1700 {
				t.Fatalf("STS was asked for %d s; the session has at most 1800 s left", d)
			}
			if rec := lastRecord(t, b); rec.Kind != "aws_creds" || rec.Outcome != "ok" || rec.TTLSeconds != int64(d) {
				t.Fatalf("record %+v, want TTL %d", rec, d)
			}
			// A shorter request than what is left is kept as asked.
			if r := mintCreds(t, b, tok, `{"duration_seconds":900}`); r.status != 200 || sts.Calls()[len(sts.Calls())-1].DurationSeconds != 900 {
				t.Fatalf("900 s: %d %s", r.status, r.body)
			}

			// A session of 600 s is too short for any AWS credentials.
			short, ssts := awsBrokerWith(t, mode, func(p *policy.Policy) { p.SessionLifetime = 600 })
			tok, wallet = signIn(t, short)
			before := len(ssts.Calls())
			r = mintCreds(t, short, tok, "")
			j := r.json(t)
			msg, _ := j["message"].(string)
			if r.status != 400 || j["error"] != "bad_request" || !strings.Contains(msg, "s left, less than the 900 s") || !strings.Contains(msg, "sign in again") {
				t.Fatalf("short session: %d %s", r.status, r.body)
			}
			if len(ssts.Calls()) != before {
				t.Fatal("STS was called for a session with less than 900 s left")
			}
			if rec := lastRecord(t, short); rec.Kind != "aws_creds" || rec.Outcome != "policy_refused" || rec.Wallet != wallet || !strings.Contains(rec.Detail, "sign in again") {
				t.Fatalf("record: %+v", rec)
			}
		})
	}
}

// TestAWSLifetimeFromPolicy: the bounds and the default come from the enclave
// policy the host reads in Info, not from constants of the host.
func TestAWSLifetimeFromPolicy(t *testing.T) {
	b, sts := awsBrokerWith(t, awscreds.ModeWebIdentity, func(p *policy.Policy) {
		p.AWSDurationMin, p.AWSDurationDefault, p.AWSDurationMax = 1000, 1200, 1800
	})
	tok, _ := signIn(t, b)
	if r := mintCreds(t, b, tok, ""); r.status != 200 || sts.Calls()[len(sts.Calls())-1].DurationSeconds != 1200 {
		t.Fatalf("default: %d %s", r.status, r.body)
	}
	for _, d := range []string{"900", "1801", "43200"} {
		r := mintCreds(t, b, tok, `{"duration_seconds":`+d+`}`)
		if r.status != 400 || !strings.Contains(string(r.body), "between 1000 and 1800") {
			t.Errorf("%s s: %d %s", d, r.status, r.body)
		}
	}
}

// TestSessionDurationOutsidePolicy: the host's default lifetime is checked
// against the enclave policy at start when Info is known, and at request time
// otherwise.
func TestSessionDurationOutsidePolicy(t *testing.T) {
	b := testbroker.Start(t, testbroker.Options{Policy: func(p *policy.Policy) { p.AWSDurationMax = 1800; p.AWSDurationDefault = 1800 }})
	cfg := api.Config{Issuer: b.URL, Enclave: b.Enclave, Audit: audit.NewMemory(), Revocations: revocation.NewMemory(), SessionDuration: time.Hour}
	if _, err := api.New(cfg); err == nil || !strings.Contains(err.Error(), "BROKER_SESSION_DURATION_SECONDS=3600") {
		t.Fatalf("New with a default outside policy: %v", err)
	}

	// Info not yet known at start: the request is refused, and says why.
	ab, err := awscreds.New(context.Background(), awscreds.Config{RoleARN: testRole, Endpoint: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	late := &lateInfo{Enclave: b.Enclave}
	cfg.Enclave, cfg.AWS = late, ab
	a, err := api.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	late.ready.Store(true)
	tok, _ := signIn(t, b)
	req := httptest.NewRequest("POST", "/v1/mint-aws-creds", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	w := httptest.NewRecorder()
	a.ServeHTTP(w, req)
	if w.Code != 500 || !strings.Contains(w.Body.String(), "BROKER_SESSION_DURATION_SECONDS=3600") || !strings.Contains(w.Body.String(), "[900, 1800]") {
		t.Fatalf("request with a default outside policy: %d %s", w.Code, w.Body)
	}
	rec := httptest.NewRequest("POST", "/v1/mint-aws-creds", strings.NewReader(`{"duration_seconds":1000}`))
	rec.Header.Set("Authorization", "Bearer "+tok)
	w = httptest.NewRecorder()
	a.ServeHTTP(w, rec)
	if w.Code != 502 { // within policy: it goes on to STS, which is not there
		t.Fatalf("request within policy: %d %s", w.Code, w.Body)
	}
}

// lateInfo is an enclave whose Info is not known until ready is set.
type lateInfo struct {
	api.Enclave
	ready atomic.Bool
}

func (l *lateInfo) Info() (*protocol.InfoResponse, bool) {
	if !l.ready.Load() {
		return nil, false
	}
	return l.Enclave.Info()
}

// TestSTSUnreachable: a transport error is logged with its error, and the
// client gets 502 sts_error with the code and a hint, but not the endpoint.
func TestSTSUnreachable(t *testing.T) {
	// An address that refuses connections: a listener closed at once.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	var logs lockedbuf.Buffer
	for _, mode := range []awscreds.Mode{awscreds.ModeWebIdentity, awscreds.ModeAssumeRole} {
		t.Run(string(mode), func(t *testing.T) {
			b := testbroker.Start(t, testbroker.Options{Logger: slog.New(slog.NewJSONHandler(&logs, nil)), AWS: func(string) *awscreds.Broker {
				cfg := awscreds.Config{Mode: mode, RoleARN: testRole, Endpoint: "http://" + addr, Backoff: time.Millisecond}
				if mode == awscreds.ModeAssumeRole {
					cfg.StaticAccessKeyID, cfg.StaticSecretAccessKey = "AKIAHOSTEXAMPLE00001", "host-secret"
				}
				ab, err := awscreds.New(context.Background(), cfg)
				if err != nil {
					t.Fatal(err)
				}
				return ab
			}})
			tok, wallet := signIn(t, b)
			r := mintCreds(t, b, tok, "")
			j := r.json(t)
			msg, _ := j["message"].(string)
			if r.status != http.StatusBadGateway || j["error"] != "sts_error" || !strings.HasPrefix(msg, "RequestFailed: ") || !strings.Contains(msg, "BROKER_STS_ENDPOINT") {
				t.Fatalf("got %d %s", r.status, r.body)
			}
			_, port, _ := net.SplitHostPort(addr)
			if strings.Contains(string(r.body), "127.0.0.1") || strings.Contains(string(r.body), port) {
				t.Fatalf("the answer names the STS endpoint: %s", r.body)
			}
			if rec := lastRecord(t, b); rec.Kind != "aws_creds" || rec.Outcome != "sts_error" || rec.Wallet != wallet || strings.Contains(rec.Detail, "127.0.0.1") {
				t.Fatalf("record: %+v", rec)
			}
			if !strings.Contains(logs.String(), `"code":"RequestFailed"`) || !strings.Contains(logs.String(), addr) {
				t.Fatalf("the log lacks the transport error:\n%s", logs.String())
			}
		})
	}
}

// TestAWSOffIsAuditedUnavailable: on a host without a role, a mint is 503 and
// recorded as unavailable with the verified wallet; a bad session is still 401.
func TestAWSOffIsAuditedUnavailable(t *testing.T) {
	b := testbroker.Start(t, testbroker.Options{})
	tok, wallet := signIn(t, b)
	r := mintCreds(t, b, tok, "")
	if r.status != 503 || r.json(t)["error"] != "unavailable" || !strings.Contains(string(r.body), "BROKER_DATA_ROLE_ARN") {
		t.Fatalf("unconfigured: %d %s", r.status, r.body)
	}
	if rec := lastRecord(t, b); rec.Kind != "aws_creds" || rec.Outcome != "unavailable" || rec.Wallet != wallet {
		t.Fatalf("record: %+v", rec)
	}
	if r := mintCreds(t, b, "garbage", ""); r.status != 401 {
		t.Fatalf("bad session on an unconfigured host: %d %s", r.status, r.body)
	}
	if rec := lastRecord(t, b); rec.Kind != "aws_creds" || rec.Outcome != "unauthorized" || rec.Wallet != "unknown" {
		t.Fatalf("record: %+v", rec)
	}
}
