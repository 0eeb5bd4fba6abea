package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestNormalizeIssuer(t *testing.T) {
	tests := []struct {
		in, want, err string
	}{
		{"https://broker.example.com", "https://broker.example.com", ""},
		{"https://broker.example.com/", "https://broker.example.com", ""},
		{"HTTPS://Broker.Example.COM//", "https://broker.example.com", ""},
		{"https://broker.example.com:443/", "https://broker.example.com", ""},
		{"https://broker.example.com:8443/oidc/", "https://broker.example.com:8443/oidc", ""},
		{"http://127.0.0.1:8091", "http://127.0.0.1:8091", ""},
		{"http://localhost:8091/", "http://localhost:8091", ""},
		{"http://[::1]:8091", "http://[::1]:8091", ""},
		{"http://broker.example.com", "", "must use https"},
		{"ftp://broker.example.com", "", "must use https"},
		{"https://broker.example.com/?a=b", "", "query"},
		{"https://broker.example.com?", "", "query"},
		{"https://broker.example.com/#frag", "", "fragment"},
		{"https://user@broker.example.com", "", "user info"},
		{"https:///path", "", "no host"},
		{"broker.example.com", "", "https"},
		{"", "", "empty"},
	}
	for _, tt := range tests {
		got, err := NormalizeIssuer(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("NormalizeIssuer(%q) = %q, %v; want error containing %q", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("NormalizeIssuer(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestParse(t *testing.T) {
	p, err := Parse([]byte(`{"issuer": "https://b.example.com/"}`))
	if err != nil {
		t.Fatal(err)
	}
	d := Default("https://b.example.com")
	if p.Issuer != d.Issuer || p.JWTTTLDefault != 300 || p.JWTTTLMin != 60 || p.JWTTTLMax != 3600 ||
		p.SessionLifetime != 86400 || p.Audiences[0] != "sts.amazonaws.com" || p.IssuerKeys[0] != "oidc/issuer/v1" || p.AllowHostAssertedWallet {
		t.Fatalf("defaults not applied: %+v", p)
	}
	if p.Digest() != d.Digest() {
		t.Fatal("digest of equal policies differs")
	}
	p.JWTTTLDefault = 301
	if p.Digest() == d.Digest() {
		t.Fatal("digest ignores a field")
	}

	bad := []struct{ json, err string }{
		{`{}`, "issuer URL is empty"},
		{`{"issuer":"https://b.example.com","isuer":"x"}`, "unknown field"},
		{`{"issuer":"https://b.example.com"} {}`, "trailing data"},
		{`{"issuer":"https://b.example.com","audiences":[]}`, "one to 16"},
		{`{"issuer":"https://b.example.com","audiences":["a","a"]}`, "listed twice"},
		{`{"issuer":"https://b.example.com","jwt_ttl_max_seconds":7200}`, "within [60, 3600]"},
		{`{"issuer":"https://b.example.com","jwt_ttl_min_seconds":30}`, "within [60, 3600]"},
		{`{"issuer":"https://b.example.com","jwt_ttl_default_seconds":30}`, "jwt_ttl_default_seconds 30"},
		{`{"issuer":"https://b.example.com","session_lifetime_seconds":2592001}`, "session_lifetime_seconds"},
		{`{"issuer":"https://b.example.com","nonce_lifetime_seconds":0}`, "nonce_lifetime_seconds"},
		{`{"issuer":"https://b.example.com","issuer_keys":["issuer/jwt/v1"]}`, "must start with oidc/issuer/"},
		{`{"issuer":"https://b.example.com","issuer_keys":[]}`, "one to four"},
		{`{"issuer":"https://b.example.com","issuer_keys":["oidc/issuer/v1","oidc/issuer/v1"]}`, "listed twice"},
		{`{"issuer":"https://b.example.com","audiences":["a","b","c","d","e","f","g","h","i","j","k","l","m","n","o","p","q"]}`, "one to 16"},
		{`{"issuer":"http://b.example.com"}`, "must use https"},
		{strings.Repeat(" ", MaxFileSize+1), "larger than"},
	}
	for _, tt := range bad {
		if _, err := Parse([]byte(tt.json)); err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("Parse(%.60q): err = %v, want %q", tt.json, err, tt.err)
		}
	}
}

func TestTTLAndAudience(t *testing.T) {
	p := Default("https://b.example.com")
	p.Audiences = []string{"sts.amazonaws.com", "other"}
	ttls := []struct {
		in   int64
		want int64
		ok   bool
	}{{0, 300, true}, {60, 60, true}, {3600, 3600, true}, {59, 0, false}, {3601, 0, false}, {-1, 0, false}}
	for _, tt := range ttls {
		d, err := p.TTL(tt.in)
		if (err == nil) != tt.ok || (tt.ok && int64(d.Seconds()) != tt.want) {
			t.Errorf("TTL(%d) = %v, %v", tt.in, d, err)
		}
		if err != nil && !strings.Contains(err.Error(), "between 60 and 3600") {
			t.Errorf("TTL(%d) error does not name the bounds: %v", tt.in, err)
		}
	}
	if a, err := p.Audience(""); err != nil || a != "sts.amazonaws.com" {
		t.Errorf("default audience: %q %v", a, err)
	}
	if a, err := p.Audience("other"); err != nil || a != "other" {
		t.Errorf("allowed audience: %q %v", a, err)
	}
	if _, err := p.Audience("evil"); err == nil || !strings.Contains(err.Error(), "sts.amazonaws.com, other") {
		t.Errorf("disallowed audience: %v", err)
	}
}

func TestLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.json")
	os.WriteFile(path, []byte(`{"issuer":"http://127.0.0.1:8091/"}`), 0o644)
	p, raw, err := Load(path)
	if err != nil || p.Issuer != "http://127.0.0.1:8091" || len(raw) == 0 {
		t.Fatalf("Load: %+v %v", p, err)
	}
	if _, _, err := Load(path + ".missing"); err == nil {
		t.Fatal("missing file loaded")
	}
}

func TestAllowsChain(t *testing.T) {
	tests := []struct {
		ids  []uint64
		id   uint64
		want bool
	}{
		{nil, 1, true},
		{[]uint64{}, 31337, true},
		{[]uint64{1}, 1, true},
		{[]uint64{1}, 10, false},
		{[]uint64{10, 8453}, 8453, true},
		{[]uint64{10, 8453}, 1, false},
		{[]uint64{10}, 0, false},
	}
	for _, tt := range tests {
		p := Default("https://broker.example.com")
		p.ChainIDs = tt.ids
		if got := p.AllowsChain(tt.id); got != tt.want {
			t.Errorf("chain_ids %v: AllowsChain(%d) = %v, want %v", tt.ids, tt.id, got, tt.want)
		}
	}
}

// TestDigestGolden pins the digest of the default policy, which docs/protocol.md
// quotes: a field added, renamed or reordered changes every enclave's digest.
func TestDigestGolden(t *testing.T) {
	const want = "eacbc7996ef195a588cac32cf9f24f8f2fc17bbd0ae6d90f395b7f788c7d7405"
	if got := Default("https://broker.example.com").Digest(); got != want {
		t.Fatalf("default policy digest = %s, want %s", got, want)
	}
}

func TestValidateNewFields(t *testing.T) {
	for _, tc := range []struct {
		name   string
		adjust func(*Policy)
		want   string // substring of the error; "" = valid
	}{
		{"defaults", func(*Policy) {}, ""},
		{"signing key not published", func(p *Policy) { p.SigningKey = "oidc/issuer/v2" }, "signing_key"},
		{"signing key second", func(p *Policy) {
			p.IssuerKeys, p.SigningKey = []string{"oidc/issuer/v1", "oidc/issuer/v2"}, "oidc/issuer/v2"
		}, ""},
		{"chain zero", func(p *Policy) { p.ChainIDs = []uint64{0} }, "chain id 0"},
		{"chain twice", func(p *Policy) { p.ChainIDs = []uint64{1, 1} }, "listed twice"},
		{"too many chains", func(p *Policy) {
			p.ChainIDs = nil
			for i := range MaxChainIDs + 1 {
				p.ChainIDs = append(p.ChainIDs, uint64(i+1))
			}
		}, "more than"},
		{"aws min below STS", func(p *Policy) { p.AWSDurationMin = 899 }, "aws duration bounds"},
		{"aws max above STS", func(p *Policy) { p.AWSDurationMax = 43201 }, "aws duration bounds"},
		{"aws min above max", func(p *Policy) { p.AWSDurationMin, p.AWSDurationMax = 2000, 1000 }, "aws duration bounds"},
		{"aws default outside", func(p *Policy) { p.AWSDurationDefault = 600 }, "aws_duration_default_seconds"},
		{"aws narrowed", func(p *Policy) {
			p.AWSDurationMin, p.AWSDurationMax, p.AWSDurationDefault = 900, 1800, 900
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := Default("https://broker.example.com")
			tc.adjust(&p)
			err := p.Validate()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestAWSDuration(t *testing.T) {
	p := Default("https://broker.example.com")
	p.AWSDurationMax = 7200
	for _, tc := range []struct {
		req  int64
		want time.Duration
		ok   bool
	}{{0, time.Hour, true}, {900, 900 * time.Second, true}, {7200, 2 * time.Hour, true}, {899, 0, false}, {7201, 0, false}} {
		got, err := p.AWSDuration(tc.req)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("AWSDuration(%d) = %v, %v", tc.req, got, err)
		}
	}
}

func TestParseSigningKeyDefaultsToFirst(t *testing.T) {
	p, err := Parse([]byte(`{"issuer":"https://b.example","issuer_keys":["oidc/issuer/v2","oidc/issuer/v1"]}`))
	if err != nil || p.SigningKey != "oidc/issuer/v2" {
		t.Fatalf("signing key = %q, %v", p.SigningKey, err)
	}
}

func TestAPIURL(t *testing.T) {
	for _, tc := range []struct{ json, want, err string }{
		{`{"issuer":"https://b.example.com"}`, "https://b.example.com", ""},
		{`{"issuer":"https://b.example.com","api_url":"HTTPS://API.b.example.com/"}`, "https://api.b.example.com", ""},
		{`{"issuer":"https://b.example.com","api_url":"http://api.b.example.com"}`, "", "api_url"},
		{`{"issuer":"https://b.example.com","api_url":"https://api.b.example.com/?q"}`, "", "api_url"},
	} {
		p, err := Parse([]byte(tc.json))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Parse(%s) = %v, want error containing %q", tc.json, err, tc.err)
			}
			continue
		}
		if err != nil || p.APIURL != tc.want {
			t.Errorf("Parse(%s): api_url = %q, %v; want %q", tc.json, p.APIURL, err, tc.want)
		}
	}
	p := Default("https://b.example.com")
	p.APIURL = "https://API.b.example.com"
	if err := p.Validate(); err == nil || !strings.Contains(err.Error(), "not normalised") {
		t.Errorf("Validate accepted an api_url that is not normalised: %v", err)
	}
}
