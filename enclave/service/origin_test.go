package service

import (
	"errors"
	"testing"

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
