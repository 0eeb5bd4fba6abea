package api_test

import (
	"context"
	"database/sql"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "modernc.org/sqlite" // the "sqlite" driver, to lock the database from outside

	"github.com/agentkeys/broker/host/api"
	"github.com/agentkeys/broker/host/audit"
	"github.com/agentkeys/broker/host/ratelimit"
	"github.com/agentkeys/broker/internal/testbroker"
)

// openSQLite opens a SQLite audit store for a test broker and closes it when
// the test ends.
func openSQLite(t *testing.T, opts ...audit.Option) (*audit.SQLite, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.db")
	s, err := audit.OpenSQLite(path, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

// TestPreAuthRefusalsAreCounted: a bearer route called without a well-formed
// bearer is refused as before, but writes no record of its own: the
// refusals are counted, one aggregate per client, kind and outcome.
func TestPreAuthRefusalsAreCounted(t *testing.T) {
	b := testbroker.Start(t, testbroker.Options{})
	tests := []struct {
		name, route, auth, msg, kind string
	}{
		{"no header", "/v1/mint-oidc-jwt", "", "Bearer", audit.KindOIDCJWT},
		{"basic auth", "/v1/mint-oidc-jwt", "Basic dXNlcjpwYXNz", "Bearer TOKEN", audit.KindOIDCJWT},
		{"bearer without token", "/v1/mint-oidc-jwt", "Bearer", "Bearer TOKEN", audit.KindOIDCJWT},
		{"token with spaces", "/v1/mint-oidc-jwt", "Bearer a b", "Bearer TOKEN", audit.KindOIDCJWT},
		{"revoke without bearer", "/v1/session/revoke", "", "Bearer", audit.KindSessionRevoke},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := map[string]string{}
			if tt.auth != "" {
				h["Authorization"] = tt.auth
			}
			r := do(t, "POST", b.URL+tt.route, h, nil)
			j := r.json(t)
			if r.status != 401 || j["error"] != "unauthorized" || !strings.Contains(j["message"].(string), tt.msg) || j["jwt"] != nil {
				t.Fatalf("got %d %s", r.status, r.body)
			}
			if r.header.Get("WWW-Authenticate") == "" {
				t.Fatal("401 without WWW-Authenticate")
			}
			if rs := records(t, b); len(rs) != 0 {
				t.Fatalf("a refusal before authentication wrote a record of its own: %+v", rs)
			}
		})
	}
	if err := b.Memory.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	rs := records(t, b)
	if len(rs) != 2 {
		t.Fatalf("aggregates %+v, want one for oidc_jwt and one for session_revoke", rs)
	}
	for _, r := range rs {
		want := map[string]int64{audit.KindOIDCJWT: 4, audit.KindSessionRevoke: 1}[r.Kind]
		if r.Count != want || r.Outcome != "unauthorized" || r.Client != "127.0.0.1" || r.Wallet != "unknown" ||
			!strings.Contains(r.Detail, "the first: missing Authorization") {
			t.Errorf("aggregate %+v, want Count %d", r, want)
		}
	}
}

// TestPreAuthFlood: a flood of requests with no bearer, from one client,
// writes a handful of records; past the client's refusal budget the answer
// is 429; and the client's authenticated mints are not refused for it.
func TestPreAuthFlood(t *testing.T) {
	n := 100_000
	if testing.Short() {
		n = 5_000
	}
	store, _ := openSQLite(t)
	b := testbroker.Start(t, testbroker.Options{Audit: store, Configure: func(c *api.Config) {
		c.RefusalLimit = ratelimit.New(10, 50, 1000)
	}})
	tok, _ := signIn(t, b)
	before := store.Stats().Records
	status := map[int]int{}
	for i := range n {
		req := httptest.NewRequest("POST", "/v1/mint-oidc-jwt", nil)
		req.RemoteAddr = "203.0.113.7:4000"
		w := httptest.NewRecorder()
		b.API.ServeHTTP(w, req)
		status[w.Code]++
		if i < 50 && w.Code != 401 {
			t.Fatalf("request %d of the budget: %d %s", i, w.Code, w.Body)
		}
		if w.Code == 429 && (w.Header().Get("Retry-After") != "1" || strings.Contains(w.Body.String(), "jwt\"")) {
			t.Fatalf("429 without Retry-After 1: %v %s", w.Header(), w.Body)
		}
	}
	if status[401]+status[429] != n || status[429] < n/2 {
		t.Fatalf("answers %v", status)
	}
	// The same client, authenticated, mints.
	if r := mint(t, b, "Bearer "+tok, ""); r.status != 200 {
		t.Fatalf("mint after the flood: %d %s", r.status, r.body)
	}
	if err := store.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	written := store.Stats().Records - before
	var counted int64
	for _, r := range records(t, b) {
		if r.Client == "203.0.113.7" {
			counted += r.Count
		}
	}
	t.Logf("%d requests without a bearer (%d answered 401, %d answered 429): %d records written (one of them the mint), counting %d refusals",
		n, status[401], status[429], written, counted)
	if written > 2 || counted != int64(n) {
		t.Errorf("%d records written counting %d refusals, want 2 records (the aggregate and the mint) counting %d", written, counted, n)
	}
}

// TestMintRateLimit: past MintLimit a client gets 429 rate_limited with
// Retry-After, counted in the aggregates; another client is unaffected.
func TestMintRateLimit(t *testing.T) {
	b := testbroker.Start(t, testbroker.Options{Configure: func(c *api.Config) {
		c.MintLimit = ratelimit.New(0.5, 3, 1000)
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	}})
	tok, _ := signIn(t, b)
	for i := range 3 {
		if r := mint(t, b, "Bearer "+tok, ""); r.status != 200 {
			t.Fatalf("mint %d: %d %s", i, r.status, r.body)
		}
	}
	r := mint(t, b, "Bearer "+tok, "")
	if r.status != 429 || r.json(t)["error"] != "rate_limited" || r.header.Get("Retry-After") != "2" || strings.Contains(string(r.body), "jwt\"") {
		t.Fatalf("over the limit: %d %v %s", r.status, r.header, r.body)
	}
	// Another client behind the trusted proxy has its own budget.
	other := do(t, "POST", b.URL+"/v1/mint-oidc-jwt", map[string]string{"Authorization": "Bearer " + tok, "X-Forwarded-For": "198.51.100.1"}, nil)
	if other.status != 200 {
		t.Fatalf("another client: %d %s", other.status, other.body)
	}
	if err := b.Memory.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	last := lastRecord(t, b)
	if last.Outcome != "rate_limited" || last.Count != 1 || last.Client != "127.0.0.1" || last.Kind != "oidc_jwt" {
		t.Fatalf("aggregate of the limited request: %+v", last)
	}
}

// TestClientAddressInRecords: every record names the client; X-Forwarded-For
// counts only from a trusted proxy, and then its right-most untrusted hop.
func TestClientAddressInRecords(t *testing.T) {
	tests := []struct {
		name    string
		trusted string
		xff     string
		want    string
	}{
		{"no proxy", "", "", "127.0.0.1"},
		{"spoofed XFF from an untrusted peer", "", "198.51.100.1", "127.0.0.1"},
		{"spoofed XFF, other proxies trusted", "10.0.0.0/8", "198.51.100.1", "127.0.0.1"},
		{"trusted proxy", "127.0.0.1/32", "203.0.113.5, 198.51.100.1", "198.51.100.1"},
		{"chain of trusted proxies", "127.0.0.1/32,10.0.0.0/8", "203.0.113.5, 198.51.100.1, 10.0.0.9, 10.0.0.8", "198.51.100.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			trusted, err := ratelimit.ParseTrustedProxies(tt.trusted)
			if err != nil {
				t.Fatal(err)
			}
			b := testbroker.Start(t, testbroker.Options{Configure: func(c *api.Config) { c.TrustedProxies = trusted }})
			tok, _ := signIn(t, b)
			h := map[string]string{"Authorization": "Bearer " + tok}
			if tt.xff != "" {
				h["X-Forwarded-For"] = tt.xff
			}
			if r := do(t, "POST", b.URL+"/v1/mint-oidc-jwt", h, nil); r.status != 200 {
				t.Fatalf("mint: %d %s", r.status, r.body)
			}
			if rec := lastRecord(t, b); rec.Outcome != "ok" || rec.Client != tt.want {
				t.Fatalf("record %+v, want client %s", rec, tt.want)
			}
		})
	}
}

// TestAuditFileGone: once the audit database is deleted or replaced under the
// running host, mints answer 500 audit_error with no JWT and /readyz says
// what happened.
func TestAuditFileGone(t *testing.T) {
	tests := []struct {
		name    string
		breakIt func(t *testing.T, path string)
	}{
		{"deleted", func(t *testing.T, path string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}},
		{"another database renamed over it", func(t *testing.T, path string) {
			other, otherPath := openSQLite(t)
			other.Close()
			if err := os.Rename(otherPath, path); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store, path := openSQLite(t)
			b := testbroker.Start(t, testbroker.Options{Audit: store})
			tok, _ := signIn(t, b)
			if r := mint(t, b, "Bearer "+tok, ""); r.status != 200 {
				t.Fatalf("mint before: %d %s", r.status, r.body)
			}
			if r := do(t, "GET", b.URL+"/readyz", nil, nil); r.status != 200 {
				t.Fatalf("readyz before: %d %s", r.status, r.body)
			}
			tt.breakIt(t, path)
			for range 2 {
				r := mint(t, b, "Bearer "+tok, "")
				j := r.json(t)
				if r.status != 500 || j["error"] != "audit_error" || j["jwt"] != nil || strings.Contains(string(r.body), "eyJ") {
					t.Fatalf("mint after the file went: %d %s", r.status, r.body)
				}
			}
			r := do(t, "GET", b.URL+"/readyz", nil, nil)
			j := r.json(t)
			if r.status != 503 || j["audit"] != "failing" || j["message"] != "not ready: audit store (database file was deleted or replaced)" {
				t.Fatalf("readyz after the file went: %d %s", r.status, r.body)
			}
			if strings.Contains(string(r.body), path) {
				t.Fatalf("readyz names the file: %s", r.body)
			}
		})
	}
}

// TestReadyzAuditNotWritable: a store that can still be read but not
// written (another process holds its write lock) is not ready.
func TestReadyzAuditNotWritable(t *testing.T) {
	ctx := context.Background()
	store, path := openSQLite(t)
	b := testbroker.Start(t, testbroker.Options{Audit: store})
	if r := do(t, "GET", b.URL+"/readyz", nil, nil); r.status != 200 {
		t.Fatalf("readyz before: %d %s", r.status, r.body)
	}
	other, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	lock, err := other.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if _, err := lock.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	// Still readable: List works.
	if _, err := store.List(ctx, 0, 1); err != nil {
		t.Fatalf("List with the write lock held elsewhere: %v", err)
	}
	r := do(t, "GET", b.URL+"/readyz", nil, nil)
	if r.status != 503 || r.json(t)["message"] != "not ready: audit store (database cannot be written)" {
		t.Fatalf("readyz with the store locked: %d %s", r.status, r.body)
	}
	if _, err := lock.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	// Ready again once the lock is gone (the writer may first finish the
	// probe that was waiting for it).
	for i := 0; ; i++ {
		r := do(t, "GET", b.URL+"/readyz", nil, nil)
		if r.status == http.StatusOK {
			break
		}
		if i == 20 {
			t.Fatalf("readyz after the lock was released: %d %s", r.status, r.body)
		}
	}
}

// TestRefusalBudget: unauthenticated refusals that carry a bearer are
// recorded one by one while the client's budget lasts; past it they are
// answered 429 (naming the refusal) and only counted. Authenticated mints of
// the same client, and refusals of a verified session, are not affected.
func TestRefusalBudget(t *testing.T) {
	b := testbroker.Start(t, testbroker.Options{Configure: func(c *api.Config) {
		c.RefusalLimit = ratelimit.New(0.001, 3, 100)
	}})
	tok, wallet := signIn(t, b)
	before := len(records(t, b))
	for i := range 3 {
		if r := mint(t, b, "Bearer xyz", ""); r.status != 401 {
			t.Fatalf("refusal %d within the budget: %d %s", i, r.status, r.body)
		}
	}
	if n := len(records(t, b)) - before; n != 3 {
		t.Fatalf("%d records for 3 refusals within the budget, want 3", n)
	}
	for i := range 2 {
		r := mint(t, b, "Bearer xyz", `{"ttl_seconds":"x"}`)
		j := r.json(t)
		if r.status != 429 || j["error"] != "rate_limited" || r.header.Get("Retry-After") != "1000" ||
			!strings.Contains(j["message"].(string), "the last: ") {
			t.Fatalf("refusal %d past the budget: %d %v %s", i, r.status, r.header, r.body)
		}
	}
	if n := len(records(t, b)) - before; n != 3 {
		t.Fatalf("refusals past the budget wrote %d records", n-3)
	}
	// A verified session still mints, and its refusals are still recorded
	// with their own answer.
	if r := mint(t, b, "Bearer "+tok, ""); r.status != 200 {
		t.Fatalf("mint of the same client: %d %s", r.status, r.body)
	}
	if r := mint(t, b, "Bearer "+tok, `{"audience":"evil"}`); r.status != 400 {
		t.Fatalf("policy refusal of a verified session: %d %s", r.status, r.body)
	}
	if rec := lastRecord(t, b); rec.Outcome != "policy_refused" || rec.Wallet != wallet {
		t.Fatalf("record of the policy refusal: %+v", rec)
	}
	if err := b.Memory.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	agg := lastRecord(t, b)
	if agg.Count != 2 || agg.Outcome != "bad_request" || agg.Client != "127.0.0.1" || agg.Kind != "oidc_jwt" {
		t.Fatalf("aggregate of the refusals past the budget: %+v", agg)
	}
}

// TestWalletMintLimit: past WalletMintLimit a wallet gets 429, whatever
// session or client it mints from; other wallets mint on.
func TestWalletMintLimit(t *testing.T) {
	b := testbroker.Start(t, testbroker.Options{Configure: func(c *api.Config) {
		c.WalletMintLimit = ratelimit.New(0.5, 2, 100)
	}})
	tok, wallet := signIn(t, b)
	tok2, _ := signIn(t, b) // another wallet
	for i := range 2 {
		if r := mint(t, b, "Bearer "+tok, ""); r.status != 200 {
			t.Fatalf("mint %d: %d %s", i, r.status, r.body)
		}
	}
	before := len(records(t, b))
	r := mint(t, b, "Bearer "+tok, "")
	if r.status != 429 || r.json(t)["error"] != "rate_limited" || r.header.Get("Retry-After") != "2" || strings.Contains(string(r.body), "eyJ") {
		t.Fatalf("past the wallet's limit: %d %v %s", r.status, r.header, r.body)
	}
	if r := mint(t, b, "Bearer "+tok2, ""); r.status != 200 {
		t.Fatalf("another wallet: %d %s", r.status, r.body)
	}
	// The enclave signed and logged the limited wallet's JWT before the host
	// refused to release it, so that refusal is a record of its own, with
	// the log entry: the store must hold every batch.
	recs := records(t, b)[before:]
	if len(recs) != 2 || recs[0].Outcome != "rate_limited" || recs[0].Wallet != wallet || recs[0].Logged == nil || recs[1].Outcome != "ok" {
		t.Fatalf("new records %+v, want the limited mint (with its log entry) and the other wallet's", recs)
	}
	b.CheckLogWhole(t)
}

// TestForgedBearerFlood: a flood of well-formed but unverifiable bearers from
// one client writes the budget's worth of records, then one aggregate.
func TestForgedBearerFlood(t *testing.T) {
	n := 10_000
	if testing.Short() {
		n = 1_000
	}
	store, _ := openSQLite(t)
	b := testbroker.Start(t, testbroker.Options{Audit: store, Configure: func(c *api.Config) {
		c.RefusalLimit = ratelimit.New(10, 50, 1000)
	}})
	before := store.Stats().Records
	status := map[int]int{}
	for range n {
		req := httptest.NewRequest("POST", "/v1/mint-oidc-jwt", nil)
		req.RemoteAddr = "203.0.113.8:4000"
		req.Header.Set("Authorization", "Bearer xyz")
		w := httptest.NewRecorder()
		b.API.ServeHTTP(w, req)
		status[w.Code]++
	}
	if err := store.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	written := store.Stats().Records - before
	var counted int64
	for _, r := range records(t, b) {
		if r.Client == "203.0.113.8" {
			counted += r.Count
		}
	}
	t.Logf("%d requests with a forged bearer (%d answered 401, %d answered 429): %d records written, counting %d refusals",
		n, status[401], status[429], written, counted)
	if int(written) != status[401]+1 || counted != int64(n) || status[401] < 50 || status[429] < n/2 {
		t.Errorf("%d records counting %d refusals for answers %v, want one per 401 and one aggregate", written, counted, status)
	}
}
