package revocation

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestStores(t *testing.T) {
	path := filepath.Join(t.TempDir(), "host", "sessions.db")
	sq, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]Store{"memory": NewMemory(), "sqlite": sq} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			if r, err := s.IsRevoked(ctx, "a"); err != nil || r {
				t.Fatalf("fresh store: %v %v", r, err)
			}
			exp := time.Now().Add(time.Hour)
			if added, err := s.Revoke(ctx, "a", exp); err != nil || !added {
				t.Fatalf("first revoke: added = %v, %v; want true", added, err)
			}
			if added, err := s.Revoke(ctx, "a", exp); err != nil || added {
				t.Fatalf("revoking twice: added = %v, %v; want false", added, err)
			}
			if _, err := s.Revoke(ctx, "", exp); err == nil {
				t.Fatal("an empty session id was accepted")
			}
			if r, err := s.IsRevoked(ctx, "a"); err != nil || !r {
				t.Fatalf("after revoke: %v %v", r, err)
			}
			if r, _ := s.IsRevoked(ctx, "b"); r {
				t.Fatal("another session revoked")
			}
		})
	}
	sq.Close()
	// Revocations survive a restart.
	sq, err = OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer sq.Close()
	if r, err := sq.IsRevoked(context.Background(), "a"); err != nil || !r {
		t.Fatalf("after reopen: %v %v", r, err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
	// Expired entries are pruned.
	sq.now = func() time.Time { return time.Now().Add(48 * time.Hour) }
	sq.Revoke(context.Background(), "c", time.Now().Add(72*time.Hour))
	if r, _ := sq.IsRevoked(context.Background(), "a"); r {
		t.Fatal("expired revocation not pruned")
	}
}

func TestMemoryFailure(t *testing.T) {
	m := NewMemory()
	boom := errors.New("boom")
	m.SetFailure(boom)
	if _, err := m.IsRevoked(context.Background(), "a"); !errors.Is(err, boom) {
		t.Fatal(err)
	}
}
