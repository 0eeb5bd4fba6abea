package client_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/agentkeys/broker/shared/jwk"
	"github.com/agentkeys/broker/shared/manifest"
	"github.com/agentkeys/broker/shared/policy"
)

// TestKeyRotation walks the three policy steps of docs/rotation.md — publish
// the next key, sign with it, retire the old one — each a restart of the
// enclave with a new policy (a new image), and checks what a relying party
// sees at each step: which keys the JWKS and the manifest list, which key
// signs, and whether a JWT minted before the rotation still verifies.
func TestKeyRotation(t *testing.T) {
	ctx := context.Background()
	b, c, s, _ := signIn(t)
	// verify checks tok as a relying party would, with a fresh JWKS cache.
	verify := func(tok string) error {
		ks := oidc.NewRemoteKeySet(ctx, b.URL+"/.well-known/jwks.json")
		v := oidc.NewVerifier(b.URL, ks, &oidc.Config{ClientID: "sts.amazonaws.com", SupportedSigningAlgs: []string{"ES256"}})
		_, err := v.Verify(ctx, tok)
		return err
	}
	kidOf := func(tok string) string {
		t.Helper()
		h, err := jwtHeader(tok)
		if err != nil {
			t.Fatal(err)
		}
		return h.Kid
	}
	mint := func() string {
		t.Helper()
		j, err := c.MintJWT(ctx, s.Token, "", 0)
		if err != nil {
			t.Fatal(err)
		}
		return j.Token
	}
	type step struct {
		name      string
		keys      []string
		signer    string
		oldValid  bool // the JWT minted under v1 still verifies
		published int
	}
	v1 := mint()
	v1kid := kidOf(v1)
	steps := []step{
		{"publish v2", []string{"oidc/issuer/v1", "oidc/issuer/v2"}, "oidc/issuer/v1", true, 2},
		{"sign with v2", []string{"oidc/issuer/v1", "oidc/issuer/v2"}, "oidc/issuer/v2", true, 2},
		{"retire v1", []string{"oidc/issuer/v2"}, "oidc/issuer/v2", false, 1},
	}
	var v2kid string
	for _, st := range steps {
		b.Rotate(func(p *policy.Policy) { p.IssuerKeys, p.SigningKey = st.keys, st.signer })
		set := fetchJWKS(t, b.URL)
		m := fetchManifest(t, b.URL)
		if len(set.Keys) != st.published || len(m.IssuerKeys) != st.published {
			t.Fatalf("%s: JWKS has %d keys, manifest %d, want %d", st.name, len(set.Keys), len(m.IssuerKeys), st.published)
		}
		for i, k := range m.IssuerKeys {
			if k.Label != st.keys[i] || k.JWK != set.Keys[i] || k.Signs != (k.Label == st.signer) {
				t.Fatalf("%s: manifest key %d = %+v, JWKS %+v", st.name, i, k, set.Keys[i])
			}
		}
		// The session survives the new image: same seed, same session key.
		tok := mint()
		if got, want := kidOf(tok), m.Signer().Kid; got != want {
			t.Fatalf("%s: new JWT signed by %s, manifest says %s signs", st.name, got, want)
		}
		if st.signer == "oidc/issuer/v1" && kidOf(tok) != v1kid {
			t.Fatalf("%s: signer changed before the switch", st.name)
		}
		if st.signer == "oidc/issuer/v2" {
			if v2kid == "" {
				v2kid = kidOf(tok)
			}
			if kidOf(tok) != v2kid || v2kid == v1kid {
				t.Fatalf("%s: v2 kid %s (v1 %s)", st.name, kidOf(tok), v1kid)
			}
		}
		if err := verify(tok); err != nil {
			t.Fatalf("%s: a fresh JWT does not verify: %v", st.name, err)
		}
		err := verify(v1)
		if st.oldValid && err != nil {
			t.Fatalf("%s: the JWT minted under v1 no longer verifies during the overlap: %v", st.name, err)
		}
		if !st.oldValid && err == nil {
			t.Fatalf("%s: the JWT minted under v1 still verifies after v1 was retired", st.name)
		}
	}
}

func jwtHeader(tok string) (struct{ Kid string }, error) {
	var h struct{ Kid string }
	parts, err := jwtParts(tok)
	if err != nil {
		return h, err
	}
	return h, json.Unmarshal(parts, &h)
}

func fetchJWKS(t *testing.T, base string) jwk.Set {
	t.Helper()
	var set jwk.Set
	if err := json.Unmarshal(get(t, base+"/.well-known/jwks.json"), &set); err != nil {
		t.Fatal(err)
	}
	return set
}

func fetchManifest(t *testing.T, base string) manifest.Manifest {
	t.Helper()
	m, err := manifest.Parse(get(t, base+"/.well-known/agentkeys-manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func get(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return body
}

// jwtParts returns the decoded header of a compact JWS.
func jwtParts(tok string) ([]byte, error) {
	head, _, ok := strings.Cut(tok, ".")
	if !ok {
		return nil, errors.New("not a compact JWS")
	}
	return base64.RawURLEncoding.DecodeString(head)
}
