// Package revocation keeps the ids of revoked sessions on the host.
//
// Session tokens are stateless JWTs signed by the enclave; revoking one means
// the host refuses to forward it. The host checks the list before every mint,
// and fails closed: if the list cannot be read, nothing is minted. Entries are
// kept until the session would have expired anyway, then pruned.
//
// [OpenSQLite] keeps the list in a file of one host's; [OpenPostgres] in the
// PostgreSQL database that several hosts share with their audit store, so a
// session revoked through one host is refused by every one.
package revocation

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// Store records revoked session ids.
type Store interface {
	// Revoke records sid as revoked until expiresAt (the session's own expiry).
	// It reports whether sid was new to the list: false means that it had been
	// revoked already (and the first expiry stands).
	Revoke(ctx context.Context, sid string, expiresAt time.Time) (bool, error)
	// IsRevoked reports whether sid was revoked.
	IsRevoked(ctx context.Context, sid string) (bool, error)
	Close() error
}

// Memory is an in-memory Store for tests and single-process development.
type Memory struct {
	mu   sync.Mutex
	m    map[string]time.Time
	fail error
}

// NewMemory returns an empty Memory store.
func NewMemory() *Memory { return &Memory{m: map[string]time.Time{}} }

// SetFailure makes every call fail with err (nil restores).
func (s *Memory) SetFailure(err error) { s.mu.Lock(); s.fail = err; s.mu.Unlock() }

// Revoke implements Store.
func (s *Memory) Revoke(_ context.Context, sid string, exp time.Time) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return false, s.fail
	}
	if sid == "" {
		return false, errors.New("revocation: empty session id")
	}
	if _, ok := s.m[sid]; ok {
		return false, nil
	}
	s.m[sid] = exp
	return true, nil
}

// IsRevoked implements Store.
func (s *Memory) IsRevoked(_ context.Context, sid string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return false, s.fail
	}
	_, ok := s.m[sid]
	return ok, nil
}

// Close implements Store.
func (s *Memory) Close() error { return nil }

// SQLite is a Store in a SQLite file (WAL, synchronous=FULL), so revocations
// survive a host restart.
type SQLite struct {
	db  *sql.DB
	now func() time.Time
}

// OpenSQLite opens or creates the store at path (0600, directory 0700).
func OpenSQLite(path string) (*SQLite, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("revocation: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("revocation: %w", err)
	}
	f.Close()
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(5000)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("revocation: %w", err)
	}
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(`CREATE TABLE IF NOT EXISTS revoked_sessions (
		session_id TEXT PRIMARY KEY,
		expires_at INTEGER NOT NULL,
		revoked_at INTEGER NOT NULL)`); err != nil {
		db.Close()
		return nil, fmt.Errorf("revocation: failed to create schema: %w", err)
	}
	return &SQLite{db: db, now: time.Now}, nil
}

// Revoke implements Store, and prunes entries whose sessions have expired.
func (s *SQLite) Revoke(ctx context.Context, sid string, exp time.Time) (bool, error) {
	if sid == "" {
		return false, errors.New("revocation: empty session id")
	}
	now := s.now()
	res, err := s.db.ExecContext(ctx, `INSERT INTO revoked_sessions (session_id, expires_at, revoked_at) VALUES (?, ?, ?)
		ON CONFLICT(session_id) DO NOTHING`, sid, exp.Unix(), now.Unix())
	if err != nil {
		return false, fmt.Errorf("revocation: failed to record: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("revocation: failed to record: %w", err)
	}
	if _, err := s.db.ExecContext(ctx, `DELETE FROM revoked_sessions WHERE expires_at < ?`, now.Add(-time.Hour).Unix()); err != nil {
		return false, fmt.Errorf("revocation: failed to prune: %w", err)
	}
	return n == 1, nil
}

// IsRevoked implements Store.
func (s *SQLite) IsRevoked(ctx context.Context, sid string) (bool, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM revoked_sessions WHERE session_id = ?`, sid).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("revocation: failed to check: %w", err)
	}
	return n > 0, nil
}

// Close implements Store.
func (s *SQLite) Close() error { return s.db.Close() }
