package api_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	"github.com/hf/nitrite"

	"github.com/agentkeys/broker/host/audit"
	"github.com/agentkeys/broker/host/ratelimit"
	"github.com/agentkeys/broker/internal/testbroker"
	"github.com/agentkeys/broker/shared/jwk"
	"github.com/agentkeys/broker/shared/manifest"
	"github.com/agentkeys/broker/shared/policy"
	"github.com/agentkeys/broker/shared/siwe"
)

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body is not JSON: %v: %s", err, r.body)
	}
	return m
}

func do(t *testing.T, method, u string, header map[string]string, body io.Reader) response {
	t.Helper()
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{resp.StatusCode, resp.Header, b}
}

func signIn(t *testing.T, b *testbroker.Broker) (token, wallet string) {
	t.Helper()
	key, _ := secp256k1.GeneratePrivateKey()
	addr, _ := siwe.ChecksumAddress(siwe.AddressOf(key.PubKey()))
	r := do(t, "GET", b.URL+"/v1/session/nonce", nil, nil)
	if r.status != 200 {
		t.Fatalf("nonce: %d %s", r.status, r.body)
	}
	nonce := r.json(t)["nonce"].(string)
	u, _ := url.Parse(b.URL)
	m := &siwe.Message{Domain: u.Host, Address: addr, URI: b.URL + "/v1/session", Version: "1", ChainID: 1, Nonce: nonce, IssuedAt: time.Now().Truncate(time.Second)}
	text := m.String()
	sig := siwe.Sign(key, []byte(text))
	body, _ := json.Marshal(map[string]string{"message": text, "signature": "0x" + hex.EncodeToString(sig)})
	r = do(t, "POST", b.URL+"/v1/session", nil, bytes.NewReader(body))
	if r.status != 200 {
		t.Fatalf("sign-in: %d %s", r.status, r.body)
	}
	j := r.json(t)
	if j["wallet"] != strings.ToLower(addr) {
		t.Fatalf("sign-in wallet %v", j["wallet"])
	}
	return j["session"].(string), strings.ToLower(addr)
}

func mint(t *testing.T, b *testbroker.Broker, auth string, body string) response {
	t.Helper()
	h := map[string]string{}
	if auth != "" {
		h["Authorization"] = auth
	}
	return do(t, "POST", b.URL+"/v1/mint-oidc-jwt", h, strings.NewReader(body))
}

func records(t *testing.T, b *testbroker.Broker) []audit.Record {
	t.Helper()
	rs, err := b.Audit.List(context.Background(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func lastRecord(t *testing.T, b *testbroker.Broker) audit.Record {
	t.Helper()
	rs := records(t, b)
	if len(rs) == 0 {
		t.Fatal("no audit records")
	}
	return rs[len(rs)-1]
}

func TestPublicRoutes(t *testing.T) {
	b := testbroker.Start(t, testbroker.Options{})
	if r := do(t, "GET", b.URL+"/healthz", nil, nil); r.status != 200 || string(r.body) != "ok" {
		t.Fatalf("healthz: %d %q", r.status, r.body)
	}
	r := do(t, "GET", b.URL+"/readyz", nil, nil)
	if r.status != 200 || r.json(t)["status"] != "ready" {
		t.Fatalf("readyz: %d %s", r.status, r.body)
	}
	r = do(t, "GET", b.URL+"/.well-known/openid-configuration", nil, nil)
	d := r.json(t)
	if r.status != 200 || d["issuer"] != b.URL || d["jwks_uri"] != b.URL+"/.well-known/jwks.json" ||
		fmt.Sprint(d["id_token_signing_alg_values_supported"]) != "[ES256]" ||
		!strings.Contains(fmt.Sprint(d["claims_supported"]), "https://aws.amazon.com/tags") {
		t.Fatalf("discovery: %s", r.body)
	}
	r = do(t, "GET", b.URL+"/.well-known/jwks.json", nil, nil)
	if r.status != 200 || r.header.Get("Cache-Control") != "public, max-age=300" || r.header.Get("ETag") == "" {
		t.Fatalf("jwks: %d %v", r.status, r.header)
	}
	var set jwk.Set
	if err := json.Unmarshal(r.body, &set); err != nil || len(set.Keys) != 1 {
		t.Fatalf("jwks body: %s", r.body)
	}
	k := set.Keys[0]
	if k.Kty != "EC" || k.Crv != "P-256" || k.Alg != "ES256" || k.Use != "sig" || k.Kid != k.Thumbprint() {
		t.Fatalf("jwk: %+v", k)
	}
	if r2 := do(t, "GET", b.URL+"/.well-known/jwks.json", map[string]string{"If-None-Match": r.header.Get("ETag")}, nil); r2.status != 304 {
		t.Fatalf("conditional jwks: %d", r2.status)
	}
	if r2 := do(t, "GET", b.URL+"/.well-known/jwks.json", map[string]string{"If-None-Match": `"other"`}, nil); r2.status != 200 {
		t.Fatalf("jwks with a stale etag: %d", r2.status)
	}
	r = do(t, "GET", b.URL+"/nope", nil, nil)
	if r.status != 404 || r.json(t)["error"] != "not_found" {
		t.Fatalf("404: %d %s", r.status, r.body)
	}
	for _, tt := range []struct{ method, path, allow string }{
		{"GET", "/v1/mint-oidc-jwt", "POST"}, {"POST", "/v1/session/nonce", "GET"}, {"DELETE", "/v1/session", "POST"}, {"POST", "/metrics", "GET"},
	} {
		r = do(t, tt.method, b.URL+tt.path, nil, nil)
		if r.status != 405 || r.json(t)["error"] != "method_not_allowed" || r.header.Get("Allow") != tt.allow {
			t.Errorf("%s %s: %d %v %s", tt.method, tt.path, r.status, r.header.Get("Allow"), r.body)
		}
	}
}

func TestMintAndAudit(t *testing.T) {
	b := testbroker.Start(t, testbroker.Options{})
	tok, wallet := signIn(t, b)
	if rec := lastRecord(t, b); rec.Kind != "session" || rec.Outcome != "ok" || rec.Wallet != wallet || rec.BearerSHA256 != audit.HashBearer(tok) {
		t.Fatalf("sign-in record: %+v", rec)
	}
	r := mint(t, b, "Bearer "+tok, "")
	if r.status != 200 {
		t.Fatalf("mint: %d %s", r.status, r.body)
	}
	j := r.json(t)
	if j["wallet"] != wallet || j["jwt"] == nil || j["expiration"] == nil {
		t.Fatalf("mint body: %s", r.body)
	}
	claims := claimsOf(t, j["jwt"].(string))
	if claims["exp"].(float64) != j["expiration"].(float64) || claims["exp"].(float64)-claims["iat"].(float64) != 300 {
		t.Fatalf("claims: %v", claims)
	}
	rec := lastRecord(t, b)
	if rec.Kind != "oidc_jwt" || rec.Outcome != "ok" || rec.Wallet != wallet || rec.JTI != claims["jti"] ||
		rec.Audience != "sts.amazonaws.com" || rec.TTLSeconds != 300 || rec.Kid == "" || rec.BearerSHA256 != audit.HashBearer(tok) {
		t.Fatalf("mint record: %+v", rec)
	}
	// No record holds the bearer itself.
	for _, rec := range records(t, b) {
		if strings.Contains(fmt.Sprintf("%+v", rec), tok) {
			t.Fatalf("a record holds the bearer: %+v", rec)
		}
	}

	// A body with audience and TTL.
	r = mint(t, b, "Bearer "+tok, `{"audience":"sts.amazonaws.com","ttl_seconds":3600}`)
	if r.status != 200 {
		t.Fatalf("mint with body: %d %s", r.status, r.body)
	}
	if c := claimsOf(t, r.json(t)["jwt"].(string)); c["exp"].(float64)-c["iat"].(float64) != 3600 {
		t.Fatalf("ttl not applied: %v", c)
	}
	// The metrics saw the mints.
	m := do(t, "GET", b.URL+"/metrics", nil, nil)
	if !bytes.Contains(m.body, []byte(`agentkeys_mints_total{kind="oidc_jwt",outcome="ok"} 2`)) ||
		!bytes.Contains(m.body, []byte("agentkeys_audit_write_duration_seconds")) ||
		!bytes.Contains(m.body, []byte(`agentkeys_enclave_rpc_duration_seconds_count{op="mint_oidc",outcome="ok"} 2`)) ||
		!bytes.Contains(m.body, []byte(`agentkeys_http_requests_total{outcome="ok",route="mint_oidc_jwt"} 2`)) {
		t.Fatalf("metrics missing mint figures:\n%s", m.body)
	}
}

func claimsOf(t *testing.T, jwt string) map[string]any {
	t.Helper()
	parts := strings.Split(jwt, ".")
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	json.Unmarshal(b, &c)
	return c
}

// TestRefusalsAreAudited: every refused mint is answered with the right status
// and kind, returns no JWT, and leaves one audit record with the outcome.
// (Refusals with no well-formed bearer are counted instead: see
// TestPreAuthRefusalsAreCounted.)
func TestRefusalsAreAudited(t *testing.T) {
	b := testbroker.Start(t, testbroker.Options{})
	tok, wallet := signIn(t, b)
	forged := strings.Split(tok, ".")
	forged[2] = forged[2][:10] + "AAAA" + forged[2][14:]
	tests := []struct {
		name    string
		auth    string
		body    string
		status  int
		kind    string
		outcome string
		wallet  string
		msg     string
	}{
		{"forged session", "Bearer " + strings.Join(forged, "."), "", 401, "unauthorized", "unauthorized", "unknown", "invalid session token"},
		{"garbage token", "Bearer xyz", "", 401, "unauthorized", "unauthorized", "unknown", "invalid session token"},
		{"ttl too short", "Bearer " + tok, `{"ttl_seconds":59}`, 400, "bad_request", "policy_refused", wallet, "between 60 and 3600"},
		{"ttl too long", "Bearer " + tok, `{"ttl_seconds":3601}`, 400, "bad_request", "policy_refused", wallet, "between 60 and 3600"},
		{"audience not allowed", "Bearer " + tok, `{"audience":"evil"}`, 400, "bad_request", "policy_refused", wallet, "sts.amazonaws.com"},
		{"bad json", "Bearer " + tok, `{"ttl_seconds":"x"}`, 400, "bad_request", "bad_request", "unknown", "not valid JSON"},
		{"body too large", "Bearer " + tok, `{"audience":"` + strings.Repeat("a", 70<<10) + `"}`, 413, "payload_too_large", "bad_request", "unknown", "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(records(t, b))
			r := mint(t, b, tt.auth, tt.body)
			j := r.json(t)
			if r.status != tt.status || j["error"] != tt.kind || !strings.Contains(fmt.Sprint(j["message"]), tt.msg) || j["jwt"] != nil {
				t.Fatalf("got %d %s", r.status, r.body)
			}
			rs := records(t, b)
			if len(rs) != before+1 {
				t.Fatalf("%d new records, want 1", len(rs)-before)
			}
			rec := rs[len(rs)-1]
			if rec.Kind != "oidc_jwt" || rec.Outcome != tt.outcome || rec.Wallet != tt.wallet {
				t.Fatalf("record: %+v", rec)
			}
			if tt.status == 401 && r.header.Get("WWW-Authenticate") == "" {
				t.Fatal("401 without WWW-Authenticate")
			}
		})
	}
	m := do(t, "GET", b.URL+"/metrics", nil, nil)
	if !bytes.Contains(m.body, []byte(`agentkeys_http_requests_total{outcome="unauthorized",route="mint_oidc_jwt"}`)) ||
		!bytes.Contains(m.body, []byte(`agentkeys_mints_total{kind="oidc_jwt",outcome="policy_refused"} 3`)) {
		t.Fatalf("metrics do not count refusals by kind:\n%s", m.body)
	}
	// Bearer parsing: the scheme in any case, one or more spaces.
	for _, auth := range []string{"bearer " + tok, "BEARER   " + tok, "BeArEr " + tok} {
		if r := mint(t, b, auth, ""); r.status != 200 {
			t.Errorf("%q: %d %s", auth[:10], r.status, r.body)
		}
	}
}

func TestRevokedSessionIsRefused(t *testing.T) {
	b := testbroker.Start(t, testbroker.Options{})
	tok, wallet := signIn(t, b)
	tok2, _ := signIn(t, b)
	r := do(t, "POST", b.URL+"/v1/session/revoke", map[string]string{"Authorization": "Bearer " + tok}, nil)
	if r.status != 200 || r.json(t)["revoked"] != true {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	if rec := lastRecord(t, b); rec.Kind != "session_revoke" || rec.Outcome != "ok" || rec.Wallet != wallet {
		t.Fatalf("revoke record: %+v", rec)
	}
	r = mint(t, b, "Bearer "+tok, "")
	if r.status != 401 || !strings.Contains(string(r.body), "revoked") {
		t.Fatalf("mint with a revoked session: %d %s", r.status, r.body)
	}
	if rec := lastRecord(t, b); rec.Outcome != "revoked" || rec.Kind != "oidc_jwt" {
		t.Fatalf("record: %+v", rec)
	}
	// Another session of the same wallet is untouched.
	if r := mint(t, b, "Bearer "+tok2, ""); r.status != 200 {
		t.Fatalf("other session: %d", r.status)
	}
	// Revoking needs a valid session.
	if r := do(t, "POST", b.URL+"/v1/session/revoke", map[string]string{"Authorization": "Bearer junk"}, nil); r.status != 401 {
		t.Fatalf("revoke with junk: %d", r.status)
	}
	// If the revocation list cannot be read, nothing is minted.
	b.Revocations.SetFailure(errors.New("disk gone"))
	if r := mint(t, b, "Bearer "+tok2, ""); r.status != 500 || bytes.Contains(r.body, []byte("jwt")) {
		t.Fatalf("mint with a failing revocation list: %d %s", r.status, r.body)
	}
}

// TestExpiredSessionIsRefused: the enclave's clock passes the session's
// expiry; the mint is refused, says so, and is audited.
func TestExpiredSessionIsRefused(t *testing.T) {
	var mu sync.Mutex
	offset := time.Duration(0)
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return time.Now().Add(offset) }
	b := testbroker.Start(t, testbroker.Options{Now: now})
	tok, _ := signIn(t, b)
	if r := mint(t, b, "Bearer "+tok, ""); r.status != 200 {
		t.Fatalf("fresh session: %d %s", r.status, r.body)
	}
	mu.Lock()
	offset = 24*time.Hour + time.Minute
	mu.Unlock()
	r := mint(t, b, "Bearer "+tok, "")
	if r.status != 401 || !strings.Contains(string(r.body), "expired") || bytes.Contains(r.body, []byte(`"jwt"`)) {
		t.Fatalf("expired session: %d %s", r.status, r.body)
	}
	if rec := lastRecord(t, b); rec.Kind != "oidc_jwt" || rec.Outcome != "unauthorized" || !strings.Contains(rec.Detail, "expired") || rec.BearerSHA256 != audit.HashBearer(tok) {
		t.Fatalf("record: %+v", rec)
	}
}

func TestSignInRateLimit(t *testing.T) {
	b := testbroker.Start(t, testbroker.Options{SignInLimit: ratelimit.New(0.001, 3, 100)})
	for i := range 3 {
		if r := do(t, "GET", b.URL+"/v1/session/nonce", nil, nil); r.status != 200 {
			t.Fatalf("nonce %d: %d", i, r.status)
		}
	}
	r := do(t, "GET", b.URL+"/v1/session/nonce", nil, nil)
	if r.status != 429 || r.json(t)["error"] != "rate_limited" || r.header.Get("Retry-After") == "" {
		t.Fatalf("over the limit: %d %v %s", r.status, r.header, r.body)
	}
	if r := do(t, "POST", b.URL+"/v1/session", nil, strings.NewReader("{}")); r.status != 429 {
		t.Fatalf("sign-in over the limit: %d", r.status)
	}
	// Discovery is not limited.
	if r := do(t, "GET", b.URL+"/.well-known/jwks.json", nil, nil); r.status != 200 {
		t.Fatalf("jwks: %d", r.status)
	}
}

// TestAuditFailureReturnsNoJWT: if the audit store cannot write, the mint
// answers 500 audit_error and no credential leaves the host.
func TestAuditFailureReturnsNoJWT(t *testing.T) {
	b := testbroker.Start(t, testbroker.Options{})
	tok, _ := signIn(t, b)
	before := len(records(t, b))
	b.Memory.SetFailure(errors.New("disk full"))
	for _, body := range []string{"", `{"ttl_seconds":1}`} {
		r := mint(t, b, "Bearer "+tok, body)
		j := r.json(t)
		if r.status != 500 || j["error"] != "audit_error" || j["jwt"] != nil || bytes.Contains(r.body, []byte("eyJ")) {
			t.Fatalf("mint with a failing audit store: %d %s", r.status, r.body)
		}
	}
	r := do(t, "GET", b.URL+"/readyz", nil, nil)
	if r.status != 503 || r.json(t)["audit"] != "failing" {
		t.Fatalf("readyz with a failing audit store: %d %s", r.status, r.body)
	}
	// The store works again but lacks the JWT the enclave logged: /readyz
	// names the audit log while the enclave cannot hand it back.
	b.StopEnclave()
	b.WaitDisconnected()
	b.Memory.SetFailure(nil)
	if r := do(t, "GET", b.URL+"/readyz", nil, nil); r.status != 503 || r.json(t)["audit"] != "behind" || !strings.Contains(r.json(t)["message"].(string), "audit log") {
		t.Fatalf("readyz with the store behind the enclave: %d %s", r.status, r.body)
	}
	b.StartEnclave()
	b.WaitConnected()
	if n := len(records(t, b)); n != before {
		t.Fatalf("the failing store gained %d records", n-before)
	}
	if r := mint(t, b, "Bearer "+tok, ""); r.status != 200 {
		t.Fatalf("after recovery: %d", r.status)
	}
	// The JWTs the enclave signed while the store failed are in the log.
	b.CheckLogWhole(t)
}

func TestEnclaveDownAndBack(t *testing.T) {
	b := testbroker.Start(t, testbroker.Options{})
	tok, _ := signIn(t, b)
	b.StopEnclave()
	b.WaitDisconnected()
	r := mint(t, b, "Bearer "+tok, "")
	if r.status != 503 || r.json(t)["error"] != "enclave_unavailable" {
		t.Fatalf("mint with the enclave down: %d %s", r.status, r.body)
	}
	if rec := lastRecord(t, b); rec.Outcome != "enclave_error" {
		t.Fatalf("record: %+v", rec)
	}
	if r := do(t, "GET", b.URL+"/v1/session/nonce", nil, nil); r.status != 503 {
		t.Fatalf("nonce with the enclave down: %d", r.status)
	}
	r = do(t, "GET", b.URL+"/readyz", nil, nil)
	if r.status != 503 || r.json(t)["enclave"] != "unreachable" || !strings.Contains(r.json(t)["message"].(string), "enclave") {
		t.Fatalf("readyz: %d %s", r.status, r.body)
	}
	// JWKS and discovery are served from memory meanwhile.
	if r := do(t, "GET", b.URL+"/.well-known/jwks.json", nil, nil); r.status != 200 {
		t.Fatalf("jwks with the enclave down: %d", r.status)
	}
	b.StartEnclave()
	b.WaitConnected()
	if r := mint(t, b, "Bearer "+tok, ""); r.status != 200 {
		t.Fatalf("after the enclave came back: %d %s", r.status, r.body)
	}
}

func TestIssuerMismatchRefusesToServe(t *testing.T) {
	// The enclave's policy names another issuer; the API reads it from the
	// enclave client's Info snapshot.
	b := testbroker.Start(t, testbroker.Options{Policy: func(p *policy.Policy) { p.Issuer = "https://other.example.com" }})
	for _, path := range []string{"/.well-known/openid-configuration", "/.well-known/jwks.json", "/readyz", "/v1/session/nonce"} {
		r := do(t, "GET", b.URL+path, nil, nil)
		if r.status != 503 || !strings.Contains(string(r.body), "issuer") {
			t.Errorf("%s: %d %s", path, r.status, r.body)
		}
	}
	for _, path := range []string{"/v1/session", "/v1/mint-oidc-jwt", "/v1/mint-aws-creds", "/v1/session/revoke"} {
		r := do(t, "POST", b.URL+path, map[string]string{"Authorization": "Bearer x"}, strings.NewReader("{}"))
		if r.status != 503 || !strings.Contains(string(r.body), "issuer") {
			t.Errorf("%s: %d %s", path, r.status, r.body)
		}
	}
}

func TestSignInRefusals(t *testing.T) {
	b := testbroker.Start(t, testbroker.Options{})
	tests := []struct {
		body   string
		status int
		msg    string
	}{
		{`{}`, 400, "signature"},
		{`{"message":"x","signature":"0x1234"}`, 400, "130 hex"},
		{`{"message":"","signature":"0x` + strings.Repeat("ab", 65) + `"}`, 400, "message is required"},
		{`{"message":"hello","signature":"0x` + strings.Repeat("ab", 65) + `"}`, 401, "siwe"},
		{`not json`, 400, "not valid JSON"},
		{``, 400, "empty"},
	}
	for _, tt := range tests {
		r := do(t, "POST", b.URL+"/v1/session", nil, strings.NewReader(tt.body))
		if r.status != tt.status || !strings.Contains(string(r.body), tt.msg) {
			t.Errorf("%s: %d %s", tt.body, r.status, r.body)
		}
		if rec := lastRecord(t, b); rec.Kind != "session" || rec.Outcome == "ok" {
			t.Errorf("%s: record %+v", tt.body, rec)
		}
	}
}

func TestSessionBackendCompatibility(t *testing.T) {
	const wallet = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/session/validate" {
			http.NotFound(w, r)
			return
		}
		switch r.Header.Get("Authorization") {
		case "Bearer good-opaque":
			fmt.Fprintf(w, `{"wallet":%q}`, wallet)
		case "Bearer broken":
			w.WriteHeader(500)
		case "Bearer no-wallet":
			fmt.Fprint(w, `{"wallet":"bob"}`)
		default:
			w.WriteHeader(401)
		}
	}))
	defer backend.Close()

	on := testbroker.Start(t, testbroker.Options{SessionBackend: backend.URL, Policy: func(p *policy.Policy) { p.AllowHostAssertedWallet = true }})
	r := mint(t, on, "Bearer good-opaque", "")
	if r.status != 200 || r.json(t)["wallet"] != strings.ToLower(wallet) {
		t.Fatalf("backend session: %d %s", r.status, r.body)
	}
	if c := claimsOf(t, r.json(t)["jwt"].(string)); c["agentkeys_host_asserted_wallet"] != true {
		t.Fatalf("JWT not marked: %v", c)
	}
	if rec := lastRecord(t, on); !rec.HostAssertedWallet || rec.Outcome != "ok" {
		t.Fatalf("record not marked: %+v", rec)
	}
	for _, tt := range []struct {
		auth   string
		status int
	}{{"Bearer unknown", 401}, {"Bearer broken", 502}, {"Bearer no-wallet", 502}} {
		if r := mint(t, on, tt.auth, ""); r.status != tt.status || bytes.Contains(r.body, []byte(`"jwt"`)) {
			t.Errorf("%s: %d %s", tt.auth, r.status, r.body)
		}
	}
	// Enclave sessions keep working beside the backend.
	tok, _ := signIn(t, on)
	if r := mint(t, on, "Bearer "+tok, ""); r.status != 200 || claimsOf(t, r.json(t)["jwt"].(string))["agentkeys_host_asserted_wallet"] != nil {
		t.Fatalf("enclave session in compatibility mode: %d %s", r.status, r.body)
	}

	// Without the enclave policy switch, the backend's word is not enough.
	off := testbroker.Start(t, testbroker.Options{SessionBackend: backend.URL})
	if r := mint(t, off, "Bearer good-opaque", ""); r.status != 401 || !strings.Contains(string(r.body), "does not allow") {
		t.Fatalf("policy off: %d %s", r.status, r.body)
	}
}

func TestAttestation(t *testing.T) {
	b := testbroker.Start(t, testbroker.Options{})
	r := do(t, "GET", b.URL+"/.well-known/attestation?format=json&nonce=00112233445566778899aabbccddeeff", nil, nil)
	if r.status != 200 || r.header.Get("Cache-Control") != "no-store" || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("attestation: %d %v %s", r.status, r.header, r.body)
	}
	var body struct {
		Document, Manifest []byte
		ManifestSHA256     string `json:"manifest_sha256"`
		Mode, Nonce        string
	}
	if err := json.Unmarshal(r.body, &body); err != nil {
		t.Fatal(err)
	}
	res, err := nitrite.Verify(body.Document, nitrite.VerifyOptions{Roots: b.Attester.RootPool()})
	if err != nil {
		t.Fatalf("document does not verify with the simulated root: %v", err)
	}
	if hex.EncodeToString(res.Document.Nonce) != "00112233445566778899aabbccddeeff" || body.Mode != "simulated" {
		t.Fatalf("nonce %x, mode %s", res.Document.Nonce, body.Mode)
	}
	sum := sha256.Sum256(body.Manifest)
	if !bytes.Equal(res.Document.UserData, sum[:]) || hex.EncodeToString(sum[:]) != body.ManifestSHA256 {
		t.Fatal("user_data is not the SHA-256 of the manifest")
	}
	// The manifest binds exactly the keys and issuer the host publishes.
	m, err := manifest.Parse(body.Manifest)
	if err != nil {
		t.Fatal(err)
	}
	var set jwk.Set
	json.Unmarshal(do(t, "GET", b.URL+"/.well-known/jwks.json", nil, nil).body, &set)
	if m.Issuer != b.URL || len(m.IssuerKeys) != 1 || m.IssuerKeys[0].JWK != set.Keys[0] {
		t.Fatalf("manifest %+v vs jwks %+v", m, set)
	}
	// By default the body is the raw COSE_Sign1, for the same kind of nonce.
	raw := do(t, "GET", b.URL+"/.well-known/attestation?nonce=8899aabbccddeeff0011", nil, nil)
	if raw.status != 200 || raw.header.Get("Content-Type") != "application/cbor" || raw.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("raw attestation: %d %v", raw.status, raw.header)
	}
	rres, err := nitrite.Verify(raw.body, nitrite.VerifyOptions{Roots: b.Attester.RootPool()})
	if err != nil || hex.EncodeToString(rres.Document.Nonce) != "8899aabbccddeeff0011" || !bytes.Equal(rres.Document.UserData, sum[:]) {
		t.Fatalf("raw document: %v", err)
	}
	for _, q := range []string{"", "?nonce=", "?nonce=00112233445566778899&format=xml", "?nonce=xyz", "?nonce=" + strings.Repeat("ab", 65), "?nonce=00112233445566"} {
		if r := do(t, "GET", b.URL+"/.well-known/attestation"+q, nil, nil); r.status != 400 {
			t.Errorf("%q: %d %s", q, r.status, r.body)
		}
	}
}
