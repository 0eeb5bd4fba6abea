package service

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/agentkeys/broker/shared/claims"
	"github.com/agentkeys/broker/shared/policy"
	"github.com/agentkeys/broker/shared/protocol"
)

// TestSignES256LowS: every signature the enclave writes has s ≤ n/2 and
// passes the canonical check. Go's ecdsa gives high s about half the time,
// so without the normalisation this fails with certainty.
func TestSignES256LowS(t *testing.T) {
	e := newEnv(t, nil)
	for i := range 64 {
		tok, err := signES256(e.svc.sessionKey, e.svc.sessionKid, map[string]int{"i": i})
		if err != nil {
			t.Fatal(err)
		}
		sig, _ := base64.RawURLEncoding.DecodeString(tok[strings.LastIndexByte(tok, '.')+1:])
		half := new(big.Int).Rsh(e.svc.sessionKey.Curve.Params().N, 1)
		if len(sig) != 64 || new(big.Int).SetBytes(sig[32:]).Cmp(half) > 0 {
			t.Fatalf("token %d: signature of %d bytes, or s > n/2", i, len(sig))
		}
		if err := checkCanonical(tok); err != nil {
			t.Fatalf("token %d: %v", i, err)
		}
		if !verifiesWith(t, &e.svc.sessionKey.PublicKey, tok) {
			t.Fatalf("token %d does not verify", i)
		}
	}
}

// verifiesWith checks a compact ES256 JWS with crypto/ecdsa alone, which
// accepts high s: it shows that a refused variant is a valid signature.
func verifiesWith(t *testing.T, pub *ecdsa.PublicKey, tok string) bool {
	t.Helper()
	i := strings.LastIndexByte(tok, '.')
	sig, err := base64.RawURLEncoding.DecodeString(tok[i+1:])
	if err != nil || len(sig) != 64 {
		t.Fatalf("signature: %v", err)
	}
	digest := sha256.Sum256([]byte(tok[:i]))
	return ecdsa.Verify(pub, digest[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:]))
}

// TestSessionTokenOneEncoding: a session has exactly one bearer string. The
// same signature with s replaced by n−s, or any segment re-spelt in base64,
// is refused, although each is a valid signature over the same claims.
func TestSessionTokenOneEncoding(t *testing.T) {
	e := newEnv(t, nil)
	good := e.session(t, newWallet(t)).Token
	parts := strings.Split(good, ".")
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	n := e.svc.sessionKey.Curve.Params().N
	highS := new(big.Int).Sub(n, new(big.Int).SetBytes(sig[32:]))
	var flipped [64]byte
	copy(flipped[:32], sig[:32])
	highS.FillBytes(flipped[32:])
	highTok := parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(flipped[:])
	if !verifiesWith(t, &e.svc.sessionKey.PublicKey, highTok) {
		t.Fatal("the high-s variant is not a valid signature; the test proves nothing")
	}

	// 64 bytes take 86 base64 digits, whose last carries 4 unused bits: set
	// one, and a lenient decoder reads the same signature.
	last := parts[2][len(parts[2])-1]
	alphabet := "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	trailing := parts[0] + "." + parts[1] + "." + parts[2][:len(parts[2])-1] + string(alphabet[strings.IndexByte(alphabet, last)|1])
	if b, err := base64.RawURLEncoding.DecodeString(strings.Split(trailing, ".")[2]); err != nil || !bytes.Equal(b, sig) {
		t.Fatal("the re-spelt signature does not decode to the same bytes; the test proves nothing")
	}

	tests := map[string]string{
		"s replaced by n-s":         highTok,
		"nonzero trailing bits":     trailing,
		"padding":                   good + "==",
		"padded payload":            parts[0] + "." + parts[1] + "=." + parts[2],
		"line break in the payload": parts[0] + "." + parts[1][:10] + "\n" + parts[1][10:] + "." + parts[2],
		"standard base64 alphabet":  strings.NewReplacer("-", "+", "_", "/").Replace(good),
		"four segments":             good + ".x",
		"signature of 65 bytes":     parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(append(sig, 0)),
	}
	for name, tok := range tests {
		t.Run(name, func(t *testing.T) {
			if tok == good {
				t.Skip("the variant equals the token (no '-' or '_' in it)")
			}
			if _, err := e.svc.VerifySession(tok); !errors.Is(err, protocol.ErrUnauthorized) {
				t.Fatalf("verify: %v, want unauthorized", err)
			}
		})
	}
	if _, err := e.svc.VerifySession(good); err != nil {
		t.Fatal(err)
	}
}

// TestChainIDs: the policy's chain_ids allowlist is enforced at sign-in and
// again on every use of a session; the chain id travels in the session token
// and comes back in Session and MintOIDCResponse.
func TestChainIDs(t *testing.T) {
	e := newEnv(t, func(p *policy.Policy) { p.ChainIDs = []uint64{10, 8453} })
	w := newWallet(t)
	m := e.message(w, e.nonce(t))
	err := e.call(t, protocol.OpCreateSession, signIn(w, m), nil)
	if !errors.Is(err, protocol.ErrSignInRejected) || !strings.Contains(err.Error(), "chain id 1 is not allowed") || !strings.Contains(err.Error(), "10, 8453") {
		t.Fatalf("chain 1: %v", err)
	}
	m.ChainID = 8453 // the same nonce: a refusal does not consume it
	var r protocol.CreateSessionResponse
	if err := e.call(t, protocol.OpCreateSession, signIn(w, m), &r); err != nil {
		t.Fatal(err)
	}
	if r.Session.ChainID != 8453 {
		t.Fatalf("session = %+v", r.Session)
	}
	var c map[string]any
	decodeSegment(t, strings.Split(r.Token, ".")[1], &c)
	if c["chain_id"] != json.Number("8453") {
		t.Fatalf("session claims = %v", c)
	}
	var vs protocol.VerifySessionResponse
	if err := e.call(t, protocol.OpVerifySession, protocol.VerifySessionRequest{Token: r.Token}, &vs); err != nil || vs.Session != r.Session {
		t.Fatalf("verify: %v %+v", err, vs)
	}
	var mint protocol.MintOIDCResponse
	if err := e.call(t, protocol.OpMintOIDC, protocol.MintOIDCRequest{Token: r.Token}, &mint); err != nil || mint.ChainID != 8453 {
		t.Fatalf("mint: %v %+v", err, mint)
	}

	// An enclave with the same seed whose policy no longer allows the chain
	// refuses the session.
	narrowed := newEnv(t, func(p *policy.Policy) { p.ChainIDs = []uint64{10} })
	narrowed.clock.t = e.clock.Now()
	if _, err := narrowed.svc.VerifySession(r.Token); !errors.Is(err, protocol.ErrUnauthorized) || !strings.Contains(err.Error(), "no longer allowed") {
		t.Fatalf("narrowed policy: %v", err)
	}
	// No allowlist: any chain.
	open := newEnv(t, nil)
	m2 := open.message(w, open.nonce(t))
	m2.ChainID = 31337
	if err := open.call(t, protocol.OpCreateSession, signIn(w, m2), &r); err != nil || r.Session.ChainID != 31337 {
		t.Fatalf("no allowlist: %v %+v", err, r.Session)
	}
}

// TestMintBoundedBySession: a minted JWT never outlives the session behind
// it, and a session too close to its end is refused, naming the time left.
func TestMintBoundedBySession(t *testing.T) {
	e := newEnv(t, nil)
	w := newWallet(t)
	m := e.message(w, e.nonce(t))
	m.ExpirationTime = e.clock.Now().Add(time.Hour) // the sign-in's own end
	var sess protocol.CreateSessionResponse
	if err := e.call(t, protocol.OpCreateSession, signIn(w, m), &sess); err != nil {
		t.Fatal(err)
	}
	sessExp := m.ExpirationTime.Unix()
	if sess.Session.ExpiresAt != sessExp {
		t.Fatalf("session expires at %d, want the message's %d", sess.Session.ExpiresAt, sessExp)
	}

	mint := func(ttl int64) (protocol.MintOIDCResponse, error) {
		var r protocol.MintOIDCResponse
		err := e.call(t, protocol.OpMintOIDC, protocol.MintOIDCRequest{Token: sess.Token, TTLSeconds: ttl}, &r)
		return r, err
	}
	// Plenty of time left: the TTL asked for.
	r, err := mint(600)
	if err != nil || r.ExpiresAt != e.clock.Now().Unix()+600 || r.SessionExpiresAt != sessExp || r.ChainID != 1 {
		t.Fatalf("mint with an hour left: %v %+v", err, r)
	}
	// 100 s left: ttl 3600 and the default 300 are both cut to the session's end.
	e.clock.Add(time.Hour - 100*time.Second)
	for _, ttl := range []int64{3600, 0} {
		r, err = mint(ttl)
		if err != nil || r.ExpiresAt != sessExp || r.IssuedAt != sessExp-100 || r.SessionExpiresAt != sessExp {
			t.Fatalf("ttl %d with 100 s left: %v %+v", ttl, err, r)
		}
		var c claims.OIDC
		decodeSegment(t, strings.Split(r.JWT, ".")[1], &c)
		if c.ExpiresAt != sessExp {
			t.Fatalf("JWT exp = %d, want the session's %d", c.ExpiresAt, sessExp)
		}
	}
	// Still refused outside the policy's TTL bounds, whatever is left.
	if _, err := mint(3601); !errors.Is(err, protocol.ErrPolicy) || !strings.Contains(err.Error(), "between 60 and 3600") {
		t.Fatalf("ttl 3601: %v", err)
	}
	// 50 s left, less than jwt_ttl_min_seconds (60): refused, saying so.
	e.clock.Add(50 * time.Second)
	_, err = mint(0)
	var pe *protocol.Error
	if !errors.As(err, &pe) || pe.Code != protocol.CodePolicy || !strings.Contains(err.Error(), "50 s left") ||
		!strings.Contains(err.Error(), "sign in again") || pe.Wallet != sess.Session.Wallet {
		t.Fatalf("50 s left: %v", err)
	}
	// 60 s left is enough, exactly.
	e.clock.Add(-10 * time.Second)
	if r, err := mint(0); err != nil || r.ExpiresAt-r.IssuedAt != 60 {
		t.Fatalf("60 s left: %v %+v", err, r)
	}
}

// TestMintHostAssertedHasNoSession: nothing bounds a host-asserted JWT but the
// policy, and the response says there is no session.
func TestMintHostAssertedHasNoSession(t *testing.T) {
	e := newEnv(t, func(p *policy.Policy) { p.AllowHostAssertedWallet = true })
	var r protocol.MintOIDCResponse
	if err := e.call(t, protocol.OpMintOIDC, protocol.MintOIDCRequest{HostAssertedWallet: "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed", TTLSeconds: 3600}, &r); err != nil {
		t.Fatal(err)
	}
	if r.SessionExpiresAt != 0 || r.ChainID != 0 || r.ExpiresAt-r.IssuedAt != 3600 {
		t.Fatalf("mint = %+v", r)
	}
}

// TestInfoReportsAWSDurations: the AWS credential bounds reach the host
// through Info's policy.
func TestInfoReportsAWSDurations(t *testing.T) {
	e := newEnv(t, func(p *policy.Policy) {
		p.AWSDurationDefault, p.AWSDurationMin, p.AWSDurationMax = 1800, 1200, 7200
	})
	p := e.info(t).Policy
	if p.AWSDurationDefault != 1800 || p.AWSDurationMin != 1200 || p.AWSDurationMax != 7200 {
		t.Fatalf("info policy = %+v", p)
	}
	if d, err := p.AWSDuration(0); err != nil || d != 30*time.Minute {
		t.Fatalf("AWSDuration(0) = %v, %v", d, err)
	}
}
