package service

import (
	"crypto/rand"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/agentkeys/broker/enclave/attester"
	"github.com/agentkeys/broker/shared/policy"
	"github.com/agentkeys/broker/shared/protocol"
)

// TestNonceFormat: a nonce is 80 lowercase hex digits that an EIP-4361
// message accepts, carries its issue time, and expires nonce_lifetime later.
func TestNonceFormat(t *testing.T) {
	e := newEnv(t, nil)
	var r protocol.SessionNonceResponse
	if err := e.call(t, protocol.OpSessionNonce, protocol.SessionNonceRequest{}, &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Nonce) != NonceLength || strings.Trim(r.Nonce, "0123456789abcdef") != "" {
		t.Fatalf("nonce %q is not %d lowercase hex digits", r.Nonce, NonceLength)
	}
	if err := e.message(newWallet(t), r.Nonce).Validate(); err != nil {
		t.Fatalf("an EIP-4361 message refuses the nonce: %v", err)
	}
	issued, _, err := e.svc.nonces.decode(r.Nonce)
	if err != nil || !issued.Equal(e.clock.Now()) || r.ExpiresAt != e.clock.Now().Unix()+300 {
		t.Fatalf("decode = %v, %v; expires_at %d", issued, err, r.ExpiresAt)
	}
	if e.nonce(t) == r.Nonce {
		t.Fatal("two nonces are equal")
	}
}

// TestNonceIssueStoresNothing: issuing nonces costs no memory; only a sign-in
// adds a used nonce, and it is forgotten once its nonce would have expired.
func TestNonceIssueStoresNothing(t *testing.T) {
	e := newEnv(t, nil)
	for range 1000 {
		if _, err := e.svc.SessionNonce(); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.svc.nonces.usedCount(); n != 0 {
		t.Fatalf("issuing nonces stored %d entries", n)
	}
	w := newWallet(t)
	e.session(t, w)
	e.session(t, w)
	if n := e.svc.nonces.usedCount(); n != 2 {
		t.Fatalf("%d used nonces after two sign-ins, want 2", n)
	}
	// Past the lifetime of those nonces, the next sign-in prunes them.
	e.clock.Add(5 * time.Minute)
	e.session(t, w)
	if n := e.svc.nonces.usedCount(); n != 1 {
		t.Fatalf("%d used nonces after expiry and one sign-in, want 1", n)
	}
}

// TestNonceReuseMessage: a replay names the reason.
func TestNonceReuseMessage(t *testing.T) {
	e := newEnv(t, nil)
	w := newWallet(t)
	n := e.nonce(t)
	if err := e.call(t, protocol.OpCreateSession, signIn(w, e.message(w, n)), nil); err != nil {
		t.Fatal(err)
	}
	// Another message, properly signed, with the used nonce.
	m := e.message(w, n)
	m.Statement = "Again."
	if err := e.call(t, protocol.OpCreateSession, signIn(w, m), nil); !errors.Is(err, protocol.ErrNonceRejected) || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("reused nonce: %v", err)
	}
}

// TestNonceFromTheFuture: if the enclave's clock goes back, a nonce it issued
// "later" is refused rather than living past its lifetime.
func TestNonceFromTheFuture(t *testing.T) {
	e := newEnv(t, nil)
	w := newWallet(t)
	n := e.nonce(t)
	m := e.message(w, n)
	e.clock.Add(-10 * time.Minute)
	m.IssuedAt = e.clock.Now()
	if err := e.call(t, protocol.OpCreateSession, signIn(w, m), nil); !errors.Is(err, protocol.ErrNonceRejected) || !strings.Contains(err.Error(), "future") {
		t.Fatalf("nonce from the future: %v", err)
	}
}

// TestNonceKeyFromAttester: the MAC key comes from the attester's randomness;
// two services from one seed accept only their own nonces.
func TestNonceKeyFromAttester(t *testing.T) {
	if _, err := newNonces(strings.NewReader("short"), time.Minute); err == nil {
		t.Fatal("a nonce key from 5 bytes of randomness")
	}
	a, b := newEnv(t, nil), newEnv(t, nil)
	if a.svc.nonces.key == b.svc.nonces.key {
		t.Fatal("two enclaves share a nonce key")
	}
	if _, _, err := b.svc.nonces.decode(a.nonce(t)); !errors.Is(err, protocol.ErrNonceRejected) {
		t.Fatalf("another enclave's nonce: %v", err)
	}
}

// FuzzNonceDecode feeds the nonce decoder hostile text: it must not panic and
// must accept nothing it did not issue. A nonce it issued, changed in any one
// byte, must be refused.
func FuzzNonceDecode(f *testing.F) {
	att, err := attester.NewSimulated(attester.SimulatedOptions{StateDir: f.TempDir()})
	if err != nil {
		f.Fatal(err)
	}
	svc, err := New(Config{Policy: policy.Default(testIssuer), Seed: testSeed, Attester: att})
	if err != nil {
		f.Fatal(err)
	}
	good, _, err := svc.nonces.issue(time.Now(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	f.Add("", 0, byte(0))
	f.Add(good, 3, byte('f'))
	f.Add(strings.ToUpper(good), 0, byte(0))
	f.Add(strings.Repeat("0", NonceLength), 79, byte('1'))
	f.Fuzz(func(t *testing.T, s string, i int, c byte) {
		if _, _, err := svc.nonces.decode(s); err == nil && s != good {
			t.Fatalf("accepted a nonce it did not issue: %q", s)
		}
		if i < 0 || i >= len(good) || good[i] == c {
			return
		}
		b := []byte(good)
		b[i] = c
		if _, _, err := svc.nonces.decode(string(b)); err == nil {
			t.Fatalf("accepted a nonce changed at byte %d: %q", i, b)
		}
		if _, err := svc.nonces.check(string(b), time.Now()); err == nil {
			t.Fatalf("check accepted a nonce changed at byte %d", i)
		}
	})
}

// BenchmarkNonceUse measures consuming a nonce and, as bytes/entry, the
// memory the used set holds per used nonce (nothing else is stored).
func BenchmarkNonceUse(b *testing.B) {
	n, err := newNonces(rand.Reader, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	ss := make([]string, b.N)
	for i := range ss {
		if ss[i], _, err = n.issue(now, rand.Reader); err != nil {
			b.Fatal(err)
		}
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for i := range b.N {
		if err := n.use(ss[i], now); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(b.N), "bytes/entry")
	runtime.KeepAlive(ss)
	runtime.KeepAlive(n)
}
