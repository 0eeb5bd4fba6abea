package api_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentkeys/broker/host/api"
	"github.com/agentkeys/broker/host/audit"
	"github.com/agentkeys/broker/host/revocation"
	"github.com/agentkeys/broker/shared/jwk"
	"github.com/agentkeys/broker/shared/policy"
	"github.com/agentkeys/broker/shared/protocol"
)

// snapshotEnclave is an enclave client reduced to its Info snapshot, which a
// test replaces as a reconnection would.
type snapshotEnclave struct {
	info atomic.Pointer[protocol.InfoResponse]
}

func (e *snapshotEnclave) Call(context.Context, protocol.Op, any, any) error {
	return protocol.Errorf(protocol.CodeUnavailable, "no enclave in this test")
}
func (e *snapshotEnclave) Info() (*protocol.InfoResponse, bool) {
	p := e.info.Load()
	return p, p != nil
}
func (e *snapshotEnclave) Connected() bool                    { return e.info.Load() != nil }
func (e *snapshotEnclave) ClockOffset() (time.Duration, bool) { return 0, false }

// TestPublishedFollowsTheEnclaveSnapshot: the JWKS, discovery and the issuer
// check come from the enclave client's current Info, with no copy to keep in
// step: a new snapshot (a reconnection to an enclave with other keys or
// another policy) is what the next request sees.
func TestPublishedFollowsTheEnclaveSnapshot(t *testing.T) {
	const issuer = "https://broker.example.com"
	enc := &snapshotEnclave{}
	a, err := api.New(api.Config{Issuer: issuer, Enclave: enc, Audit: audit.NewMemory(), Revocations: revocation.NewMemory()})
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string) (int, string) {
		t.Helper()
		w := httptest.NewRecorder()
		a.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		return w.Code, w.Body.String()
	}
	snapshot := func(kid, iss string) *protocol.InfoResponse {
		return &protocol.InfoResponse{ProtocolVersion: protocol.Version, Policy: policy.Policy{Issuer: iss},
			IssuerKeys: []jwk.Key{{Kty: "EC", Crv: "P-256", Kid: kid, Alg: "ES256", Use: "sig"}}, SigningKid: kid}
	}

	if code, _ := get("/.well-known/jwks.json"); code != http.StatusServiceUnavailable {
		t.Fatalf("jwks before the enclave was reached: %d", code)
	}
	enc.info.Store(snapshot("kid-one", issuer))
	if code, body := get("/.well-known/jwks.json"); code != 200 || !strings.Contains(body, "kid-one") {
		t.Fatalf("jwks: %d %s", code, body)
	}
	enc.info.Store(snapshot("kid-two", issuer))
	if code, body := get("/.well-known/jwks.json"); code != 200 || !strings.Contains(body, "kid-two") || strings.Contains(body, "kid-one") {
		t.Fatalf("jwks after a new snapshot: %d %s", code, body)
	}
	if code, body := get("/.well-known/openid-configuration"); code != 200 || !strings.Contains(body, issuer+"/.well-known/jwks.json") {
		t.Fatalf("discovery: %d %s", code, body)
	}
	// An enclave with another issuer: refused at once, and served again once
	// the enclave is back with ours.
	enc.info.Store(snapshot("kid-three", "https://other.example.com"))
	if code, body := get("/.well-known/jwks.json"); code != http.StatusServiceUnavailable || !strings.Contains(body, "issuer") {
		t.Fatalf("jwks with another issuer: %d %s", code, body)
	}
	enc.info.Store(snapshot("kid-four", issuer))
	if code, body := get("/.well-known/jwks.json"); code != 200 || !strings.Contains(body, "kid-four") {
		t.Fatalf("jwks after the issuer matched again: %d %s", code, body)
	}
}
