package revocation

import (
	"context"
	"testing"
	"time"

	"github.com/agentkeys/broker/host/pgdb/pgtest"
)

func openTestPostgres(t *testing.T, dsn string) *Postgres {
	t.Helper()
	s, err := OpenPostgres(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestPostgresShared: two stores on one database, as two hosts: a session
// revoked through one is revoked for the other, once; expired entries are
// pruned; a store that cannot reach the server fails closed (an error, not
// "not revoked") and works again when it is back.
func TestPostgresShared(t *testing.T) {
	ctx := context.Background()
	db := pgtest.New(t)
	proxy := db.NewProxy(t)
	a, b := openTestPostgres(t, db.DSN), openTestPostgres(t, proxy.DSN)
	exp := time.Now().Add(time.Hour)
	if r, err := b.IsRevoked(ctx, "s1"); err != nil || r {
		t.Fatalf("fresh: %v %v", r, err)
	}
	if added, err := a.Revoke(ctx, "s1", exp); err != nil || !added {
		t.Fatalf("revoke through a: %v %v", added, err)
	}
	if r, err := b.IsRevoked(ctx, "s1"); err != nil || !r {
		t.Fatalf("b does not see a's revocation: %v %v", r, err)
	}
	if added, err := b.Revoke(ctx, "s1", exp); err != nil || added {
		t.Fatalf("revoking again through b: added = %v, %v; want false", added, err)
	}
	if _, err := a.Revoke(ctx, "", exp); err == nil {
		t.Fatal("an empty session id was accepted")
	}
	if r, _ := b.IsRevoked(ctx, "s2"); r {
		t.Fatal("another session revoked")
	}

	proxy.Stop()
	if r, err := b.IsRevoked(ctx, "s1"); err == nil {
		t.Fatalf("IsRevoked with the server unreachable = %v, nil; want an error", r)
	}
	if _, err := b.Revoke(ctx, "s3", exp); err == nil {
		t.Fatal("Revoke with the server unreachable succeeded")
	}
	if err := proxy.Start(); err != nil {
		t.Fatal(err)
	}
	var err error
	for range 100 { // the pool drops its broken connections as it meets them
		var r bool
		if r, err = b.IsRevoked(ctx, "s1"); err == nil {
			if !r {
				t.Fatal("s1 is not revoked after the server came back")
			}
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("b did not recover: %v", err)
	}

	a.now = func() time.Time { return time.Now().Add(48 * time.Hour) }
	if _, err := a.Revoke(ctx, "s4", time.Now().Add(72*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if r, _ := b.IsRevoked(ctx, "s1"); r {
		t.Fatal("expired revocation not pruned")
	}
}
