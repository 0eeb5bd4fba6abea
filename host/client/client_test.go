package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/agentkeys/broker/host/client"
	"github.com/agentkeys/broker/internal/testbroker"
	"github.com/agentkeys/broker/shared/jwk"
)

// signIn starts a broker, makes a wallet and signs in with it.
func signIn(t *testing.T) (*testbroker.Broker, *client.Client, *client.Session, string) {
	t.Helper()
	b := testbroker.Start(t, testbroker.Options{})
	c, err := client.New(b.URL)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "wallet.json")
	if _, err := client.NewWalletFile(path); err != nil {
		t.Fatal(err)
	}
	key, address, err := client.LoadWalletFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.SignIn(context.Background(), key, client.SignInOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return b, c, s, address
}

// verifyJWT checks tok's signature against the broker's published JWKS and
// returns its claims.
func verifyJWT(t *testing.T, brokerURL, tok string) jwt.MapClaims {
	t.Helper()
	resp, err := http.Get(brokerURL + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var set jwk.Set
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		t.Fatal(err)
	}
	claims := jwt.MapClaims{}
	_, err = jwt.ParseWithClaims(tok, claims, func(tk *jwt.Token) (any, error) {
		for _, k := range set.Keys {
			if k.Kid == tk.Header["kid"] {
				return k.PublicKey()
			}
		}
		return nil, errors.New("kid not in the JWKS")
	}, jwt.WithValidMethods([]string{"ES256"}), jwt.WithIssuer(brokerURL), jwt.WithAudience("sts.amazonaws.com"))
	if err != nil {
		t.Fatalf("JWT does not verify: %v", err)
	}
	return claims
}

func TestSignInMintRevoke(t *testing.T) {
	ctx := context.Background()
	b, c, s, address := signIn(t)
	wallet := strings.ToLower(address)
	if s.Wallet != wallet {
		t.Errorf("session wallet = %q, want %q", s.Wallet, wallet)
	}
	if d := time.Until(s.Expiration); d < 23*time.Hour || d > 25*time.Hour {
		t.Errorf("session expires in %v, want about 24h", d)
	}

	j, err := c.MintJWT(ctx, s.Token, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if j.Wallet != wallet {
		t.Errorf("JWT wallet = %q, want %q", j.Wallet, wallet)
	}
	claims := verifyJWT(t, b.URL, j.Token)
	if sub, _ := claims.GetSubject(); sub != "agentkeys:agent:"+wallet {
		t.Errorf("sub = %q, want %q", sub, "agentkeys:agent:"+wallet)
	}
	if claims["agentkeys_user_wallet"] != wallet {
		t.Errorf("agentkeys_user_wallet = %v, want %q", claims["agentkeys_user_wallet"], wallet)
	}
	exp, _ := claims.GetExpirationTime()
	iat, _ := claims.GetIssuedAt()
	if ttl := exp.Sub(iat.Time); ttl != 300*time.Second {
		t.Errorf("default TTL = %v, want 300s", ttl)
	}
	if !exp.Time.Equal(j.Expiration) {
		t.Errorf("exp claim %v differs from the answer's expiration %v", exp.Time, j.Expiration)
	}

	j, err = c.MintJWT(ctx, s.Token, "sts.amazonaws.com", 120)
	if err != nil {
		t.Fatal(err)
	}
	claims = verifyJWT(t, b.URL, j.Token)
	exp, _ = claims.GetExpirationTime()
	iat, _ = claims.GetIssuedAt()
	if ttl := exp.Sub(iat.Time); ttl != 120*time.Second {
		t.Errorf("TTL = %v, want 120s", ttl)
	}

	if err := c.Revoke(ctx, s.Token); err != nil {
		t.Fatal(err)
	}
	_, err = c.MintJWT(ctx, s.Token, "", 0)
	var e *client.Error
	if !errors.As(err, &e) || e.Status != http.StatusUnauthorized || e.Kind != "unauthorized" {
		t.Fatalf("mint after revoke: got %v, want a 401 unauthorized *Error", err)
	}
	if strings.Contains(err.Error(), s.Token) {
		t.Error("the error holds the session token")
	}
}

func TestMintOutOfPolicy(t *testing.T) {
	ctx := context.Background()
	_, c, s, _ := signIn(t)
	for _, tc := range []struct {
		audience string
		ttl      int64
		want     []string
	}{
		{"", 59, []string{"60", "3600"}},
		{"", 3601, []string{"60", "3600"}},
		{"", -1, []string{"60", "3600"}},
		{"example.com", 0, []string{"audience"}},
	} {
		_, err := c.MintJWT(ctx, s.Token, tc.audience, tc.ttl)
		var e *client.Error
		if !errors.As(err, &e) || e.Status != http.StatusBadRequest || e.Kind != "bad_request" {
			t.Errorf("audience %q ttl %d: got %v, want a 400 bad_request *Error", tc.audience, tc.ttl, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(e.Message, w) {
				t.Errorf("audience %q ttl %d: message %q does not mention %q", tc.audience, tc.ttl, e.Message, w)
			}
		}
	}
}

func TestBadSessions(t *testing.T) {
	ctx := context.Background()
	b := testbroker.Start(t, testbroker.Options{})
	c, err := client.New(b.URL)
	if err != nil {
		t.Fatal(err)
	}
	// Refused before any request, without quoting the token.
	for _, tok := range []string{"", "has space", "tab\there", "new\nline"} {
		if _, err := c.MintJWT(ctx, tok, "", 0); err == nil {
			t.Errorf("MintJWT(%q) succeeded", tok)
		} else if tok != "" && strings.Contains(err.Error(), tok) {
			t.Errorf("error %q quotes the token", err)
		}
		if err := c.Revoke(ctx, tok); err == nil {
			t.Errorf("Revoke(%q) succeeded", tok)
		}
	}
	// Refused by the broker.
	for _, tok := range []string{"not-a-session", "eyJhbGciOiJFUzI1NiJ9.eyJzaWQiOiJ4In0.c2ln"} {
		_, err := c.MintJWT(ctx, tok, "", 0)
		var e *client.Error
		if !errors.As(err, &e) || e.Status != http.StatusUnauthorized || e.Kind != "unauthorized" {
			t.Errorf("MintJWT(%q): got %v, want a 401 unauthorized *Error", tok, err)
		}
		err = c.Revoke(ctx, tok)
		if !errors.As(err, &e) || e.Status != http.StatusUnauthorized {
			t.Errorf("Revoke(%q): got %v, want a 401 *Error", tok, err)
		}
	}
}

func TestNonce(t *testing.T) {
	b := testbroker.Start(t, testbroker.Options{})
	c, err := client.New(b.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	n1, exp, err := c.Nonce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(n1) < 8 || !exp.After(time.Now()) {
		t.Errorf("nonce %q expiring at %v", n1, exp)
	}
	n2, _, err := c.Nonce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n1 == n2 {
		t.Error("two nonces are equal")
	}
}

// TestSignInOtherName shows that the base URL must be the issuer itself:
// localhost reaches the same server as 127.0.0.1, but the enclave refuses a
// message made for another domain.
func TestSignInOtherName(t *testing.T) {
	b := testbroker.Start(t, testbroker.Options{})
	c, err := client.New(strings.Replace(b.URL, "127.0.0.1", "localhost", 1))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "wallet.json")
	if _, err := client.NewWalletFile(path); err != nil {
		t.Fatal(err)
	}
	key, _, err := client.LoadWalletFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.SignIn(context.Background(), key, client.SignInOptions{})
	var e *client.Error
	if !errors.As(err, &e) || e.Status != http.StatusUnauthorized || !strings.Contains(e.Message, "domain") {
		t.Fatalf("got %v, want a 401 about the domain", err)
	}
}

func TestSignInOptions(t *testing.T) {
	b := testbroker.Start(t, testbroker.Options{})
	c, err := client.New(b.URL)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "wallet.json")
	if _, err := client.NewWalletFile(path); err != nil {
		t.Fatal(err)
	}
	key, _, err := client.LoadWalletFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SignIn(context.Background(), key, client.SignInOptions{ChainID: 10, Statement: "Let agent 7 in."}); err != nil {
		t.Fatal(err)
	}
	// A statement that would break the message layout is refused locally.
	if _, err := c.SignIn(context.Background(), key, client.SignInOptions{Statement: "a\nb"}); err == nil {
		t.Error("a statement with a newline was accepted")
	}
	if _, err := c.SignIn(context.Background(), nil, client.SignInOptions{}); err == nil {
		t.Error("a nil key was accepted")
	}
}

func TestNew(t *testing.T) {
	for in, want := range map[string]string{
		"http://127.0.0.1:8091":                      "http://127.0.0.1:8091",
		"http://127.0.0.1:8091/":                     "http://127.0.0.1:8091",
		"HTTP://LocalHost:8091":                      "http://localhost:8091",
		"http://[::1]:8091":                          "http://[::1]:8091",
		"https://Broker.Example.com":                 "https://broker.example.com",
		"https://broker.example.com:443":             "https://broker.example.com",
		"https://[2001:db8::1]:443/":                 "https://[2001:db8::1]",
		"https://broker.example.com:8443/agentkeys/": "https://broker.example.com:8443/agentkeys",
	} {
		c, err := client.New(in)
		if err != nil {
			t.Errorf("New(%q): %v", in, err)
			continue
		}
		if c.BaseURL != want {
			t.Errorf("New(%q).BaseURL = %q, want %q", in, c.BaseURL, want)
		}
		if c.HTTP == nil || c.HTTP.Timeout != client.DefaultTimeout {
			t.Errorf("New(%q) has no bounded HTTP client", in)
		}
	}
	for _, in := range []string{
		"", "broker.example.com", "127.0.0.1:8091", "ftp://broker.example.com",
		"http://broker.example.com", "https://", "https://broker.example.com?x=1",
		"https://broker.example.com/#frag", "https://user:secret@broker.example.com",
		"https://broker.example.com/%zz",
	} {
		_, err := client.New(in)
		if err == nil {
			t.Errorf("New(%q) succeeded", in)
		} else if strings.Contains(err.Error(), "secret") {
			t.Errorf("New(%q): error %q repeats the password", in, err)
		}
	}
}

// TestErrorBodies drives the client against servers that answer in ways the
// broker does not: the client must still say something useful and safe.
func TestErrorBodies(t *testing.T) {
	big := strings.Repeat("x", client.MaxResponseSize+1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/html/v1/session/nonce":
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusBadGateway)
			io.WriteString(w, "<html>\n<head><title>502 Bad Gateway</title></head>\x1b[31m\u202e"+strings.Repeat(" pad", 200)+"</html>")
		case "/empty/v1/session/nonce":
			w.WriteHeader(http.StatusServiceUnavailable)
		case "/redirect/v1/session/nonce":
			http.Redirect(w, r, "https://elsewhere.example/v1/session/nonce", http.StatusFound)
		case "/notjson/v1/session/nonce":
			io.WriteString(w, "ok")
		case "/big/v1/session/nonce":
			io.WriteString(w, `{"nonce":"`+big+`"}`)
		case "/bigerror/v1/session/nonce":
			w.WriteHeader(http.StatusInternalServerError)
			io.WriteString(w, big)
		case "/nojwt/v1/mint-oidc-jwt":
			io.WriteString(w, `{"jwt":"eyJ.x\u001b[2J.y","wallet":"0x0000000000000000000000000000000000000000"}`)
		case "/badwallet/v1/session":
			io.WriteString(w, `{"session":"a.b.c","wallet":"0x0000000000000000000000000000000000000000","expiration":1}`)
		case "/badwallet/v1/session/nonce":
			io.WriteString(w, `{"nonce":"abcdefgh1234","expires_at":1}`)
		case "/badnonce/v1/session/nonce":
			io.WriteString(w, `{"nonce":"abcdefgh\nURI: https://evil.example","expires_at":1}`)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	ctx := context.Background()
	at := func(prefix string) *client.Client {
		c, err := client.New(srv.URL + prefix)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	var e *client.Error

	_, _, err := at("/html").Nonce(ctx)
	if !errors.As(err, &e) || e.Status != http.StatusBadGateway || e.Kind != "" {
		t.Fatalf("HTML error page: got %v", err)
	}
	if !strings.Contains(e.Message, "502 Bad Gateway") || strings.ContainsAny(e.Message, "\x1b\n\u202e") || len(e.Message) > 300 {
		t.Errorf("HTML error page: message %q is not a short, clean prefix", e.Message)
	}
	if !strings.HasPrefix(err.Error(), "broker answered 502 bad gateway: <html> <head>") {
		t.Errorf("HTML error page: Error() = %q", err)
	}

	_, _, err = at("/empty").Nonce(ctx)
	if !errors.As(err, &e) || e.Status != http.StatusServiceUnavailable || err.Error() != "broker answered 503 service unavailable" {
		t.Errorf("empty error body: got %v", err)
	}

	_, _, err = at("/redirect").Nonce(ctx)
	if !errors.As(err, &e) || e.Status != http.StatusFound || !strings.Contains(e.Message, "https://elsewhere.example/") {
		t.Errorf("redirect: got %v, want a 302 *Error naming the location", err)
	}

	_, _, err = at("/bigerror").Nonce(ctx)
	if !errors.As(err, &e) || e.Status != http.StatusInternalServerError || len(e.Message) > 300 {
		t.Errorf("large error body: got %.300v", err)
	}

	for _, p := range []string{"/notjson", "/big"} {
		_, _, err = at(p).Nonce(ctx)
		if err == nil || errors.As(err, &e) || len(err.Error()) > 300 {
			t.Errorf("%s: got %.300v, want a short plain error", p, err)
		}
	}

	if _, err := at("/nojwt").MintJWT(ctx, "tok", "", 0); err == nil || strings.Contains(err.Error(), "\x1b") {
		t.Errorf("malformed JWT: got %q", err)
	}

	path := filepath.Join(t.TempDir(), "wallet.json")
	if _, err := client.NewWalletFile(path); err != nil {
		t.Fatal(err)
	}
	key, _, err := client.LoadWalletFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := at("/badwallet").SignIn(ctx, key, client.SignInOptions{}); err == nil || !strings.Contains(err.Error(), "not this key's") {
		t.Errorf("session for another wallet: got %v", err)
	}
	if _, err := at("/badnonce").SignIn(ctx, key, client.SignInOptions{}); err == nil || !strings.Contains(err.Error(), "nonce") {
		t.Errorf("nonce that would inject a line: got %v", err)
	}
}

func TestUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	c, err := client.New(url)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.MintJWT(context.Background(), "secret-token", "", 0)
	if err == nil || !strings.HasPrefix(err.Error(), "failed to reach the broker") {
		t.Fatalf("got %v", err)
	}
	if strings.Contains(err.Error(), "secret-token") {
		t.Error("the error holds the token")
	}
	var e *client.Error
	if errors.As(err, &e) {
		t.Error("a network failure is an *Error")
	}
}
