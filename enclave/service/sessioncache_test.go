package service

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/agentkeys/broker/shared/protocol"
)

// TestSessionCache: a verified token is remembered and answered the same;
// a remembered token is still refused once expired, or before it was
// issued (a clock set back), with the reason the whole check gives; a
// token differing in one byte is not a hit.
func TestSessionCache(t *testing.T) {
	e := newEnv(t, nil)
	w := newWallet(t)
	r := e.session(t, w)
	first, err := e.svc.VerifySession(r.Token)
	if err != nil {
		t.Fatal(err)
	}
	if len(e.svc.sessions.m) != 1 {
		t.Fatalf("%d tokens remembered, want 1", len(e.svc.sessions.m))
	}
	again, err := e.svc.VerifySession(r.Token)
	if err != nil || again != first {
		t.Fatalf("remembered: %v %+v, want %+v", err, again, first)
	}
	if _, hit := e.svc.sessions.get(r.Token, e.clock.Now()); !hit {
		t.Fatal("not remembered")
	}
	// One byte of the signature changed: not the remembered token.
	sig := r.Token[strings.LastIndexByte(r.Token, '.')+1:]
	flipped := r.Token[:len(r.Token)-len(sig)] + string(sig[0]^1) + sig[1:]
	if _, err := e.svc.VerifySession(flipped); err == nil {
		t.Fatal("a token differing from a remembered one was accepted")
	}

	e.clock.Add(-time.Hour) // before the token was issued
	if _, err := e.svc.VerifySession(r.Token); err == nil || !strings.Contains(err.Error(), "not valid yet") {
		t.Fatalf("before iat: %v", err)
	}
	e.clock.Add(time.Unix(r.Session.ExpiresAt, 0).Sub(e.clock.Now())) // exp: no longer valid
	if _, err := e.svc.VerifySession(r.Token); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("at exp: %v", err)
	}
}

func TestSessionCacheBounded(t *testing.T) {
	c := newSessionCache(2)
	exp := time.Now().Add(time.Hour)
	for i := range 3 {
		c.put(fmt.Sprint("token", i), cachedSession{sess: protocol.Session{SessionID: fmt.Sprint(i)}, exp: exp})
	}
	if len(c.m) != 2 {
		t.Fatalf("%d tokens remembered, want at most 2", len(c.m))
	}
	if s, ok := c.get("token2", time.Now()); !ok || s.SessionID != "2" {
		t.Fatal("the newest token was forgotten")
	}
	if newSessionCache(-1) != nil {
		t.Fatal("a negative size still caches")
	}
	var none *sessionCache
	none.put("x", cachedSession{exp: exp})
	if _, ok := none.get("x", time.Now()); ok {
		t.Fatal("no cache, but a hit")
	}
	if newSessionCache(0).max != DefaultSessionCache {
		t.Fatal("default size")
	}
}
