// Package pgdb opens the PostgreSQL database that several hosts share
// (BROKER_AUDIT_DSN): the audit store (host/audit) and the revocation list
// (host/revocation) keep their tables in it.
//
// [Open] returns a connection pool whose every connection is checked before
// use: a connection on which commits would not be durable (synchronous_commit
// off, or a server running with fsync off) is refused, so a store never
// reports a record durable that a crash of the server could lose. The
// session's synchronous_commit is pinned when the connection opens, so a
// later change of the server's configuration (a reload) cannot turn it off
// under an open connection.
//
// [Migrate] brings one component's tables to its latest schema version, under
// an advisory lock, so that hosts starting together do not race.
//
// A DSN carries a password. Nothing here logs one, and every error [Open]
// returns has it replaced by "xxxxx" ([Redact], [RedactError]); log a DSN
// only as [Redact] returns it.
package pgdb

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// DefaultConnectTimeout bounds establishing one connection (TCP, TLS and
// authentication) when the DSN sets no connect_timeout.
const DefaultConnectTimeout = 10 * time.Second

// IsDSN reports whether s is a PostgreSQL URL (postgres:// or
// postgresql://), the only form of DSN the host accepts.
func IsDSN(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// Open parses dsn (a postgres:// or postgresql:// URL; pgx's parameters,
// such as pool_max_conns, apply), connects, and checks the first
// connection. maxConns bounds the pool unless the DSN sets pool_max_conns.
// Close the pool when done.
func Open(ctx context.Context, dsn string, maxConns int32) (*pgxpool.Pool, error) {
	if !IsDSN(dsn) {
		return nil, errors.New("the DSN must be a postgres:// or postgresql:// URL")
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, RedactError(fmt.Errorf("failed to parse the DSN: %w", err), dsn)
	}
	u, _ := url.Parse(dsn)
	if u == nil || !u.Query().Has("pool_max_conns") {
		cfg.MaxConns = maxConns
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = DefaultConnectTimeout
	}
	cfg.AfterConnect = checkDurable
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, RedactError(fmt.Errorf("failed to open the database: %w", err), dsn)
	}
	// pgxpool connects lazily: connect now, so a wrong DSN fails at start.
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, RedactError(fmt.Errorf("failed to connect to the database: %w", err), dsn)
	}
	return pool, nil
}

// checkDurable runs on every new connection. It refuses one on which a
// commit would return before its WAL is on the server's disk, and pins the
// session's synchronous_commit to its current value, which a configuration
// reload could otherwise change for the open session.
func checkDurable(ctx context.Context, c *pgx.Conn) error {
	var sync, fsync string
	if err := c.QueryRow(ctx, `SELECT current_setting('synchronous_commit'), current_setting('fsync')`).Scan(&sync, &fsync); err != nil {
		return fmt.Errorf("failed to read synchronous_commit: %w", err)
	}
	if strings.EqualFold(sync, "off") {
		return errors.New("synchronous_commit is off for this role or database: a commit would return before it is durable, so the broker refuses the connection; set it on (ALTER ROLE … SET synchronous_commit = on, and remove any synchronous_commit from the DSN's options)")
	}
	if !strings.EqualFold(fsync, "on") {
		return errors.New("the server runs with fsync off: commits are not durable, so the broker refuses the connection; set fsync = on in postgresql.conf")
	}
	if _, err := c.Exec(ctx, `SELECT set_config('synchronous_commit', $1, false)`, sync); err != nil {
		return fmt.Errorf("failed to pin synchronous_commit: %w", err)
	}
	return nil
}

// Redact returns dsn with its password (in the user info or a password
// parameter) replaced by "xxxxx", for log lines and errors. A string that is
// not a URL is returned as a placeholder, never as it is.
func Redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || !IsDSN(dsn) {
		return "(a DSN that is not a postgres:// URL)"
	}
	q := u.Query()
	for k := range q {
		if strings.Contains(strings.ToLower(k), "password") {
			q.Set(k, "xxxxx")
		}
	}
	u.RawQuery = q.Encode()
	return u.Redacted()
}

// RedactError returns err with every occurrence of dsn's password in its
// text replaced by "xxxxx". It unwraps to err.
func RedactError(err error, dsn string) error {
	if err == nil {
		return nil
	}
	var secrets []string
	if cfg, perr := pgx.ParseConfig(dsn); perr == nil && cfg.Password != "" {
		secrets = append(secrets, cfg.Password)
	}
	if u, perr := url.Parse(dsn); perr == nil {
		if p, ok := u.User.Password(); ok && p != "" {
			secrets = append(secrets, p, url.PathEscape(p), url.QueryEscape(p))
		}
		for k, vs := range u.Query() {
			if strings.Contains(strings.ToLower(k), "password") {
				for _, v := range vs {
					if v != "" {
						secrets = append(secrets, v, url.QueryEscape(v))
					}
				}
			}
		}
	}
	if len(secrets) == 0 {
		return err
	}
	return redactedError{err: err, secrets: secrets}
}

type redactedError struct {
	err     error
	secrets []string
}

func (e redactedError) Error() string {
	s := e.err.Error()
	for _, p := range e.secrets {
		s = strings.ReplaceAll(s, p, "xxxxx")
	}
	return s
}

func (e redactedError) Unwrap() error { return e.err }

// migrateLock is the advisory lock Migrate holds: one migration at a time in
// a database.
const migrateLock = 0x6167_6b79 // "agky"

// Migrate brings component's tables to version len(steps): steps[i] is the
// SQL that takes the schema from version i to i+1. The versions are kept in
// the table agentkeys_schema, one row per component. It refuses a schema
// newer than steps, written by a newer broker.
func Migrate(ctx context.Context, pool *pgxpool.Pool, component string, steps []string) error {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("failed to begin the schema migration: %w", err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrateLock)); err != nil {
		return fmt.Errorf("failed to lock the schema: %w", err)
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS agentkeys_schema (
		component text PRIMARY KEY,
		version   integer NOT NULL CHECK (version >= 0)
	)`); err != nil {
		return fmt.Errorf("failed to create agentkeys_schema: %w", err)
	}
	var v int
	switch err := tx.QueryRow(ctx, `SELECT version FROM agentkeys_schema WHERE component = $1`, component).Scan(&v); {
	case errors.Is(err, pgx.ErrNoRows):
		v = 0
	case err != nil:
		return fmt.Errorf("failed to read the schema version: %w", err)
	case v > len(steps):
		return fmt.Errorf("the %s schema is version %d, this broker supports 1 to %d: use a broker at least as new as the one that wrote it", component, v, len(steps))
	}
	if v == len(steps) {
		return nil
	}
	for i := v; i < len(steps); i++ {
		if _, err := tx.Exec(ctx, steps[i]); err != nil {
			return fmt.Errorf("failed to migrate the %s schema to version %d: %w", component, i+1, err)
		}
	}
	if _, err := tx.Exec(ctx, `INSERT INTO agentkeys_schema (component, version) VALUES ($1, $2)
		ON CONFLICT (component) DO UPDATE SET version = excluded.version`, component, len(steps)); err != nil {
		return fmt.Errorf("failed to record the schema version: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("failed to commit the schema migration: %w", err)
	}
	return nil
}
