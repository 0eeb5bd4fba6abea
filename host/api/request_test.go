package api_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/agentkeys/broker/host/awscreds"
	"github.com/agentkeys/broker/internal/testbroker"
	"github.com/agentkeys/broker/shared/httpapi"
	"github.com/agentkeys/broker/shared/manifest"
)

// TestStrictRequestBodies: on every route with a body, an unknown key, a key
// given twice or a key in another case is 400 bad_request, audited, and
// nothing is minted — where encoding/json would have taken the last key or
// filled the field anyway.
func TestStrictRequestBodies(t *testing.T) {
	b, _ := awsBroker(t, awscreds.ModeWebIdentity)
	tok, _ := signIn(t, b)
	auth := map[string]string{"Authorization": "Bearer " + tok}
	tests := []struct {
		route, body, want string
	}{
		{httpapi.PathMintJWT, `{"audience":"sts.amazonaws.com","audience":"evil"}`, "audience: key appears twice"},
		{httpapi.PathMintJWT, `{"Audience":"evil"}`, `keys are case-sensitive; want \"audience\"`},
		{httpapi.PathMintJWT, `{"TTL_SECONDS":120}`, "case-sensitive"},
		{httpapi.PathMintJWT, `{"aud":"x"}`, "aud: unknown field"},
		{httpapi.PathMintJWT, `{} {}`, "trailing data"},
		{httpapi.PathMintJWT, `[]`, "want a JSON object"},
		{httpapi.PathMintAWSCreds, `{"duration_seconds":900,"duration_seconds":43200}`, "key appears twice"},
		{httpapi.PathMintAWSCreds, `{"Duration_Seconds":900}`, "case-sensitive"},
		{httpapi.PathMintAWSCreds, `{"role_arn":"arn:aws:iam::1:role/x"}`, "unknown field"},
		{httpapi.PathSession, `{"message":"m","signature":"0x00","message":"n"}`, "key appears twice"},
		{httpapi.PathSession, `{"Message":"m","signature":"0x00"}`, "case-sensitive"},
		{httpapi.PathSession, `{"message":"m","signature":"0x00","chain_id":1}`, "unknown field"},
	}
	for _, tt := range tests {
		before := len(records(t, b))
		h := auth
		if tt.route == httpapi.PathSession {
			h = nil
		}
		r := do(t, "POST", b.URL+tt.route, h, strings.NewReader(tt.body))
		if r.status != http.StatusBadRequest || r.json(t)["error"] != "bad_request" || !strings.Contains(string(r.body), tt.want) {
			t.Errorf("%s %s: %d %s, want 400 with %q", tt.route, tt.body, r.status, r.body, tt.want)
			continue
		}
		rs := records(t, b)
		if len(rs) != before+1 || rs[len(rs)-1].Outcome != "bad_request" {
			t.Errorf("%s %s: not audited as bad_request: %+v", tt.route, tt.body, rs[len(rs)-1])
		}
	}
}

// TestRevokeSaysWhetherNew: the first revocation answers revoked: true, a
// second one revoked: false, both with the wallet.
func TestRevokeSaysWhetherNew(t *testing.T) {
	b := testbroker.Start(t, testbroker.Options{})
	tok, wallet := signIn(t, b)
	auth := map[string]string{"Authorization": "Bearer " + tok}
	for i, want := range []bool{true, false} {
		r := do(t, "POST", b.URL+httpapi.PathRevoke, auth, nil)
		var v httpapi.RevokeResponse
		if err := json.Unmarshal(r.body, &v); err != nil || r.status != 200 || v.Revoked != want || v.Wallet != wallet {
			t.Fatalf("revoke %d: %d %s, want revoked %v", i+1, r.status, r.body, want)
		}
		rec := lastRecord(t, b)
		if rec.Kind != "session_revoke" || rec.Outcome != "ok" || rec.Wallet != wallet || strings.Contains(rec.Detail, "revoked already") == want {
			t.Fatalf("revoke %d: record %+v", i+1, rec)
		}
	}
}

// TestForgedTokenNamingRevokedSession: a token that names a revoked session's
// sid but is not the enclave's is answered as any bad token is (the enclave's
// error, audited unauthorized), not "revoked": the host decodes no unverified
// token, so it cannot be asked which sessions exist and are revoked.
func TestForgedTokenNamingRevokedSession(t *testing.T) {
	b := testbroker.Start(t, testbroker.Options{})
	tok, _ := signIn(t, b)
	if r := do(t, "POST", b.URL+httpapi.PathRevoke, map[string]string{"Authorization": "Bearer " + tok}, nil); r.status != 200 {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	// The revoked session itself: 401 revoked, no JWT.
	r := mint(t, b, "Bearer "+tok, "")
	if r.status != 401 || !strings.Contains(string(r.body), "revoked") || bytes.Contains(r.body, []byte(`"jwt"`)) {
		t.Fatalf("revoked session: %d %s", r.status, r.body)
	}
	if rec := lastRecord(t, b); rec.Outcome != "revoked" {
		t.Fatalf("record: %+v", rec)
	}
	// The same header and claims (the same sid), another session's signature:
	// well-formed, canonical, low-s, and not the enclave's over these bytes.
	other, _ := signIn(t, b)
	parts := strings.Split(tok, ".")
	forged := parts[0] + "." + parts[1] + "." + strings.Split(other, ".")[2]
	garbage := "eyJhbGciOiJFUzI1NiJ9.eyJzaWQiOiJub3BlIn0.c2ln"
	want := mint(t, b, "Bearer "+garbage, "")
	for _, path := range []string{httpapi.PathMintJWT, httpapi.PathMintAWSCreds, httpapi.PathRevoke} {
		r := do(t, "POST", b.URL+path, map[string]string{"Authorization": "Bearer " + forged}, nil)
		if r.status != 401 || strings.Contains(string(r.body), "revoked") {
			t.Errorf("%s with a forged token naming a revoked sid: %d %s", path, r.status, r.body)
		}
		if path == httpapi.PathMintJWT && string(r.body) != string(want.body) {
			t.Errorf("forged token answered %s, a bad token %s", r.body, want.body)
		}
		if rec := lastRecord(t, b); rec.Outcome != "unauthorized" || rec.Wallet != "unknown" {
			t.Errorf("%s: record %+v", path, rec)
		}
	}
}

// TestManifestRoute: GET /.well-known/agentkeys-manifest.json serves the
// manifest bytes of the enclave's Info unchanged.
func TestManifestRoute(t *testing.T) {
	b := testbroker.Start(t, testbroker.Options{})
	info, ok := b.Enclave.Info()
	if !ok || len(info.Manifest) == 0 {
		t.Fatal("no Info manifest")
	}
	r := do(t, "GET", b.URL+httpapi.PathManifest, nil, nil)
	if r.status != 200 || r.header.Get("Content-Type") != "application/json" || !bytes.Equal(r.body, info.Manifest) {
		t.Fatalf("manifest: %d %q %s", r.status, r.header.Get("Content-Type"), r.body)
	}
	if _, err := manifest.Parse(r.body); err != nil {
		t.Fatalf("served manifest does not parse: %v", err)
	}
	if r := do(t, "POST", b.URL+httpapi.PathManifest, nil, nil); r.status != 405 {
		t.Fatalf("POST: %d", r.status)
	}
}
