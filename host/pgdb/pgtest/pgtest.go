// Package pgtest gives tests a PostgreSQL schema of their own on the server
// named by AGENTKEYS_TEST_POSTGRES (a postgres:// URL; .ci/run starts a
// server and sets it), and the tools to break the connection to it.
//
// Without AGENTKEYS_TEST_POSTGRES a test that asks for a database is
// skipped, unless CI is set: then it fails, as it does whenever the server
// cannot be reached, so that CI never passes without having run them.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Env is the variable naming the test server.
const Env = "AGENTKEYS_TEST_POSTGRES"

// DB is a schema of its own on the test server, dropped when the test ends.
type DB struct {
	// DSN reaches the schema: the server's DSN with search_path set to the
	// schema and application_name to its name, so Terminate finds the
	// connections of this test alone.
	DSN    string
	Schema string
	base   string
}

// New creates a fresh schema for t, or skips t (see the package doc).
func New(t testing.TB) *DB {
	t.Helper()
	base := os.Getenv(Env)
	if base == "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not set but CI is: .ci/run starts PostgreSQL and sets it; the PostgreSQL tests must run in CI", Env)
		}
		t.Skipf("%s is not set: set it to a postgres:// URL of a database to run the PostgreSQL tests", Env)
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		t.Fatalf("%s is not a postgres:// URL", Env)
	}
	var b [6]byte
	rand.Read(b[:])
	schema := "t_" + hex.EncodeToString(b[:])
	admin := connect(t, base)
	defer admin.Close(context.Background())
	if _, err := admin.Exec(context.Background(), `CREATE SCHEMA `+schema); err != nil {
		t.Fatalf("failed to create the test schema: %v", err)
	}
	t.Cleanup(func() {
		c := connect(t, base)
		defer c.Close(context.Background())
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := c.Exec(ctx, `DROP SCHEMA `+schema+` CASCADE`); err != nil {
			t.Errorf("failed to drop the test schema %s: %v", schema, err)
		}
	})
	q := u.Query()
	q.Set("search_path", schema)
	q.Set("application_name", schema)
	u.RawQuery = q.Encode()
	return &DB{DSN: u.String(), Schema: schema, base: base}
}

func connect(t testing.TB, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("failed to connect to the test server (%s): %v", Env, err)
	}
	return c
}

// Exec runs sql in the schema, failing t on an error.
func (db *DB) Exec(t testing.TB, sql string, args ...any) pgconn.CommandTag {
	t.Helper()
	c := connect(t, db.DSN)
	defer c.Close(context.Background())
	tag, err := c.Exec(context.Background(), sql, args...)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return tag
}

// Scan runs the query sql in the schema and scans its one row into dest,
// failing t on an error.
func (db *DB) Scan(t testing.TB, sql string, dest ...any) {
	t.Helper()
	c := connect(t, db.DSN)
	defer c.Close(context.Background())
	if err := c.QueryRow(context.Background(), sql).Scan(dest...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// BaseDSN is the server's DSN (AGENTKEYS_TEST_POSTGRES): its connections
// are not this schema's, so Terminate spares them.
func (db *DB) BaseDSN() string { return db.base }

// Begin opens a connection to dsn and begins a transaction on it, rolled
// back and closed when t ends.
func Begin(t testing.TB, dsn string) pgx.Tx {
	t.Helper()
	c := connect(t, dsn)
	tx, err := c.Begin(context.Background())
	if err != nil {
		c.Close(context.Background())
		t.Fatal(err)
	}
	t.Cleanup(func() {
		tx.Rollback(context.Background())
		c.Close(context.Background())
	})
	return tx
}

// Waiting is how many of the schema's connections wait for a lock.
func (db *DB) Waiting(t testing.TB) int {
	t.Helper()
	c := connect(t, db.base)
	defer c.Close(context.Background())
	var n int
	if err := c.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
		WHERE application_name = $1 AND wait_event_type = 'Lock'`, db.Schema).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// Terminate ends, from a connection of its own, every server process serving
// a connection of this schema's DSN (pg_terminate_backend), as a server
// restart or an administrator would; it returns how many it ended.
func (db *DB) Terminate(t testing.TB) int {
	t.Helper()
	c := connect(t, db.base)
	defer c.Close(context.Background())
	var n int
	if err := c.QueryRow(context.Background(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name = $1 AND pid <> pg_backend_pid()`, db.Schema).Scan(&n); err != nil {
		t.Fatalf("pg_terminate_backend: %v", err)
	}
	return n
}

// Proxy forwards connections to the test server, and can cut them all and
// refuse new ones (Stop) and accept them again (Start), on the same address:
// the server, as the store sees it, goes away and comes back.
type Proxy struct {
	// DSN is db's DSN, through the proxy.
	DSN string

	network, addr, target string
	mu                    sync.Mutex
	ln                    net.Listener
	conns                 map[net.Conn]bool
	wg                    sync.WaitGroup
}

// NewProxy starts a proxy in front of db's server, stopped when t ends. For a
// server reached over a unix socket it listens on a unix socket, so the
// server's peer authentication still sees this process's user.
func (db *DB) NewProxy(t testing.TB) *Proxy {
	t.Helper()
	cfg, err := pgconn.ParseConfig(db.DSN)
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{conns: map[net.Conn]bool{}}
	u, _ := url.Parse(db.DSN)
	q := u.Query()
	port := strconv.Itoa(int(cfg.Port))
	if filepath.IsAbs(cfg.Host) {
		dir, err := os.MkdirTemp("", "pgproxy")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		p.network, p.addr = "unix", filepath.Join(dir, ".s.PGSQL."+port)
		p.target = filepath.Join(cfg.Host, ".s.PGSQL."+port)
		q.Set("host", dir)
		q.Set("port", port)
	} else {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p.addr = ln.Addr().String()
		ln.Close()
		p.network, p.target = "tcp", net.JoinHostPort(cfg.Host, port)
		q.Del("host")
		q.Del("port")
		u.Host = p.addr
		if cfg.TLSConfig != nil && cfg.TLSConfig.ServerName == "" {
			q.Set("sslmode", "disable") // the proxy's address is not the server's name
		}
	}
	u.RawQuery = q.Encode()
	p.DSN = u.String()
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}

// Start listens again after Stop.
func (p *Proxy) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		return nil
	}
	if p.network == "unix" {
		os.Remove(p.addr)
	}
	ln, err := net.Listen(p.network, p.addr)
	if err != nil {
		return err
	}
	p.ln = ln
	p.wg.Go(func() { p.accept(ln) })
	return nil
}

// Stop closes the listener and every forwarded connection.
func (p *Proxy) Stop() {
	p.mu.Lock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *Proxy) accept(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		s, err := net.DialTimeout(p.network, p.target, 10*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		if p.ln != ln { // stopped meanwhile
			p.mu.Unlock()
			c.Close()
			s.Close()
			return
		}
		p.conns[c], p.conns[s] = true, true
		p.mu.Unlock()
		p.wg.Go(func() { p.pipe(c, s) })
		p.wg.Go(func() { p.pipe(s, c) })
	}
}

func (p *Proxy) pipe(dst, src net.Conn) {
	io.Copy(dst, src)
	dst.Close()
	src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}
