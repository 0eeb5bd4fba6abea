package revocation

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/agentkeys/broker/host/pgdb"
)

// PostgresTimeout bounds each query of a Postgres store, so a server that
// stops answering fails the check (and the mint waiting on it) rather than
// holding it.
const PostgresTimeout = 10 * time.Second

// postgresMaxConns is the pool's size unless the DSN sets pool_max_conns.
const postgresMaxConns = 4

// pgSchemaSteps is the revocation list's schema in PostgreSQL, one
// migration per version (see pgdb.Migrate); times are unix seconds.
var pgSchemaSteps = []string{
	`CREATE TABLE revoked_sessions (
		session_id text   PRIMARY KEY CHECK (session_id <> ''),
		expires_at bigint NOT NULL,
		revoked_at bigint NOT NULL
	)`,
}

// Postgres is a Store in the PostgreSQL database that several hosts share
// (the audit store's, host/pgdb), so a session revoked through one host is
// refused by all of them. Its errors never contain the DSN's password.
type Postgres struct {
	pool *pgxpool.Pool
	dsn  string
	now  func() time.Time
}

var _ Store = (*Postgres)(nil)

// OpenPostgres connects to the database at dsn (a postgres:// URL) and
// creates the revocation table if missing.
func OpenPostgres(ctx context.Context, dsn string) (*Postgres, error) {
	pool, err := pgdb.Open(ctx, dsn, postgresMaxConns)
	if err != nil {
		return nil, fmt.Errorf("revocation: %w", err)
	}
	mctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := pgdb.Migrate(mctx, pool, "revocation", pgSchemaSteps); err != nil {
		pool.Close()
		return nil, pgdb.RedactError(fmt.Errorf("revocation: %w", err), dsn)
	}
	return &Postgres{pool: pool, dsn: dsn, now: time.Now}, nil
}

// Revoke implements Store, and prunes entries whose sessions expired more
// than an hour ago.
func (s *Postgres) Revoke(ctx context.Context, sid string, exp time.Time) (bool, error) {
	if sid == "" {
		return false, errors.New("revocation: empty session id")
	}
	ctx, cancel := context.WithTimeout(ctx, PostgresTimeout)
	defer cancel()
	now := s.now()
	tag, err := s.pool.Exec(ctx, `INSERT INTO revoked_sessions (session_id, expires_at, revoked_at) VALUES ($1, $2, $3)
		ON CONFLICT (session_id) DO NOTHING`, sid, exp.Unix(), now.Unix())
	if err != nil {
		return false, pgdb.RedactError(fmt.Errorf("revocation: failed to record: %w", err), s.dsn)
	}
	if _, err := s.pool.Exec(ctx, `DELETE FROM revoked_sessions WHERE expires_at < $1`, now.Add(-time.Hour).Unix()); err != nil {
		return false, pgdb.RedactError(fmt.Errorf("revocation: failed to prune: %w", err), s.dsn)
	}
	return tag.RowsAffected() == 1, nil
}

// IsRevoked implements Store. An error (the server unreachable) is the
// caller's signal to mint nothing.
func (s *Postgres) IsRevoked(ctx context.Context, sid string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, PostgresTimeout)
	defer cancel()
	var revoked bool
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM revoked_sessions WHERE session_id = $1)`, sid).Scan(&revoked); err != nil {
		return false, pgdb.RedactError(fmt.Errorf("revocation: failed to check: %w", err), s.dsn)
	}
	return revoked, nil
}

// Close implements Store.
func (s *Postgres) Close() error {
	s.pool.Close()
	return nil
}
