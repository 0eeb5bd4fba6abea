package policy

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestParseStrict: a key given twice or in another case is refused, where
// encoding/json would let the last one win or fill the field anyway.
func TestParseStrict(t *testing.T) {
	for _, tt := range []struct{ json, err string }{
		{`{"issuer":"https://a.example.com","issuer":"https://b.example.com"}`, "issuer: key appears twice"},
		{`{"Issuer":"https://b.example.com"}`, `keys are case-sensitive; want "issuer"`},
		{`{"issuer":"https://b.example.com","ALLOW_HOST_ASSERTED_WALLET":true}`, `want "allow_host_asserted_wallet"`},
		{`{"issuer":"https://b.example.com","audiences":"sts.amazonaws.com"}`, "audiences: want an array"},
		{`["https://b.example.com"]`, "want a JSON object"},
	} {
		if _, err := Parse([]byte(tt.json)); err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("Parse(%s): err = %v, want %q", tt.json, err, tt.err)
		}
	}
}

// FuzzPolicyParse: Parse never panics, and whatever it accepts is a valid
// policy that encodes and parses back to the same digest.
func FuzzPolicyParse(f *testing.F) {
	f.Add([]byte(`{"issuer":"https://b.example.com"}`))
	f.Add([]byte(`{"issuer":"http://127.0.0.1:8091/","audiences":["sts.amazonaws.com","x"],"chain_ids":[1,10],"issuer_keys":["oidc/issuer/v1","oidc/issuer/v2"],"signing_key":"oidc/issuer/v2"}`))
	f.Add([]byte(`{"issuer":"https://b.example.com","aws_duration_min_seconds":900,"aws_duration_max_seconds":3600,"aws_duration_default_seconds":1800}`))
	f.Add([]byte(`{"issuer":"https://b.example.com","Issuer":"x"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data)
		if err != nil {
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("Parse accepted an invalid policy: %v", err)
		}
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		q, err := Parse(b)
		if err != nil {
			t.Fatalf("a parsed policy does not parse again: %v\n%s", err, b)
		}
		if p.Digest() != q.Digest() {
			t.Fatalf("digest changed on a round trip: %s", b)
		}
	})
}
