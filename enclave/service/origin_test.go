package service

import (
	"errors"
	"testing"

	"github.com/agentkeys/broker/enclave/attester"
	"github.com/agentkeys/broker/shared/manifest"
	"github.com/agentkeys/broker/shared/policy"
	"github.com/agentkeys/broker/shared/protocol"
)

// TestSignInNamesTheAPIOrigin: with api_url set apart from the issuer (the
// enclave serves the issuer origin), a sign-in must name the API origin; one
// naming the issuer's origin is refused.
func TestSignInNamesTheAPIOrigin(t *testing.T) {
	const api = "https://api.broker.example.com"
	e := newEnv(t, func(p *policy.Policy) { p.APIURL = api })
	w := newWallet(t)
	for _, tc := range []struct {
		name, domain, uri string
		ok                bool
	}{
		{"API origin", "api.broker.example.com", api + "/v1/session", true},
		{"issuer domain", "broker.example.com", api + "/v1/session", false},
		{"issuer URI", "api.broker.example.com", testIssuer + "/v1/session", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := e.message(w, e.nonce(t))
			m.Domain, m.URI = tc.domain, tc.uri
			var r protocol.CreateSessionResponse
			err := e.call(t, protocol.OpCreateSession, signIn(w, m), &r)
			if tc.ok && err != nil {
				t.Fatalf("sign-in naming the API origin refused: %v", err)
			}
			if !tc.ok && !errors.Is(err, protocol.ErrSignInRejected) {
				t.Fatalf("sign-in naming %s/%s: err = %v, want sign-in rejected", tc.domain, tc.uri, err)
			}
		})
	}
}

// TestIssuerOriginEnclave: with issuer_origin enclave the manifest names the
// origin's TLS key and ACME account key, both derived from the seed (the same
// for every enclave of the seed), and origin_state reports them.
func TestIssuerOriginEnclave(t *testing.T) {
	mk := func() *Service {
		att, err := attester.NewSimulated(attester.SimulatedOptions{StateDir: t.TempDir(), AppData: []byte("policy")})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { att.Close() })
		svc, err := New(Config{Policy: policy.Default(testIssuer), Seed: testSeed, Attester: att,
			IssuerOrigin: manifest.OriginEnclave, OriginSelfSigned: true})
		if err != nil {
			t.Fatal(err)
		}
		return svc
	}
	a, b := mk(), mk()
	m, err := manifest.Parse(a.Info().Manifest)
	if err != nil {
		t.Fatal(err)
	}
	if m.IssuerOrigin != manifest.OriginEnclave || m.IssuerOriginTLSSPKISHA256 != a.Origin().SPKISHA256() ||
		m.ACMEAccountKeyThumbprint != a.Origin().AccountKeyThumbprint() {
		t.Fatalf("manifest %+v does not name the origin's keys", m)
	}
	if a.Origin().SPKISHA256() != b.Origin().SPKISHA256() || a.Origin().AccountKeyThumbprint() != b.Origin().AccountKeyThumbprint() {
		t.Fatal("two enclaves of one seed derive different origin keys")
	}
	st, err := a.Handle(t.Context(), protocol.OpOriginState, mustMarshal(t, protocol.OriginStateRequest{}))
	if err != nil || st.(protocol.OriginStateResponse).TLSSPKISHA256 != m.IssuerOriginTLSSPKISHA256 || len(st.(protocol.OriginStateResponse).Chain) != 1 {
		t.Fatalf("origin_state = %+v, %v", st, err)
	}

	host := newEnv(t, nil)
	if _, err := host.svc.Handle(t.Context(), protocol.OpOriginState, mustMarshal(t, protocol.OriginStateRequest{})); !errors.Is(err, protocol.ErrBadRequest) {
		t.Fatalf("origin_state on an issuer_origin host enclave: %v", err)
	}
	hm, _ := manifest.Parse(host.svc.Info().Manifest)
	if hm.IssuerOrigin != manifest.OriginHost || hm.IssuerOriginTLSSPKISHA256 != "" {
		t.Fatalf("host-origin manifest: %+v", hm)
	}
}

func mustMarshal(t *testing.T, v any) []byte {
	b, err := protocol.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
