package service

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	"github.com/golang-jwt/jwt/v5"
	"github.com/hf/nitrite"

	"github.com/agentkeys/broker/enclave/attester"
	"github.com/agentkeys/broker/shared/claims"
	"github.com/agentkeys/broker/shared/jwk"
	"github.com/agentkeys/broker/shared/manifest"
	"github.com/agentkeys/broker/shared/policy"
	"github.com/agentkeys/broker/shared/protocol"
	"github.com/agentkeys/broker/shared/siwe"
)

const testIssuer = "https://broker.example.com"

var testSeed = func() []byte {
	b := make([]byte, 32)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}()

// clock is a settable clock shared by the service and the simulated attester.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type env struct {
	svc    *Service
	client *protocol.Client
	clock  *clock
	att    *attester.Simulated
}

func newEnv(t *testing.T, mod func(*policy.Policy)) *env {
	t.Helper()
	p := policy.Default(testIssuer)
	if mod != nil {
		mod(&p)
	}
	clk := &clock{t: time.Now().Truncate(time.Second)}
	att, err := attester.NewSimulated(attester.SimulatedOptions{StateDir: t.TempDir(), AppData: []byte("policy"), Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := New(Config{Policy: p, Seed: testSeed, Attester: att, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.AuditResume(protocol.AuditResumeRequest{}); err != nil {
		t.Fatal(err)
	}
	// Every test goes through the real protocol over a unix socket.
	addr := "unix:" + filepath.Join(t.TempDir(), "enclave.sock")
	l, err := protocol.Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &protocol.Server{Handler: svc}
	go srv.Serve(l)
	conn, err := protocol.Dial(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	c := protocol.NewClient(conn)
	t.Cleanup(func() {
		c.Close()
		srv.Shutdown(context.Background())
		att.Close()
	})
	return &env{svc: svc, client: c, clock: clk, att: att}
}

func (e *env) call(t *testing.T, op protocol.Op, req, resp any) error {
	t.Helper()
	return e.client.Call(context.Background(), op, req, resp)
}

func (e *env) info(t *testing.T) protocol.InfoResponse {
	t.Helper()
	var info protocol.InfoResponse
	if err := e.call(t, protocol.OpInfo, protocol.InfoRequest{}, &info); err != nil {
		t.Fatal(err)
	}
	return info
}

type wallet struct {
	key  *secp256k1.PrivateKey
	addr string // EIP-55 checksummed
}

func newWallet(t *testing.T) wallet {
	t.Helper()
	k, err := secp256k1.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	addr, err := siwe.ChecksumAddress(siwe.AddressOf(k.PubKey()))
	if err != nil {
		t.Fatal(err)
	}
	return wallet{k, addr}
}

func (e *env) nonce(t *testing.T) string {
	t.Helper()
	var r protocol.SessionNonceResponse
	if err := e.call(t, protocol.OpSessionNonce, protocol.SessionNonceRequest{}, &r); err != nil {
		t.Fatal(err)
	}
	return r.Nonce
}

func (e *env) message(w wallet, nonce string) *siwe.Message {
	return &siwe.Message{
		Domain: "broker.example.com", Address: w.addr, Statement: "Sign in to AgentKeys.",
		URI: testIssuer + "/v1/session", Version: "1", ChainID: 1, Nonce: nonce, IssuedAt: e.clock.Now(),
	}
}

func signIn(w wallet, m *siwe.Message) protocol.CreateSessionRequest {
	text := m.String()
	return protocol.CreateSessionRequest{Message: text, Signature: siwe.Sign(w.key, []byte(text))}
}

func (e *env) session(t *testing.T, w wallet) protocol.CreateSessionResponse {
	t.Helper()
	var r protocol.CreateSessionResponse
	if err := e.call(t, protocol.OpCreateSession, signIn(w, e.message(w, e.nonce(t))), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestSignInAndMint(t *testing.T) {
	e := newEnv(t, nil)
	w := newWallet(t)
	lower := strings.ToLower(w.addr)
	sess := e.session(t, w)
	if sess.Session.Wallet != lower || sess.Session.SessionID == "" ||
		sess.Session.ExpiresAt != e.clock.Now().Add(24*time.Hour).Unix() {
		t.Fatalf("session = %+v", sess.Session)
	}
	var vs protocol.VerifySessionResponse
	if err := e.call(t, protocol.OpVerifySession, protocol.VerifySessionRequest{Token: sess.Token}, &vs); err != nil || vs.Session != sess.Session {
		t.Fatalf("verify session: %v %+v", err, vs)
	}

	var m protocol.MintOIDCResponse
	if err := e.call(t, protocol.OpMintOIDC, protocol.MintOIDCRequest{Token: sess.Token}, &m); err != nil {
		t.Fatal(err)
	}
	info := e.info(t)
	if m.Wallet != lower || m.SessionID != sess.Session.SessionID || m.Kid != info.SigningKid || m.Audience != "sts.amazonaws.com" {
		t.Fatalf("mint = %+v", m)
	}
	now := e.clock.Now().Unix()

	// Header exactly {"alg":"ES256","kid":…,"typ":"JWT"}.
	parts := strings.Split(m.JWT, ".")
	if len(parts) != 3 {
		t.Fatalf("jwt has %d parts", len(parts))
	}
	var header map[string]any
	decodeSegment(t, parts[0], &header)
	wantHeader := map[string]any{"alg": "ES256", "typ": "JWT", "kid": info.SigningKid}
	if !equalJSON(header, wantHeader) {
		t.Fatalf("header = %v, want %v", header, wantHeader)
	}
	// Signature is raw R||S, 64 bytes.
	if sig, err := base64.RawURLEncoding.DecodeString(parts[2]); err != nil || len(sig) != 64 {
		t.Fatalf("signature: %d bytes, %v", len(sig), err)
	}
	// Claims exactly as docs/design.md says: the shared/claims type, byte for byte.
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(claims.OIDC{
		Issuer: testIssuer, Subject: claims.SubjectPrefix + lower, Audience: "sts.amazonaws.com",
		IssuedAt: now, NotBefore: now - 60, ExpiresAt: now + 300, ID: m.JTI,
		Wallet: lower, Tags: claims.MintTags(lower, m.JTI),
	})
	if !bytes.Equal(payload, want) {
		t.Fatalf("claims = %s\nwant     %s", payload, want)
	}
	if m.SessionExpiresAt != sess.Session.ExpiresAt || m.ChainID != 1 {
		t.Fatalf("mint = %+v", m)
	}
	// The kid is the RFC 7638 thumbprint of the published key, and the published
	// key verifies the signature.
	if len(info.IssuerKeys) != 1 || info.IssuerKeys[0].Kid != info.IssuerKeys[0].Thumbprint() {
		t.Fatalf("issuer keys = %+v", info.IssuerKeys)
	}
	pub, err := info.IssuerKeys[0].PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jwt.Parse(m.JWT, func(*jwt.Token) (any, error) { return pub, nil },
		jwt.WithValidMethods([]string{"ES256"}), jwt.WithTimeFunc(e.clock.Now), jwt.WithAudience("sts.amazonaws.com"), jwt.WithIssuer(testIssuer)); err != nil {
		t.Fatalf("minted JWT does not verify with the published key: %v", err)
	}

	// jti is unique.
	var m2 protocol.MintOIDCResponse
	if err := e.call(t, protocol.OpMintOIDC, protocol.MintOIDCRequest{Token: sess.Token}, &m2); err != nil {
		t.Fatal(err)
	}
	if m2.JTI == m.JTI {
		t.Fatal("two mints share a jti")
	}
}

func decodeSegment(t *testing.T, seg string, v any) {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		t.Fatal(err)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(v); err != nil {
		t.Fatal(err)
	}
}

func equalJSON(a, b any) bool {
	ab, _ := json.Marshal(a)
	bb, _ := json.Marshal(b)
	var x, y any
	json.Unmarshal(ab, &x)
	json.Unmarshal(bb, &y)
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return bytes.Equal(xb, yb)
}

func TestSignInRejections(t *testing.T) {
	e := newEnv(t, nil)
	w, other := newWallet(t), newWallet(t)
	tests := []struct {
		name string
		req  func(nonce string) protocol.CreateSessionRequest
		want error
		msg  string
	}{
		{"wrong domain", func(n string) protocol.CreateSessionRequest {
			m := e.message(w, n)
			m.Domain = "evil.example.com"
			return signIn(w, m)
		}, protocol.ErrSignInRejected, "domain"},
		{"wrong port", func(n string) protocol.CreateSessionRequest {
			m := e.message(w, n)
			m.Domain = "broker.example.com:8443"
			return signIn(w, m)
		}, protocol.ErrSignInRejected, "domain"},
		{"wrong scheme", func(n string) protocol.CreateSessionRequest {
			m := e.message(w, n)
			m.Scheme = "http"
			return signIn(w, m)
		}, protocol.ErrSignInRejected, "scheme"},
		{"URI on another host", func(n string) protocol.CreateSessionRequest {
			m := e.message(w, n)
			m.URI = "https://evil.example.com/v1/session"
			return signIn(w, m)
		}, protocol.ErrSignInRejected, "URI"},
		{"URI with http", func(n string) protocol.CreateSessionRequest {
			m := e.message(w, n)
			m.URI = "http://broker.example.com/"
			return signIn(w, m)
		}, protocol.ErrSignInRejected, "URI"},
		{"URI escaping the issuer path", func(n string) protocol.CreateSessionRequest {
			m := e.message(w, n)
			m.URI = testIssuer + "/v1/../../elsewhere"
			return signIn(w, m)
		}, protocol.ErrSignInRejected, "dot segments"},
		{"expired within the clock skew", func(n string) protocol.CreateSessionRequest {
			m := e.message(w, n)
			m.ExpirationTime = e.clock.Now().Add(30 * time.Second)
			e.clock.Add(time.Minute) // CheckTime's skew lets it through; the session would be dead
			return signIn(w, m)
		}, protocol.ErrSignInRejected, "expired"},
		{"domain in another case", func(n string) protocol.CreateSessionRequest {
			m := e.message(w, n)
			m.Domain = "Broker.example.com"
			return signIn(w, m)
		}, protocol.ErrSignInRejected, "domain"},
		{"domain with userinfo", func(n string) protocol.CreateSessionRequest {
			m := e.message(w, n)
			m.Domain = "evil@broker.example.com"
			return signIn(w, m)
		}, protocol.ErrSignInRejected, "without userinfo"},
		{"domain percent-encoded", func(n string) protocol.CreateSessionRequest {
			m := e.message(w, n)
			m.Domain = "broker%2eexample.com"
			return signIn(w, m)
		}, protocol.ErrSignInRejected, "percent-encoding"},
		{"scheme in capitals", func(n string) protocol.CreateSessionRequest {
			m := e.message(w, n)
			m.Scheme = "HTTPS"
			return signIn(w, m)
		}, protocol.ErrSignInRejected, "scheme"},
		{"URI with userinfo", func(n string) protocol.CreateSessionRequest {
			m := e.message(w, n)
			m.URI = "https://evil@broker.example.com/v1/session"
			return signIn(w, m)
		}, protocol.ErrSignInRejected, "userinfo"},
		{"URI with a percent-encoded host", func(n string) protocol.CreateSessionRequest {
			m := e.message(w, n)
			m.URI = "https://broker%2eexample.com/v1/session"
			return signIn(w, m)
		}, protocol.ErrSignInRejected, "percent-encoded"},
		{"URI with a percent-encoded non-ASCII host", func(n string) protocol.CreateSessionRequest {
			m := e.message(w, n)
			m.URI = "https://br%C3%B6ker.example.com/v1/session"
			return signIn(w, m)
		}, protocol.ErrSignInRejected, "percent-encoded"},
		{"URI host in another case", func(n string) protocol.CreateSessionRequest {
			m := e.message(w, n)
			m.URI = "https://BROKER.example.com/v1/session"
			return signIn(w, m)
		}, protocol.ErrSignInRejected, "not under the API URL"},
		{"URI scheme in capitals", func(n string) protocol.CreateSessionRequest {
			m := e.message(w, n)
			m.URI = "HTTPS://broker.example.com/v1/session"
			return signIn(w, m)
		}, protocol.ErrSignInRejected, "not under the API URL"},
		{"URI with percent-encoded dot segments", func(n string) protocol.CreateSessionRequest {
			m := e.message(w, n)
			m.URI = testIssuer + "/v1/%2e%2e/%2E%2E/elsewhere"
			return signIn(w, m)
		}, protocol.ErrSignInRejected, "dot segments"},
		{"URI without an authority", func(n string) protocol.CreateSessionRequest {
			m := e.message(w, n)
			m.URI = "https:broker.example.com/v1/session"
			return signIn(w, m)
		}, protocol.ErrSignInRejected, "not under the API URL"},
		{"issued long before its nonce", func(n string) protocol.CreateSessionRequest {
			m := e.message(w, n)
			m.IssuedAt = e.clock.Now().Add(-ClockSkew - time.Second)
			return signIn(w, m)
		}, protocol.ErrSignInRejected, "before its nonce"},
		{"nonce not issued", func(string) protocol.CreateSessionRequest {
			return signIn(w, e.message(w, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"))
		}, protocol.ErrNonceRejected, "not issued"},
		{"nonce with a forged MAC", func(n string) protocol.CreateSessionRequest {
			return signIn(w, e.message(w, n[:NonceLength-1]+flipHex(n[NonceLength-1])))
		}, protocol.ErrNonceRejected, "not issued"},
		{"nonce in capitals", func(n string) protocol.CreateSessionRequest {
			return signIn(w, e.message(w, strings.ToUpper(n)))
		}, protocol.ErrNonceRejected, "not issued"},
		{"signature by another wallet", func(n string) protocol.CreateSessionRequest {
			m := e.message(w, n)
			text := m.String()
			return protocol.CreateSessionRequest{Message: text, Signature: siwe.Sign(other.key, []byte(text))}
		}, protocol.ErrSignInRejected, "not by the message's address"},
		{"signature over another text", func(n string) protocol.CreateSessionRequest {
			r := signIn(w, e.message(w, n))
			r.Message = strings.Replace(r.Message, "Sign in to AgentKeys.", "Sign in to AgentKeyz.", 1)
			return r
		}, protocol.ErrSignInRejected, ""},
		{"message expired", func(n string) protocol.CreateSessionRequest {
			m := e.message(w, n)
			m.IssuedAt = e.clock.Now().Add(-time.Hour)
			m.ExpirationTime = e.clock.Now().Add(-time.Minute)
			return signIn(w, m)
		}, protocol.ErrSignInRejected, "expired"},
		{"issued in the future", func(n string) protocol.CreateSessionRequest {
			m := e.message(w, n)
			m.IssuedAt = e.clock.Now().Add(10 * time.Minute)
			return signIn(w, m)
		}, protocol.ErrSignInRejected, "future"},
		{"not before in the future", func(n string) protocol.CreateSessionRequest {
			m := e.message(w, n)
			m.NotBefore = e.clock.Now().Add(10 * time.Minute)
			return signIn(w, m)
		}, protocol.ErrSignInRejected, "not yet valid"},
		{"malformed message", func(n string) protocol.CreateSessionRequest {
			r := signIn(w, e.message(w, n))
			r.Message = "hello\n" + r.Message
			return r
		}, protocol.ErrSignInRejected, "line 1"},
		{"short signature", func(n string) protocol.CreateSessionRequest {
			r := signIn(w, e.message(w, n))
			r.Signature = r.Signature[:64]
			return r
		}, protocol.ErrSignInRejected, "65 bytes"},
		{"v = 29", func(n string) protocol.CreateSessionRequest {
			r := signIn(w, e.message(w, n))
			r.Signature[64] = 29
			return r
		}, protocol.ErrSignInRejected, ""},
		{"oversize message", func(n string) protocol.CreateSessionRequest {
			r := signIn(w, e.message(w, n))
			r.Message = strings.Repeat("a", protocol.MaxSignInMessage+1)
			return r
		}, protocol.ErrBadRequest, "longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := e.call(t, protocol.OpCreateSession, tt.req(e.nonce(t)), nil)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("err = %v, want %v containing %q", err, tt.want, tt.msg)
			}
			// The enclave keeps serving: a good sign-in still works.
			e.session(t, w)
		})
	}
}

func flipHex(c byte) string {
	if c == '0' {
		return "1"
	}
	return "0"
}

func TestNonceSingleUseAndExpiry(t *testing.T) {
	e := newEnv(t, nil)
	w := newWallet(t)
	req := signIn(w, e.message(w, e.nonce(t)))
	if err := e.call(t, protocol.OpCreateSession, req, nil); err != nil {
		t.Fatal(err)
	}
	if err := e.call(t, protocol.OpCreateSession, req, nil); !errors.Is(err, protocol.ErrNonceRejected) {
		t.Fatalf("replayed sign-in: %v, want nonce_rejected", err)
	}

	// A nonce expires after the policy's nonce lifetime.
	n := e.nonce(t)
	e.clock.Add(5*time.Minute + time.Second)
	m := e.message(w, n)
	if err := e.call(t, protocol.OpCreateSession, signIn(w, m), nil); !errors.Is(err, protocol.ErrNonceRejected) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired nonce: %v", err)
	}

	// A restart (a new service from the same seed) invalidates outstanding nonces.
	n = e.nonce(t)
	e2 := newEnv(t, nil)
	e2.clock.t = e.clock.Now()
	if err := e2.call(t, protocol.OpCreateSession, signIn(w, e.message(w, n)), nil); !errors.Is(err, protocol.ErrNonceRejected) {
		t.Fatalf("nonce from before the restart: %v", err)
	}
}

func TestConcurrentReplayYieldsOneSession(t *testing.T) {
	e := newEnv(t, nil)
	w := newWallet(t)
	req := signIn(w, e.message(w, e.nonce(t)))
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if e.call(t, protocol.OpCreateSession, req, nil) == nil {
				mu.Lock()
				ok++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if ok != 1 {
		t.Fatalf("%d sessions from one nonce, want 1", ok)
	}
}

func TestSessionLifetimeFollowsMessageExpiration(t *testing.T) {
	e := newEnv(t, nil)
	w := newWallet(t)
	m := e.message(w, e.nonce(t))
	m.ExpirationTime = e.clock.Now().Add(time.Hour)
	var r protocol.CreateSessionResponse
	if err := e.call(t, protocol.OpCreateSession, signIn(w, m), &r); err != nil {
		t.Fatal(err)
	}
	if r.Session.ExpiresAt != m.ExpirationTime.Unix() {
		t.Fatalf("session expires at %d, want the message's %d", r.Session.ExpiresAt, m.ExpirationTime.Unix())
	}
}

func TestSessionTokenRejections(t *testing.T) {
	e := newEnv(t, nil)
	w := newWallet(t)
	good := e.session(t, w).Token
	var oidc protocol.MintOIDCResponse
	if err := e.call(t, protocol.OpMintOIDC, protocol.MintOIDCRequest{Token: good}, &oidc); err != nil {
		t.Fatal(err)
	}
	now := e.clock.Now()
	claims := jwt.MapClaims{
		"iss": testIssuer, "aud": SessionAudience, "sub": strings.ToLower(w.addr), "sid": "x",
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "chain_id": 1,
	}
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sign := func(m jwt.SigningMethod, key any, c jwt.MapClaims, kid string) string {
		if m == jwt.SigningMethodES256 {
			// The enclave's own encoding (low s), so that each case below
			// differs from an accepted token in one thing only.
			s, err := signES256(key.(*ecdsa.PrivateKey), kid, c)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		tok := jwt.NewWithClaims(m, c)
		tok.Header["kid"] = kid
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// The control: these claims, so signed, are accepted.
	if sess, err := e.svc.VerifySession(sign(jwt.SigningMethodES256, e.svc.sessionKey, claims, e.svc.sessionKid)); err != nil || sess.ChainID != 1 {
		t.Fatalf("control token: %v %+v", err, sess)
	}
	with := func(k string, v any) jwt.MapClaims {
		c := jwt.MapClaims{}
		for a, b := range claims {
			c[a] = b
		}
		c[k] = v
		return c
	}
	pubDER := elliptic.MarshalCompressed(elliptic.P256(), e.svc.sessionKey.X, e.svc.sessionKey.Y)
	parts := strings.Split(good, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString(bytes.Replace(payload, []byte(`"sub":"0x`), []byte(`"sub":"0X`), 1)) + "." + parts[2]

	tests := map[string]string{
		"forged by another key": sign(jwt.SigningMethodES256, otherKey, claims, e.svc.sessionKid),
		"alg none":              sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims, e.svc.sessionKid),
		"alg HS256 with the public key as secret": sign(jwt.SigningMethodHS256, pubDER, claims, e.svc.sessionKid),
		"wrong issuer":      sign(jwt.SigningMethodES256, e.svc.sessionKey, with("iss", "https://evil.example.com"), e.svc.sessionKid),
		"wrong audience":    sign(jwt.SigningMethodES256, e.svc.sessionKey, with("aud", "sts.amazonaws.com"), e.svc.sessionKid),
		"no expiry":         sign(jwt.SigningMethodES256, e.svc.sessionKey, with("exp", nil), e.svc.sessionKid),
		"expired":           sign(jwt.SigningMethodES256, e.svc.sessionKey, with("exp", now.Add(-time.Second).Unix()), e.svc.sessionKid),
		"unknown kid":       sign(jwt.SigningMethodES256, e.svc.sessionKey, claims, "other"),
		"bad wallet":        sign(jwt.SigningMethodES256, e.svc.sessionKey, with("sub", "bob"), e.svc.sessionKid),
		"no session id":     sign(jwt.SigningMethodES256, e.svc.sessionKey, with("sid", ""), e.svc.sessionKid),
		"no chain id":       sign(jwt.SigningMethodES256, e.svc.sessionKey, with("chain_id", nil), e.svc.sessionKid),
		"chain id a string": sign(jwt.SigningMethodES256, e.svc.sessionKey, with("chain_id", "1"), e.svc.sessionKid),
		"an OIDC JWT":       oidc.JWT,
		"tampered payload":  tampered,
		"garbage":           "not.a.jwt",
		"empty":             "",
		"oversize":          strings.Repeat("a", protocol.MaxSessionToken+1),
	}
	for name, tok := range tests {
		t.Run(name, func(t *testing.T) {
			err := e.call(t, protocol.OpMintOIDC, protocol.MintOIDCRequest{Token: tok}, nil)
			if !errors.Is(err, protocol.ErrUnauthorized) {
				t.Fatalf("mint: %v, want unauthorized", err)
			}
			err = e.call(t, protocol.OpVerifySession, protocol.VerifySessionRequest{Token: tok}, nil)
			if !errors.Is(err, protocol.ErrUnauthorized) {
				t.Fatalf("verify: %v, want unauthorized", err)
			}
		})
	}
	// The good token still works, then expires with the clock.
	if err := e.call(t, protocol.OpMintOIDC, protocol.MintOIDCRequest{Token: good}, nil); err != nil {
		t.Fatal(err)
	}
	e.clock.Add(24*time.Hour + time.Second)
	if err := e.call(t, protocol.OpMintOIDC, protocol.MintOIDCRequest{Token: good}, nil); !errors.Is(err, protocol.ErrUnauthorized) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired session: %v", err)
	}
}

func TestMintPolicy(t *testing.T) {
	e := newEnv(t, func(p *policy.Policy) { p.Audiences = []string{"sts.amazonaws.com", "example-aud"} })
	sess := e.session(t, newWallet(t))
	tok := sess.Token
	tests := []struct {
		ttl     int64
		aud     string
		wantTTL int64
		wantAud string
		err     string
	}{
		{0, "", 300, "sts.amazonaws.com", ""},
		{60, "", 60, "sts.amazonaws.com", ""},
		{3600, "example-aud", 3600, "example-aud", ""},
		{59, "", 0, "", "between 60 and 3600"},
		{3601, "", 0, "", "between 60 and 3600"},
		{-5, "", 0, "", "between 60 and 3600"},
		{0, "evil", 0, "", "sts.amazonaws.com, example-aud"},
		{0, strings.Repeat("a", 300), 0, "", "longer than"},
	}
	for _, tt := range tests {
		var r protocol.MintOIDCResponse
		err := e.call(t, protocol.OpMintOIDC, protocol.MintOIDCRequest{Token: tok, TTLSeconds: tt.ttl, Audience: tt.aud}, &r)
		if tt.err != "" {
			if !errors.Is(err, protocol.ErrPolicy) || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ttl %d aud %q: err = %v, want policy_violation with %q", tt.ttl, tt.aud, err, tt.err)
			}
			// The refusal names the verified wallet, for the audit log.
			var pe *protocol.Error
			if !errors.As(err, &pe) || pe.Wallet != sess.Session.Wallet {
				t.Errorf("ttl %d aud %q: refusal wallet %+v", tt.ttl, tt.aud, pe)
			}
			continue
		}
		if err != nil || r.ExpiresAt-r.IssuedAt != tt.wantTTL || r.Audience != tt.wantAud {
			t.Errorf("ttl %d aud %q: %v %+v", tt.ttl, tt.aud, err, r)
		}
	}
}

func TestHostAssertedWallet(t *testing.T) {
	const addr = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
	off := newEnv(t, nil)
	err := off.call(t, protocol.OpMintOIDC, protocol.MintOIDCRequest{HostAssertedWallet: addr}, nil)
	if !errors.Is(err, protocol.ErrUnauthorized) || !strings.Contains(err.Error(), "does not allow") {
		t.Fatalf("policy off: %v", err)
	}
	if err := off.call(t, protocol.OpMintOIDC, protocol.MintOIDCRequest{}, nil); !errors.Is(err, protocol.ErrUnauthorized) {
		t.Fatalf("no credential at all: %v", err)
	}

	on := newEnv(t, func(p *policy.Policy) { p.AllowHostAssertedWallet = true })
	if !on.info(t).Policy.AllowHostAssertedWallet {
		t.Fatal("Info does not report allow_host_asserted_wallet")
	}
	var r protocol.MintOIDCResponse
	if err := on.call(t, protocol.OpMintOIDC, protocol.MintOIDCRequest{HostAssertedWallet: addr}, &r); err != nil {
		t.Fatal(err)
	}
	if !r.HostAssertedWallet || r.Wallet != strings.ToLower(addr) {
		t.Fatalf("mint = %+v", r)
	}
	var c map[string]any
	decodeSegment(t, strings.Split(r.JWT, ".")[1], &c)
	if c[claims.HostAssertedWallet] != true {
		t.Fatalf("JWT does not mark the host-asserted wallet: %v", c)
	}
	for _, bad := range []string{"0x5aaeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "bob", "0x1234"} {
		if err := on.call(t, protocol.OpMintOIDC, protocol.MintOIDCRequest{HostAssertedWallet: bad}, nil); !errors.Is(err, protocol.ErrBadRequest) {
			t.Errorf("wallet %q: %v", bad, err)
		}
	}
	tok := on.session(t, newWallet(t)).Token
	if err := on.call(t, protocol.OpMintOIDC, protocol.MintOIDCRequest{Token: tok, HostAssertedWallet: addr}, nil); !errors.Is(err, protocol.ErrBadRequest) {
		t.Fatalf("both: %v", err)
	}
}

func TestAttest(t *testing.T) {
	e := newEnv(t, nil)
	nonce := []byte("fresh nonce 123")
	var r protocol.AttestResponse
	if err := e.call(t, protocol.OpAttest, protocol.AttestRequest{Nonce: nonce}, &r); err != nil {
		t.Fatal(err)
	}
	res, err := nitrite.Verify(r.Document, nitrite.VerifyOptions{Roots: e.att.RootPool(), CurrentTime: e.clock.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(res.Document.Nonce, nonce) {
		t.Fatal("nonce not bound")
	}
	sum := sha256.Sum256(r.Manifest)
	if !bytes.Equal(res.Document.UserData, sum[:]) {
		t.Fatal("user_data is not the manifest's SHA-256")
	}
	m, err := manifest.Parse(r.Manifest)
	if err != nil {
		t.Fatal(err)
	}
	info := e.info(t)
	if !bytes.Equal(r.Manifest, info.Manifest) {
		t.Fatal("Info and Attest report different manifests")
	}
	if m.Issuer != testIssuer || m.Mode != "simulated" || m.Signer().Kid != info.SigningKid ||
		m.CheckpointVerifierKey != info.CheckpointVerifierKey || m.PolicyDigest != info.PolicyDigest ||
		len(m.IssuerKeys) != 1 || m.IssuerKeys[0].JWK != info.IssuerKeys[0] || m.IssuerOrigin != manifest.OriginHost {
		t.Fatalf("manifest = %+v", m)
	}
	if !bytes.Equal(res.Document.PCRs[0], info.PCRs[0]) {
		t.Fatal("Info PCR0 differs from the document's")
	}
	// The AWS root does not verify a simulated document.
	if _, err := nitrite.Verify(r.Document, nitrite.VerifyOptions{CurrentTime: e.clock.Now()}); err == nil {
		t.Fatal("simulated document verified against the AWS root")
	}
	for _, req := range []protocol.AttestRequest{{Nonce: make([]byte, 65)}, {Nonce: make([]byte, 7)}, {}} {
		if err := e.call(t, protocol.OpAttest, req, nil); !errors.Is(err, protocol.ErrBadRequest) {
			t.Errorf("oversize attest input: %v", err)
		}
	}
}

func TestInfo(t *testing.T) {
	e := newEnv(t, func(p *policy.Policy) {
		p.IssuerKeys, p.SigningKey = []string{"oidc/issuer/v2", "oidc/issuer/v1"}, "oidc/issuer/v2"
	})
	info := e.info(t)
	if info.Mode != "simulated" || info.ProtocolVersion != protocol.Version || info.Policy.Issuer != testIssuer ||
		info.PolicyDigest != info.Policy.Digest() || len(info.PCRs) != 16 {
		t.Fatalf("info = %+v", info)
	}
	// Rotation: both keys published, signing_key signs.
	if len(info.IssuerKeys) != 2 || info.SigningKid != info.IssuerKeys[0].Kid || info.IssuerKeys[0].Kid == info.IssuerKeys[1].Kid {
		t.Fatalf("issuer keys = %+v", info.IssuerKeys)
	}
	// The v1 key is the same key a v1-only enclave publishes.
	v1 := newEnv(t, nil).info(t).IssuerKeys[0]
	if info.IssuerKeys[1] != v1 {
		t.Fatal("oidc/issuer/v1 differs between enclaves with the same seed")
	}
	if !strings.HasPrefix(info.CheckpointVerifierKey, "broker.example.com/audit+") {
		t.Fatalf("checkpoint key = %s", info.CheckpointVerifierKey)
	}
	var _ jwk.Key = info.IssuerKeys[0]
}

func TestHandleRejectsBadBodies(t *testing.T) {
	e := newEnv(t, nil)
	for _, op := range []protocol.Op{protocol.OpInfo, protocol.OpAttest, protocol.OpSessionNonce, protocol.OpCreateSession, protocol.OpVerifySession, protocol.OpMintOIDC} {
		if err := e.call(t, op, map[string]int{"unexpected": 1}, nil); !errors.Is(err, protocol.ErrBadRequest) {
			t.Errorf("%s with an unknown field: %v", op, err)
		}
		if err := e.call(t, op, []int{1, 2}, nil); !errors.Is(err, protocol.ErrBadRequest) {
			t.Errorf("%s with an array body: %v", op, err)
		}
	}
	if err := e.call(t, "steal_keys", struct{}{}, nil); !errors.Is(err, protocol.ErrUnknownOp) {
		t.Errorf("unknown op: %v", err)
	}
}

func FuzzHandle(f *testing.F) {
	p := policy.Default(testIssuer)
	att, err := attester.NewSimulated(attester.SimulatedOptions{StateDir: f.TempDir()})
	if err != nil {
		f.Fatal(err)
	}
	svc, err := New(Config{Policy: p, Seed: testSeed, Attester: att})
	if err != nil {
		f.Fatal(err)
	}
	ops := []protocol.Op{protocol.OpInfo, protocol.OpAttest, protocol.OpSessionNonce, protocol.OpCreateSession, protocol.OpVerifySession, protocol.OpMintOIDC,
		protocol.OpAuditAppend, protocol.OpAuditResume}
	for i := range ops {
		f.Add(uint8(i), []byte{0xa0})
	}
	body, _ := protocol.Marshal(protocol.CreateSessionRequest{Message: "x", Signature: make([]byte, 65)})
	f.Add(uint8(3), body)
	body, _ = protocol.Marshal(protocol.MintOIDCRequest{Token: "a.b.c", TTLSeconds: 60})
	f.Add(uint8(5), body)
	body, _ = protocol.Marshal(protocol.AuditAppendRequest{Entry: protocol.AuditHostEntry{Kind: "aws_creds", Outcome: "ok", Wallet: "unknown", JTI: "3"}, LogSize: 1})
	f.Add(uint8(6), body)
	body, _ = protocol.Marshal(protocol.AuditResumeRequest{
		Checkpoint: []byte("broker.example.com/audit\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n— broker.example.com/audit AAAA\n"),
		Hashes:     make([]byte, 32)})
	f.Add(uint8(7), body)
	body, _ = protocol.Marshal(protocol.AuditResumeRequest{Log: "host-a"})
	f.Add(uint8(7), body)
	f.Fuzz(func(t *testing.T, op uint8, body []byte) {
		out, err := svc.Handle(context.Background(), ops[int(op)%len(ops)], body)
		if err == nil && ops[int(op)%len(ops)] == protocol.OpMintOIDC {
			t.Fatalf("minted from fuzz input: %+v", out)
		}
	})
}

func FuzzCreateSession(f *testing.F) {
	p := policy.Default(testIssuer)
	att, err := attester.NewSimulated(attester.SimulatedOptions{StateDir: f.TempDir()})
	if err != nil {
		f.Fatal(err)
	}
	svc, err := New(Config{Policy: p, Seed: testSeed, Attester: att})
	if err != nil {
		f.Fatal(err)
	}
	k, _ := secp256k1.GeneratePrivateKey()
	addr, _ := siwe.ChecksumAddress(siwe.AddressOf(k.PubKey()))
	m := &siwe.Message{Domain: "broker.example.com", Address: addr, URI: testIssuer, Version: "1", ChainID: 1, Nonce: "abcdefgh12345678", IssuedAt: time.Now()}
	text := m.String()
	f.Add(text, siwe.Sign(k, []byte(text)))
	f.Fuzz(func(t *testing.T, msg string, sig []byte) {
		// No nonce was issued, so nothing may ever succeed.
		if _, err := svc.CreateSession(protocol.CreateSessionRequest{Message: msg, Signature: sig}); err == nil {
			t.Fatal("session created without an issued nonce")
		}
	})
}

func FuzzVerifySession(f *testing.F) {
	p := policy.Default(testIssuer)
	att, err := attester.NewSimulated(attester.SimulatedOptions{StateDir: f.TempDir()})
	if err != nil {
		f.Fatal(err)
	}
	svc, err := New(Config{Policy: p, Seed: testSeed, Attester: att})
	if err != nil {
		f.Fatal(err)
	}
	// One real session. A token VerifySession accepts must be in the one
	// encoding the enclave writes (the fuzzing workers are other processes,
	// with other sessions under the same seed, so "equals sess.Token" cannot
	// be the test): every segment re-encodes to itself and s <= n/2.
	k, _ := secp256k1.GeneratePrivateKey()
	addr, _ := siwe.ChecksumAddress(siwe.AddressOf(k.PubKey()))
	nonce, err := svc.SessionNonce()
	if err != nil {
		f.Fatal(err)
	}
	m := &siwe.Message{Domain: "broker.example.com", Address: addr, URI: testIssuer, Version: "1", ChainID: 1, Nonce: nonce.Nonce, IssuedAt: time.Now()}
	text := m.String()
	sess, err := svc.CreateSession(protocol.CreateSessionRequest{Message: text, Signature: siwe.Sign(k, []byte(text))})
	if err != nil {
		f.Fatal(err)
	}
	f.Add("eyJhbGciOiJFUzI1NiJ9.e30.AAAA")
	f.Add("a.b.c")
	f.Add(sess.Token)
	f.Add(sess.Token[:len(sess.Token)-1] + "B")
	f.Fuzz(func(t *testing.T, tok string) {
		if _, err := svc.VerifySession(tok); err != nil || tok == sess.Token {
			return
		}
		parts := strings.Split(tok, ".")
		for _, p := range parts {
			if b, err := base64.RawURLEncoding.DecodeString(p); err != nil || base64.RawURLEncoding.EncodeToString(b) != p {
				t.Fatalf("accepted a non-canonical token: %q", tok)
			}
		}
		sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
		if len(sig) != 64 || new(big.Int).SetBytes(sig[32:]).Cmp(new(big.Int).Rsh(elliptic.P256().Params().N, 1)) > 0 {
			t.Fatalf("accepted a high-s token: %q", tok)
		}
	})
}

func BenchmarkMintOIDC(b *testing.B) {
	att, err := attester.NewSimulated(attester.SimulatedOptions{StateDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	svc, err := New(Config{Policy: policy.Default(testIssuer), Seed: testSeed, Attester: att})
	if err != nil {
		b.Fatal(err)
	}
	svc.policy.AllowHostAssertedWallet = true // skip the session check: this measures signing
	if _, err := svc.AuditResume(protocol.AuditResumeRequest{}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		m, err := svc.MintOIDC(protocol.MintOIDCRequest{HostAssertedWallet: "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed"})
		if err != nil {
			b.Fatal(err)
		}
		svc.audit.Ack(m.Log.Index + 1) // as the host's store would
	}
}
