package api_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/agentkeys/broker/host/api"
	"github.com/agentkeys/broker/host/audit"
	"github.com/agentkeys/broker/host/ratelimit"
	"github.com/agentkeys/broker/host/revocation"
)

// TestReadLimit: /readyz (which writes a heartbeat) and the audit log's
// routes share one per-client budget (Config.ReadLimit): past it a client
// gets 429 rate_limited on each of them, while another client is served.
func TestReadLimit(t *testing.T) {
	info, issuer := realInfo(t)
	a, err := api.New(api.Config{Issuer: issuer, Enclave: &pageEnclave{info: &info, connected: true}, Audit: audit.NewMemory(),
		Revocations: revocation.NewMemory(), ReadLimit: ratelimit.New(0.001, 2, 100)})
	if err != nil {
		t.Fatal(err)
	}
	get := func(path, client string) *httptest.ResponseRecorder {
		t.Helper()
		r := httptest.NewRequest(http.MethodGet, path, nil)
		r.RemoteAddr = client + ":1234"
		w := httptest.NewRecorder()
		a.ServeHTTP(w, r)
		return w
	}
	for _, path := range []string{"/readyz", "/v1/audit/checkpoint"} {
		if w := get(path, "192.0.2.1"); w.Code == http.StatusTooManyRequests {
			t.Fatalf("%s within the burst: %d %s", path, w.Code, w.Body)
		}
	}
	for _, path := range []string{"/readyz", "/v1/audit/checkpoint", "/v1/audit/tile/0/000", "/v1/audit/proof/0", "/v1/audit/verifier-key"} {
		w := get(path, "192.0.2.1")
		if w.Code != http.StatusTooManyRequests || !strings.Contains(w.Body.String(), `"error":"rate_limited"`) || w.Header().Get("Retry-After") == "" {
			t.Errorf("%s past the burst: %d %s", path, w.Code, w.Body)
		}
	}
	if w := get("/readyz", "192.0.2.2"); w.Code == http.StatusTooManyRequests {
		t.Errorf("another client's /readyz: %d %s", w.Code, w.Body)
	}
	// The page, discovery and the JWKS are not read-limited.
	for _, path := range []string{"/.well-known/jwks.json", "/.well-known/openid-configuration"} {
		if w := get(path, "192.0.2.1"); w.Code == http.StatusTooManyRequests {
			t.Errorf("%s: %d", path, w.Code)
		}
	}
}
