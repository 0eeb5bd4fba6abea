package api_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/agentkeys/broker/host/awscreds"
	"github.com/agentkeys/broker/internal/stsserver"
	"github.com/agentkeys/broker/internal/testbroker"
)

const testRole = "arn:aws:iam::123456789012:role/agentkeys-data-role"

// awsBroker starts a broker whose /v1/mint-aws-creds talks, with the real AWS
// SDK, to a local STS that verifies the broker's JWTs against its live
// discovery document and JWKS.
func awsBroker(t *testing.T, mode awscreds.Mode) (*testbroker.Broker, *stsserver.Server) {
	t.Helper()
	var sts *stsserver.Server
	b := testbroker.Start(t, testbroker.Options{AWS: func(issuer string) *awscreds.Broker {
		sts = stsserver.New(stsserver.Options{
			Roles:           []stsserver.Role{{ARN: testRole, ProviderIssuer: issuer, RequireTag: "agentkeys_user_wallet", MaxSessionDuration: 12 * time.Hour}},
			AccessKeys:      []stsserver.AccessKey{{ID: "AKIAHOSTEXAMPLE00001", Secret: "host-secret", ARN: "arn:aws:iam::123456789012:user/broker-host"}},
			AllowHTTPIssuer: true,
		})
		url := sts.Start(t)
		cfg := awscreds.Config{Mode: mode, RoleARN: testRole, Endpoint: url, Backoff: time.Millisecond}
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

func mintCreds(t *testing.T, b *testbroker.Broker, tok, body string) response {
	t.Helper()
	return do(t, "POST", b.URL+"/v1/mint-aws-creds", map[string]string{"Authorization": "Bearer " + tok}, strings.NewReader(body))
}

func TestMintAWSCredsWebIdentity(t *testing.T) {
	b, sts := awsBroker(t, awscreds.ModeWebIdentity)
	tok, wallet := signIn(t, b)
	r := mintCreds(t, b, tok, "")
	if r.status != 200 {
		t.Fatalf("mint-aws-creds: %d %s", r.status, r.body)
	}
	j := r.json(t)
	akid, _ := j["access_key_id"].(string)
	if j["wallet"] != wallet || akid == "" || j["secret_access_key"] == "" || j["session_token"] == "" {
		t.Fatalf("body: %s", r.body)
	}
	if len(j) != 6 || j["log_proof"] == nil {
		t.Fatalf("want exactly the Rust broker's five fields and log_proof: %s", r.body)
	}
	// The proof is of the credentials' own, host-asserted entry, which names
	// the access key and, as jti, the log index of the JWT STS was given;
	// STS's session carries that index as a tag, as CloudTrail would.
	e := b.CheckProof(t, j["log_proof"].(string))
	if e.Kind != "aws_creds" || !e.HostAsserted || e.AccessKeyID != akid || e.Wallet != wallet || e.JTI == "" {
		t.Fatalf("the credentials' log entry: %+v", e)
	}
	if c, _ := sts.Issued(akid); c.PrincipalTags["agentkeys_log_index"] != e.JTI {
		t.Fatalf("STS session tags %v, want agentkeys_log_index %s", c.PrincipalTags, e.JTI)
	}
	// STS set the principal tag from the JWT's tags claim.
	creds, ok := sts.Issued(akid)
	if !ok || creds.PrincipalTags["agentkeys_user_wallet"] != wallet || creds.Subject != "agentkeys:agent:"+wallet {
		t.Fatalf("issued: %+v", creds)
	}
	if exp := int64(j["expiration"].(float64)); exp != creds.Expiration.Unix() || time.Until(creds.Expiration) < 59*time.Minute {
		t.Fatalf("expiration %d, issued %v", exp, creds.Expiration)
	}
	calls := sts.Calls()
	last := calls[len(calls)-1]
	if !strings.HasPrefix(last.RoleSessionName, "agentkeys-"+wallet+"-") || last.DurationSeconds != 3600 || last.Action != "AssumeRoleWithWebIdentity" {
		t.Fatalf("call: %+v", last)
	}
	// Both the JWT for the exchange and the credentials are audited, in order.
	rs := records(t, b)
	jr, cr := rs[len(rs)-2], rs[len(rs)-1]
	if jr.Kind != "oidc_jwt" || jr.Outcome != "ok" || jr.Detail != "for aws_creds" || jr.JTI != last.Claims["jti"] {
		t.Fatalf("jwt record: %+v", jr)
	}
	if cr.Kind != "aws_creds" || cr.Outcome != "ok" || cr.Wallet != wallet || cr.Detail != "access_key_id "+akid || cr.TTLSeconds != 3600 {
		t.Fatalf("creds record: %+v", cr)
	}
	// Duration bounds.
	if r := mintCreds(t, b, tok, `{"duration_seconds":900}`); r.status != 200 || sts.Calls()[len(sts.Calls())-1].DurationSeconds != 900 {
		t.Fatalf("900 s: %d %s", r.status, r.body)
	}
	if r := mintCreds(t, b, tok, `{"duration_seconds":43200}`); r.status != 200 {
		t.Fatalf("43200 s: %d %s", r.status, r.body)
	}
	for _, d := range []string{"899", "43201", "-1"} {
		r := mintCreds(t, b, tok, `{"duration_seconds":`+d+`}`)
		if r.status != 400 || !strings.Contains(string(r.body), "between 900 and 43200") {
			t.Errorf("duration %s: %d %s", d, r.status, r.body)
		}
		if rec := lastRecord(t, b); rec.Kind != "aws_creds" || rec.Outcome != "policy_refused" {
			t.Errorf("duration %s: record %+v", d, rec)
		}
	}
}

// TestMintAWSCredsSTSErrors: each STS failure is 502 sts_error with its code
// and hint, returns no credentials, and is audited; the retryable ones are
// retried a bounded number of times.
func TestMintAWSCredsSTSErrors(t *testing.T) {
	b, sts := awsBroker(t, awscreds.ModeWebIdentity)
	tok, _ := signIn(t, b)
	const noKey = "Couldn't retrieve verification key from your identity provider,  please reference AssumeRoleWithWebIdentity documentation for requirements"
	tests := []struct {
		code, message string
		fail          int // injected failures
		status        int
		hint          string
		calls         int // STS calls made
	}{
		{"AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity", 1, 502, "sts:TagSession", 1},
		{"InvalidIdentityToken", noKey, 3, 502, "publicly reachable over TLS", 3},
		{"InvalidIdentityToken", noKey, 2, 200, "", 3},
		{"IDPCommunicationError", "could not reach the IdP", 1, 200, "", 2},
		{"IDPCommunicationError", "could not reach the IdP", 5, 502, "publicly reachable", 3},
		{"InvalidIdentityToken", "No OpenIDConnect provider found in your account for https://x", 1, 502, "register the issuer", 1},
		{"ExpiredTokenException", "Token expired", 1, 502, "clocks", 1},
		{"RegionDisabledException", "STS is not activated in this region", 1, 502, "BROKER_AWS_REGION", 1},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s x%d", tt.code, tt.fail), func(t *testing.T) {
			before := len(sts.Calls())
			sts.FailNext("AssumeRoleWithWebIdentity", tt.code, tt.message, tt.fail)
			defer sts.FailNext("AssumeRoleWithWebIdentity", "", "", 0)
			r := mintCreds(t, b, tok, "")
			if n := len(sts.Calls()) - before; n != tt.calls {
				t.Errorf("%d STS calls, want %d", n, tt.calls)
			}
			rec := lastRecord(t, b)
			if tt.status == 200 {
				if r.status != 200 || rec.Outcome != "ok" {
					t.Fatalf("after retries: %d %s", r.status, r.body)
				}
				return
			}
			j := r.json(t)
			msg, _ := j["message"].(string)
			if r.status != 502 || j["error"] != "sts_error" || !strings.HasPrefix(msg, tt.code+": ") || !strings.Contains(msg, tt.hint) || j["access_key_id"] != nil {
				t.Fatalf("got %d %s", r.status, r.body)
			}
			if rec.Kind != "aws_creds" || rec.Outcome != "sts_error" || !strings.Contains(rec.Detail, tt.code) {
				t.Fatalf("record: %+v", rec)
			}
			// The JWT STS refused is in the log, and so is the refusal.
			if e := entryOf(t, b, rec.Logged.Index); !e.HostAsserted || e.Outcome != "sts_error" || e.Kind != "aws_creds" {
				t.Fatalf("entry of the STS refusal: %+v", e)
			}
			b.CheckLogWhole(t)
		})
	}
}

func TestMintAWSCredsRefusals(t *testing.T) {
	b, sts := awsBroker(t, awscreds.ModeWebIdentity)
	tok, _ := signIn(t, b)
	before := len(sts.Calls())
	if r := mintCreds(t, b, "garbage", ""); r.status != 401 {
		t.Fatalf("bad session: %d %s", r.status, r.body)
	}
	do(t, "POST", b.URL+"/v1/session/revoke", map[string]string{"Authorization": "Bearer " + tok}, nil)
	if r := mintCreds(t, b, tok, ""); r.status != 401 || !strings.Contains(string(r.body), "revoked") {
		t.Fatalf("revoked session: %d %s", r.status, r.body)
	}
	if rec := lastRecord(t, b); rec.Kind != "oidc_jwt" || rec.Outcome != "revoked" || !strings.HasPrefix(rec.Detail, "for aws_creds: ") {
		t.Fatalf("record: %+v", rec)
	}
	if len(sts.Calls()) != before {
		t.Fatal("STS was called for a refused session")
	}

	// The audit store fails after STS answered: no credentials leave the host.
	tok2, _ := signIn(t, b)
	b.Memory.SetFailure(errors.New("disk full"))
	r := mintCreds(t, b, tok2, "")
	if r.status != 500 || strings.Contains(string(r.body), "access_key_id") || r.json(t)["error"] != "audit_error" {
		t.Fatalf("with a failing audit store: %d %s", r.status, r.body)
	}
	b.Memory.SetFailure(nil)

	// A host without a role answers 503 and says what to set.
	plain := testbroker.Start(t, testbroker.Options{})
	tok3, _ := signIn(t, plain)
	if r := mintCreds(t, plain, tok3, ""); r.status != 503 || !strings.Contains(string(r.body), "BROKER_DATA_ROLE_ARN") {
		t.Fatalf("unconfigured: %d %s", r.status, r.body)
	}
}

func TestMintAWSCredsAssumeRole(t *testing.T) {
	b, sts := awsBroker(t, awscreds.ModeAssumeRole)
	tok, wallet := signIn(t, b)
	r := mintCreds(t, b, tok, `{"duration_seconds":1800}`)
	if r.status != 200 {
		t.Fatalf("assume-role: %d %s", r.status, r.body)
	}
	calls := sts.Calls()
	last := calls[len(calls)-1]
	if last.Action != "AssumeRole" || last.SourceIdentity != wallet || last.SessionTags["agentkeys_user_wallet"] != wallet ||
		len(last.TransitiveTagKeys) != 1 || last.TransitiveTagKeys[0] != "agentkeys_user_wallet" || last.DurationSeconds != 1800 ||
		last.Caller != "arn:aws:iam::123456789012:user/broker-host" {
		t.Fatalf("call: %+v", last)
	}
	// No JWT was minted in this mode: the last two records are the sign-in and the creds.
	rs := records(t, b)
	if rs[len(rs)-1].Kind != "aws_creds" || rs[len(rs)-2].Kind != "session" {
		t.Fatalf("records: %+v", rs[len(rs)-2:])
	}
	// A revoked session gets nothing in this mode either.
	do(t, "POST", b.URL+"/v1/session/revoke", map[string]string{"Authorization": "Bearer " + tok}, nil)
	if r := mintCreds(t, b, tok, ""); r.status != 401 {
		t.Fatalf("revoked: %d", r.status)
	}
	sts.FailNext("AssumeRole", "AccessDenied", "User is not authorized to perform: sts:AssumeRole", 1)
	tok2, _ := signIn(t, b)
	r = mintCreds(t, b, tok2, "")
	if r.status != 502 || !strings.Contains(string(r.body), "sts:SetSourceIdentity") {
		t.Fatalf("assume-role AccessDenied: %d %s", r.status, r.body)
	}
}
