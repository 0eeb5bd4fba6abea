package audit

import (
	"bytes"
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/mod/sumdb/tlog"
	"modernc.org/sqlite"

	"github.com/agentkeys/broker/shared/protocol"
)

// DefaultMaxBatch is the most records the SQLite writer commits in one
// transaction unless WithMaxBatch says otherwise.
const DefaultMaxBatch = 256

const (
	maxMaxBatch   = 4096
	maxOpenConns  = 8 // one writer plus readers (List, Ping)
	schemaVersion = 3
)

// sqlitePragmas are set by the DSN on every connection the pool opens, and
// checkConnection verifies the ones durability depends on. fullfsync makes
// macOS flush the drive's cache too (F_FULLFSYNC); elsewhere it does nothing.
var sqlitePragmas = []string{
	"journal_mode(WAL)",
	"synchronous(FULL)",
	"busy_timeout(5000)",
	"foreign_keys(1)",
	"fullfsync(1)",
}

// The schema. Times are unix microseconds (UTC), booleans 0 or 1. STRICT
// makes SQLite refuse a value of the wrong type instead of storing it.
//
// leaf_hash and tree_index say where a record's entry is in the Merkle log
// (see the package doc), NULL for a record without one: leaf_hash is the
// RFC 6962 leaf hash of the entry (32 bytes), tree_index the entry's index in
// the tree as assigned by the enclave, which is why it is unique but not the
// same column as seq. log_entries, log_hashes and log_checkpoints are the
// log itself (schema version 3).
var schema = []string{
	`CREATE TABLE IF NOT EXISTS schema_version (
		id      INTEGER PRIMARY KEY CHECK (id = 1),
		version INTEGER NOT NULL
	) STRICT`,
	fmt.Sprintf(`CREATE TABLE IF NOT EXISTS audit_records (
		seq                  INTEGER PRIMARY KEY AUTOINCREMENT,
		time_unix_micro      INTEGER NOT NULL,
		kind                 TEXT    NOT NULL,
		outcome              TEXT    NOT NULL,
		wallet               TEXT    NOT NULL,
		bearer_sha256        TEXT    NOT NULL CHECK (length(bearer_sha256) IN (0, 64)),
		audience             TEXT    NOT NULL,
		ttl_seconds          INTEGER NOT NULL,
		kid                  TEXT    NOT NULL,
		jti                  TEXT    NOT NULL,
		detail               TEXT    NOT NULL CHECK (length(CAST(detail AS BLOB)) <= %d),
		host_asserted_wallet INTEGER NOT NULL CHECK (host_asserted_wallet IN (0, 1)),
		leaf_hash            BLOB    CHECK (leaf_hash IS NULL OR length(leaf_hash) = 32),
		tree_index           INTEGER UNIQUE CHECK (tree_index IS NULL OR tree_index >= 0),
		count                INTEGER NOT NULL DEFAULT 1 CHECK (count >= 1),
		client               TEXT    NOT NULL DEFAULT ''
	) STRICT`, MaxDetailLen),
	`CREATE TABLE IF NOT EXISTS log_entries (
		idx   INTEGER PRIMARY KEY CHECK (idx >= 0),
		entry BLOB    NOT NULL
	) STRICT`,
	`CREATE TABLE IF NOT EXISTS log_hashes (
		idx  INTEGER PRIMARY KEY CHECK (idx >= 0),
		hash BLOB    NOT NULL CHECK (length(hash) = 32)
	) STRICT`,
	`CREATE TABLE IF NOT EXISTS log_checkpoints (
		size INTEGER PRIMARY KEY CHECK (size >= 1),
		note BLOB    NOT NULL
	) STRICT`,
	// One row, rewritten by every Ping: proof that the writer can commit,
	// kept apart from the log so that probing adds nothing to it.
	`CREATE TABLE IF NOT EXISTS heartbeat (
		id              INTEGER PRIMARY KEY CHECK (id = 1),
		time_unix_micro INTEGER NOT NULL
	) STRICT`,
}

// migrations add the columns a database written by schema version 1 lacks
// (count and client, version 2). Each is applied only if its column is
// missing, so a half-migrated file is finished rather than refused.
var migrations = []struct{ column, stmt string }{
	{"count", `ALTER TABLE audit_records ADD COLUMN count INTEGER NOT NULL DEFAULT 1 CHECK (count >= 1)`},
	{"client", `ALTER TABLE audit_records ADD COLUMN client TEXT NOT NULL DEFAULT ''`},
}

const (
	recordColumns = `time_unix_micro, kind, outcome, wallet, bearer_sha256, audience,
		ttl_seconds, kid, jti, detail, host_asserted_wallet, count, client, tree_index, leaf_hash`
	insertRecord = `INSERT INTO audit_records (` + recordColumns + `)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	insertEntries    = `INSERT INTO log_entries (idx, entry) VALUES (?, ?)`
	insertHashes     = `INSERT INTO log_hashes (idx, hash) VALUES (?, ?)`
	insertCheckpoint = `INSERT INTO log_checkpoints (size, note) VALUES (?, ?)`
	upsertHeartbeat  = `INSERT INTO heartbeat (id, time_unix_micro) VALUES (1, ?)
		ON CONFLICT (id) DO UPDATE SET time_unix_micro = excluded.time_unix_micro`
	selectRecords = `SELECT seq, ` + recordColumns + ` FROM audit_records
		WHERE seq > ? ORDER BY seq LIMIT ?`
)

// SQLite is a Store in a local SQLite database file. See the package doc for
// how it makes records durable.
type SQLite struct {
	db *sql.DB
	// conn is the writer's own connection, held for the life of the store.
	// Holding it keeps SQLite's files open, so the -wal file is never
	// removed and recreated under the store and files stays valid.
	conn *sql.Conn
	// files are the database and -wal files as they were when the store
	// opened them. The writer compares each path with them around every
	// commit; lost is set, for good, once one no longer matches.
	files []watchedFile
	// stmts are the writer's statements, prepared once: the writer's
	// transactions reuse them on its connection (sql.Tx.StmtContext) rather
	// than parse each statement again for every record and log batch.
	stmts      writerStmts
	lost       atomic.Pointer[error]
	counted    *counted // Count's aggregates and their flushing
	closeOnce  sync.Once
	closeErr   error
	reqs       chan *appendRequest
	writerDone chan struct{}
	maxBatch   int
	stall      func() // testing only, see testingOnlyStallWriter
	gapWait    time.Duration
	gapGrace   time.Duration
	// tip is the stored log's size, right edge and latest checkpoint. Only
	// the writer replaces it, after a commit.
	tip atomic.Pointer[logState]
	gap atomic.Bool // a batch waited in vain; cleared when the log grows

	// mu guards closed. Append holds it for reading while it sends on reqs,
	// so Close (which holds it for writing) never closes reqs under a sender.
	mu     sync.RWMutex
	closed bool

	commits       atomic.Int64
	records       atomic.Int64
	failedRecords atomic.Int64
	logBatches    atomic.Int64
	logEntries    atomic.Int64
	txTime        atomic.Int64 // nanoseconds
}

var (
	_ Store = (*SQLite)(nil)
	_ Log   = (*SQLite)(nil)
)

type watchedFile struct {
	path string
	info os.FileInfo
}

// appendRequest is a record for the writer, or with probe a Ping: no record,
// but a write to the heartbeat table in the writer's next transaction.
type appendRequest struct {
	probe bool
	rec   Record
	// batch is the log batch to store with rec (rec.Batch), or alone when
	// batchOnly; deadline bounds its wait for the batches before it.
	batch     *protocol.AuditBatch
	batchOnly bool
	deadline  time.Time
	done      chan appendResult // buffered: the writer never blocks on a caller that gave up
}

type appendResult struct {
	seq    int64
	err    error
	parked bool // for commit: the log batch must wait
}

// Stats counts what the SQLite writer has done since OpenSQLite.
type Stats struct {
	Commits       int64 // transactions committed, each one fsync
	Records       int64 // records in those transactions
	FailedRecords int64 // records whose transaction failed; their callers got an error
	LogBatches    int64 // enclave log batches stored (each with one checkpoint)
	LogEntries    int64 // log entries in them
	// TxTime is the time the SQLite writer spent in committed transactions,
	// BEGIN to COMMIT and its fsync: the serial section every record waits
	// for. Zero for PostgreSQL.
	TxTime time.Duration
}

// Option configures OpenSQLite.
type Option func(*sqliteConfig)

type sqliteConfig struct {
	maxBatch   int
	stall      func()
	pragmas    []string
	aggEvery   time.Duration
	aggClients int
	gapWait    time.Duration
	gapGrace   time.Duration
}

// WithLogGapWait sets how long a log batch that arrives before the batch
// ahead of it waits for that one, between a millisecond and a minute
// (default DefaultLogGapWait). Past it the Append fails with ErrLogGap.
func WithLogGapWait(d time.Duration) Option {
	return func(c *sqliteConfig) { c.gapWait = d }
}

// WithLogGapGrace sets how long the writer, about to commit a transaction
// in which a log batch would wait for the batches before it (see
// WithLogGapWait), first waits for those to arrive, between 0 (never) and
// 10ms (default DefaultLogGapGrace). The other records of the transaction
// wait as long.
func WithLogGapGrace(d time.Duration) Option {
	return func(c *sqliteConfig) { c.gapGrace = d }
}

// WithAggregateInterval sets how often the aggregates of Count are written,
// between a millisecond and a day. The default is DefaultAggregateInterval.
func WithAggregateInterval(d time.Duration) Option {
	return func(c *sqliteConfig) { c.aggEvery = d }
}

// WithAggregateClients sets how many clients get aggregates of their own in
// one interval, between 1 and 1 000 000 (default DefaultAggregateClients);
// the refusals of further clients are counted under OtherClients.
func WithAggregateClients(n int) Option {
	return func(c *sqliteConfig) { c.aggClients = n }
}

// WithMaxBatch sets the most records committed in one transaction, between
// 1 and 4096. The default is DefaultMaxBatch; 1 turns group commit off.
func WithMaxBatch(n int) Option {
	return func(c *sqliteConfig) { c.maxBatch = n }
}

// testingOnlyStallWriter makes the writer call f each time it has received
// the first record of a batch and before it gathers the rest, so a test can
// hold the writer there, queue Appends, and know they form one batch.
func testingOnlyStallWriter(f func()) Option {
	return func(c *sqliteConfig) { c.stall = f }
}

// testingOnlyPragmas replaces the pragmas in the DSN, so a test can check
// that OpenSQLite refuses a connection that would not be durable.
func testingOnlyPragmas(p ...string) Option {
	return func(c *sqliteConfig) { c.pragmas = p }
}

// OpenSQLite opens the audit database at path, creating it (and its
// directory, mode 0700) if missing. The database file is made mode 0600;
// SQLite gives its -wal and -shm files the same mode.
//
// It fails unless every connection runs with journal_mode=wal and
// synchronous=FULL, and refuses a database whose schema is newer than this
// code. Close the returned store to stop its writer.
func OpenSQLite(path string, opts ...Option) (*SQLite, error) {
	cfg := sqliteConfig{maxBatch: DefaultMaxBatch, pragmas: sqlitePragmas,
		aggEvery: DefaultAggregateInterval, aggClients: DefaultAggregateClients, gapWait: DefaultLogGapWait,
		gapGrace: DefaultLogGapGrace}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.maxBatch < 1 || cfg.maxBatch > maxMaxBatch {
		return nil, fmt.Errorf("audit: max batch is %d, must be between 1 and %d", cfg.maxBatch, maxMaxBatch)
	}
	if cfg.aggEvery < time.Millisecond || cfg.aggEvery > 24*time.Hour {
		return nil, fmt.Errorf("audit: aggregate interval is %s, must be between 1ms and 24h", cfg.aggEvery)
	}
	if cfg.aggClients < 1 || cfg.aggClients > 1_000_000 {
		return nil, fmt.Errorf("audit: aggregate clients is %d, must be between 1 and 1000000", cfg.aggClients)
	}
	if cfg.gapWait < time.Millisecond || cfg.gapWait > time.Minute {
		return nil, fmt.Errorf("audit: log gap wait is %s, must be between 1ms and 1m", cfg.gapWait)
	}
	if cfg.gapGrace < 0 || cfg.gapGrace > 10*time.Millisecond {
		return nil, fmt.Errorf("audit: log gap grace is %s, must be between 0 and 10ms", cfg.gapGrace)
	}
	if path == "" {
		return nil, errors.New("audit: database path is empty")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("audit: failed to resolve database path: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, fmt.Errorf("audit: failed to create database directory: %w", err)
	}
	if err := createPrivateFile(abs); err != nil {
		return nil, err
	}

	db := sql.OpenDB(connector{dsn: sqliteDSN(abs, cfg.pragmas)})
	db.SetMaxOpenConns(maxOpenConns)
	if err := initSchema(db, abs); err != nil {
		db.Close()
		return nil, err
	}
	conn, files, err := pinWriter(db, abs)
	if err != nil {
		db.Close()
		return nil, err
	}
	tip, err := loadTip(conn)
	if err != nil {
		conn.Close()
		db.Close()
		return nil, err
	}
	stmts, err := prepareWriter(db)
	if err != nil {
		conn.Close()
		db.Close()
		return nil, err
	}

	// The queue holds at least a default batch even when batches are small,
	// so callers rarely block handing a record over.
	s := &SQLite{
		db:         db,
		conn:       conn,
		files:      files,
		stmts:      stmts,
		reqs:       make(chan *appendRequest, max(cfg.maxBatch, DefaultMaxBatch)),
		writerDone: make(chan struct{}),
		maxBatch:   cfg.maxBatch,
		stall:      cfg.stall,
		gapWait:    cfg.gapWait,
		gapGrace:   cfg.gapGrace,
	}
	s.tip.Store(&tip)
	go groupWriter{reqs: s.reqs, maxBatch: s.maxBatch, gapGrace: s.gapGrace, stall: s.stall,
		size: func() int64 { return s.tip.Load().size }, commit: s.commit}.run(s.writerDone)
	s.counted = startCounted(cfg.aggClients, cfg.aggEvery, s.Append)
	return s, nil
}

// pinWriter takes the writer's connection out of the pool, reads through it
// so that SQLite has the -wal file open, and notes which files the database
// and -wal paths name now.
func pinWriter(db *sql.DB, abs string) (*sql.Conn, []watchedFile, error) {
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("audit: failed to open the writer's connection: %w", err)
	}
	var v int64
	if err := conn.QueryRowContext(ctx, `SELECT version FROM schema_version WHERE id = 1`).Scan(&v); err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("audit: failed to read through the writer's connection: %w", err)
	}
	var files []watchedFile
	for _, p := range []string{abs, abs + "-wal"} {
		fi, err := os.Stat(p)
		if err != nil {
			conn.Close()
			return nil, nil, fmt.Errorf("audit: failed to stat %s: %w", p, err)
		}
		files = append(files, watchedFile{p, fi})
	}
	return conn, files, nil
}

// createPrivateFile creates the database file 0600 before SQLite does, so it
// is never readable by others even for a moment, and tightens the mode of
// files left by an earlier run.
func createPrivateFile(abs string) error {
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("audit: failed to create database file: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("audit: failed to create database file: %w", err)
	}
	for _, p := range []string{abs, abs + "-wal", abs + "-shm"} {
		if err := os.Chmod(p, 0o600); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("audit: failed to restrict database file mode: %w", err)
		}
	}
	return nil
}

// sqliteDSN returns the modernc.org/sqlite DSN for the file at abs: a SQLite
// URI (so the path is percent-encoded and cannot smuggle parameters) with
// each pragma as a _pragma parameter, which the driver runs on every new
// connection, and _txlock=immediate so the writer takes the write lock when
// its transaction begins rather than part-way through.
func sqliteDSN(abs string, pragmas []string) string {
	p := filepath.ToSlash(abs)
	if !strings.HasPrefix(p, "/") {
		p = "/" + p // Windows: file:/C:/dir/audit.db
	}
	var b strings.Builder
	b.WriteString("file:")
	b.WriteString((&url.URL{Path: p}).EscapedPath())
	b.WriteString("?_txlock=immediate")
	for _, pragma := range pragmas {
		b.WriteString("&_pragma=")
		b.WriteString(url.QueryEscape(pragma))
	}
	return b.String()
}

// sqliteDriver is a private instance of the modernc.org/sqlite driver, so the
// connection hook applies to this package's connections only.
var sqliteDriver = func() *sqlite.Driver {
	d := &sqlite.Driver{}
	d.RegisterConnectionHook(func(c sqlite.ExecQuerierContext, _ string) error {
		return checkConnection(c)
	})
	return d
}()

type connector struct{ dsn string }

func (c connector) Connect(context.Context) (driver.Conn, error) { return sqliteDriver.Open(c.dsn) }
func (c connector) Driver() driver.Driver                        { return sqliteDriver }

// checkConnection runs on every new connection, after the DSN's pragmas, and
// refuses it unless commits on it are durable. A pragma can silently not take
// effect (journal_mode stays "delete" where WAL is unsupported, for one), and
// a record on a connection without synchronous=FULL could be lost on power
// failure after Append reported it durable.
func checkConnection(c sqlite.ExecQuerierContext) error {
	for _, p := range []struct{ name, want string }{
		{"journal_mode", "wal"},
		{"synchronous", "2"}, // FULL
		{"foreign_keys", "1"},
	} {
		got, err := pragmaValue(c, p.name)
		if err != nil {
			return err
		}
		if !strings.EqualFold(got, p.want) {
			return fmt.Errorf("audit: PRAGMA %s is %q on a new connection, want %q: refusing a database that would not keep records durably", p.name, got, p.want)
		}
	}
	return nil
}

func pragmaValue(c sqlite.ExecQuerierContext, name string) (string, error) {
	rows, err := c.QueryContext(context.Background(), "PRAGMA "+name, nil)
	if err != nil {
		return "", fmt.Errorf("audit: failed to read PRAGMA %s: %w", name, err)
	}
	defer rows.Close()
	dest := make([]driver.Value, len(rows.Columns()))
	if len(dest) != 1 {
		return "", fmt.Errorf("audit: PRAGMA %s returned %d columns, want 1", name, len(dest))
	}
	if err := rows.Next(dest); err != nil {
		return "", fmt.Errorf("audit: failed to read PRAGMA %s: %w", name, err)
	}
	switch v := dest[0].(type) {
	case int64:
		return strconv.FormatInt(v, 10), nil
	case string:
		return v, nil
	case []byte:
		return string(v), nil
	default:
		return fmt.Sprint(v), nil
	}
}

// initSchema creates the tables if missing, checks the schema version, checks
// that SQLite opened the file at abs (not some other file a mangled URI
// named), and syncs the directory so the new files' names are durable too.
func initSchema(db *sql.DB, abs string) error {
	ctx := context.Background()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("audit: failed to open database: %w", err)
	}
	defer tx.Rollback()
	for _, stmt := range schema {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("audit: failed to create schema: %w", err)
		}
	}
	var v int64
	switch err := tx.QueryRowContext(ctx, `SELECT version FROM schema_version WHERE id = 1`).Scan(&v); {
	case errors.Is(err, sql.ErrNoRows):
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (id, version) VALUES (1, ?)`, schemaVersion); err != nil {
			return fmt.Errorf("audit: failed to record schema version: %w", err)
		}
	case err != nil:
		return fmt.Errorf("audit: failed to read schema version: %w", err)
	case v < 1 || v > schemaVersion:
		return fmt.Errorf("audit: database schema version is %d, this broker supports 1 to %d: use a broker at least as new as the one that wrote it", v, schemaVersion)
	}
	if err := migrate(ctx, tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("audit: failed to create schema: %w", err)
	}

	var seq int64
	var name, file string
	if err := db.QueryRowContext(ctx, `SELECT seq, name, file FROM pragma_database_list WHERE name = 'main'`).Scan(&seq, &name, &file); err != nil {
		return fmt.Errorf("audit: failed to read database file name: %w", err)
	}
	want, err := os.Stat(abs)
	if err != nil {
		return fmt.Errorf("audit: failed to stat database file: %w", err)
	}
	got, err := os.Stat(file)
	if err != nil || !os.SameFile(got, want) {
		return fmt.Errorf("audit: SQLite opened %q, not %q", file, abs)
	}

	if runtime.GOOS != "windows" {
		if err := syncDir(filepath.Dir(abs)); err != nil {
			return fmt.Errorf("audit: failed to sync database directory: %w", err)
		}
	}
	return nil
}

// migrate brings audit_records up to schemaVersion, adding the columns it
// lacks, and records the version.
func migrate(ctx context.Context, tx *sql.Tx) error {
	rows, err := tx.QueryContext(ctx, `SELECT name FROM pragma_table_info('audit_records')`)
	if err != nil {
		return fmt.Errorf("audit: failed to read the table's columns: %w", err)
	}
	have := map[string]bool{}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			rows.Close()
			return fmt.Errorf("audit: failed to read the table's columns: %w", err)
		}
		have[name] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("audit: failed to read the table's columns: %w", err)
	}
	for _, m := range migrations {
		if have[m.column] {
			continue
		}
		if _, err := tx.ExecContext(ctx, m.stmt); err != nil {
			return fmt.Errorf("audit: failed to add column %s: %w", m.column, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE schema_version SET version = ? WHERE id = 1`, schemaVersion); err != nil {
		return fmt.Errorf("audit: failed to record schema version: %w", err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Append implements Store. It hands r to the writer goroutine and waits
// until the transaction holding it has committed (see the package doc).
//
// If ctx ends first, Append returns ctx.Err() at once, but a record already
// handed to the writer is still committed. The caller must return no
// credential either way.
func (s *SQLite) Append(ctx context.Context, r Record) (Record, error) {
	if err := ctx.Err(); err != nil {
		return Record{}, err
	}
	if lost := s.lost.Load(); lost != nil {
		return Record{}, *lost
	}
	r, err := prepare(r, time.Now())
	if err != nil {
		return Record{}, err
	}
	req := &appendRequest{rec: r, done: make(chan appendResult, 1)}
	if r.Batch != nil {
		req.batch, req.deadline = r.Batch, time.Now().Add(s.gapWait)
		req.rec.Batch, r.Batch = nil, nil
	}
	if err := s.enqueue(ctx, req); err != nil {
		return Record{}, err
	}
	var res appendResult
	select {
	case res = <-req.done:
	case <-ctx.Done():
		select {
		case res = <-req.done: // committed just in time: report it
		default:
			return Record{}, ctx.Err()
		}
	}
	if res.err != nil {
		return Record{}, res.err
	}
	r.Seq = res.seq
	return r, nil
}

func (s *SQLite) enqueue(ctx context.Context, req *appendRequest) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	select {
	case s.reqs <- req:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// commit stores batch in one transaction and answers every request in it
// but those it returns: requests whose log batch must wait for earlier ones.
// Either all the others are committed or every one gets the error, except
// that a request whose log batch does not fit gets its own error alone.
//
// The files are checked before the transaction, so that nothing is written
// to a file already unlinked, and again after it, so that a file removed
// while the transaction ran fails the records it holds: they are in a file
// that will vanish, and the callers must not hand out credentials for them.
func (s *SQLite) commit(batch []*appendRequest) (parked []*appendRequest) {
	err := s.checkFiles()
	var res []appendResult
	var tip logState
	var stored int
	if err == nil {
		began := time.Now()
		if res, tip, stored, err = s.insert(batch); err == nil {
			s.commits.Add(1)
			s.txTime.Add(int64(time.Since(began)))
			err = s.checkFiles()
		}
	}
	if err != nil {
		n := 0
		for _, req := range batch {
			if !req.probe && !req.batchOnly {
				n++
			}
		}
		s.failedRecords.Add(int64(n))
		if !errors.Is(err, ErrFileReplaced) {
			err = fmt.Errorf("audit: failed to store record (batch of %d not committed): %w", n, err)
		}
		for _, req := range batch {
			req.done <- appendResult{err: err}
		}
		return nil
	}
	if old := s.tip.Load(); tip.size > old.size {
		s.logEntries.Add(tip.size - old.size)
		s.logBatches.Add(int64(stored))
		s.tip.Store(&tip)
		s.gap.Store(false)
	}
	now := time.Now()
	for i, req := range batch {
		switch {
		case res[i].parked && now.Before(req.deadline):
			parked = append(parked, req)
			continue
		case res[i].parked:
			s.gap.Store(true)
			res[i] = appendResult{err: fmt.Errorf("audit: %w: the batch from entry %d waited %s for the store (at %d) to hold the entries before it",
				ErrLogGap, req.batch.Start, s.gapWait, tip.size)}
		}
		if res[i].err == nil && !req.probe && !req.batchOnly {
			s.records.Add(1)
		}
		req.done <- res[i]
	}
	return parked
}

// checkFiles reports an error wrapping ErrFileReplaced if the database or
// -wal path no longer names the file the store has open, and from then on
// always. One stat per file: cheap enough for every commit.
func (s *SQLite) checkFiles() error {
	if lost := s.lost.Load(); lost != nil {
		return *lost
	}
	for _, f := range s.files {
		fi, err := os.Stat(f.path)
		var what string
		switch {
		case errors.Is(err, fs.ErrNotExist):
			what = "was deleted"
		case err != nil:
			return fmt.Errorf("failed to check the database file: %w", err)
		case !os.SameFile(fi, f.info):
			what = "was replaced by another file"
		default:
			continue
		}
		err = fmt.Errorf("audit: %w: %s %s while the host had it open; records written from then on would be lost, so none are: restart the host to open a new log, and find out what removed it", ErrFileReplaced, f.path, what)
		s.lost.CompareAndSwap(nil, &err)
		return *s.lost.Load()
	}
	return nil
}

// insert writes batch in one transaction. It returns each request's result
// (parked: its log batch starts past the log, so nothing of it was written)
// and the log's tip after the transaction.
func (s *SQLite) insert(batch []*appendRequest) (res []appendResult, tip logState, stored int, err error) {
	// Not a caller's context: one caller giving up must not fail the
	// others' records. busy_timeout bounds the wait for the write lock.
	ctx := context.Background()
	tip = *s.tip.Load()
	tx, err := s.conn.BeginTx(ctx, nil)
	if err != nil {
		return nil, tip, 0, fmt.Errorf("failed to begin transaction: %w", err)
	}
	defer tx.Rollback() // after Commit, a no-op
	st := s.stmts.in(ctx, tx)
	res = make([]appendResult, len(batch))
	probed := false
	for i, req := range batch {
		if req.probe {
			probed = true
			continue
		}
		if req.batch != nil {
			var fits error
			before := tip.size
			if tip, res[i].parked, fits, err = s.storeBatch(ctx, tx, st, tip, *req.batch); err != nil {
				return nil, tip, 0, err
			}
			if tip.size > before {
				stored++
			}
			if res[i].parked {
				continue
			}
			if fits != nil {
				res[i].err = fits
				continue
			}
		}
		if req.batchOnly {
			continue
		}
		r := req.rec
		var treeIndex, leafHash any
		if r.Logged != nil {
			treeIndex, leafHash = r.Logged.Index, r.Logged.LeafHash[:]
		}
		out, err := st.recordStmt().ExecContext(ctx, r.Time.UnixMicro(), r.Kind, r.Outcome, r.Wallet,
			r.BearerSHA256, r.Audience, r.TTLSeconds, r.Kid, r.JTI, r.Detail, boolInt(r.HostAssertedWallet),
			r.Count, r.Client, treeIndex, leafHash)
		if err != nil {
			return nil, tip, 0, fmt.Errorf("failed to insert: %w", err)
		}
		if res[i].seq, err = out.LastInsertId(); err != nil {
			return nil, tip, 0, fmt.Errorf("failed to read assigned seq: %w", err)
		}
	}
	if probed {
		// A Ping: write the heartbeat, and read the log's table so that a
		// store whose table is gone is not reported ready.
		if _, err := tx.ExecContext(ctx, upsertHeartbeat, time.Now().UnixMicro()); err != nil {
			return nil, tip, 0, fmt.Errorf("failed to write the heartbeat: %w", err)
		}
		var last int64
		if err := tx.QueryRowContext(ctx, `SELECT coalesce(max(seq), 0) FROM audit_records`).Scan(&last); err != nil {
			return nil, tip, 0, fmt.Errorf("failed to read audit_records: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, tip, 0, fmt.Errorf("failed to commit: %w", err)
	}
	return res, tip, stored, nil
}

// storeBatch writes b in tx if it extends tip, and returns the new tip. A
// batch already stored is checked against the stored checkpoint and written
// again never; one past tip is parked; one that does not fit gets fits, an
// error of its own. err is a database error, failing the transaction.
func (s *SQLite) storeBatch(ctx context.Context, tx *sql.Tx, st *txStmts, tip logState, b protocol.AuditBatch) (next logState, parked bool, fits, err error) {
	end := b.Start + int64(len(b.Entries))
	switch {
	case b.Start > tip.size:
		return tip, true, nil, nil
	case b.Start < tip.size:
		// Nearly always the batch just stored, carried by another record
		// of the same batch: its checkpoint is the tip's.
		var note []byte
		if end == tip.size {
			note = tip.checkpoint
		} else if err := tx.QueryRowContext(ctx, `SELECT note FROM log_checkpoints WHERE size = ?`, end).Scan(&note); err != nil && !errors.Is(err, sql.ErrNoRows) {
			return tip, false, nil, fmt.Errorf("failed to read a checkpoint: %w", err)
		}
		if end > tip.size || !bytes.Equal(note, b.Checkpoint) {
			return tip, false, fmt.Errorf("audit: %w: batch [%d, %d) differs from what is stored", ErrLogMismatch, b.Start, end), nil
		}
		return tip, false, nil, nil
	}
	t, ferr := tip.extend(b)
	if ferr != nil {
		return tip, false, fmt.Errorf("audit: %w", ferr), nil
	}
	if err := st.insertRows(false, b.Start, b.Entries); err != nil {
		return tip, false, nil, fmt.Errorf("failed to insert log entries: %w", err)
	}
	hashes := make([][]byte, len(t.ordered))
	for i := range t.ordered {
		hashes[i] = t.ordered[i][:]
	}
	if err := st.insertRows(true, t.first, hashes); err != nil {
		return tip, false, nil, fmt.Errorf("failed to insert log hashes: %w", err)
	}
	if _, err := st.checkpointStmt().ExecContext(ctx, end, b.Checkpoint); err != nil {
		return tip, false, nil, fmt.Errorf("failed to insert a checkpoint: %w", err)
	}
	return t.next, false, nil, nil
}

// maxRowsPerInsert bounds the rows of one multi-row INSERT of log entries or
// hashes (and so the statements prepared for them: one per row count).
const maxRowsPerInsert = 32

// writerStmts are the statements the writer's transactions run, prepared
// once on the pool (each is then cached per connection, so the writer's
// transactions, on its own connection, prepare it once): the record and
// checkpoint inserts, and the multi-row inserts of log entries and hashes,
// one per row count from 1 to maxRowsPerInsert (entries[n-1] inserts n).
type writerStmts struct {
	record, checkpoint *sql.Stmt
	entries, hashes    [maxRowsPerInsert]*sql.Stmt
}

// multiRow is insert with n rows of VALUES.
func multiRow(insert string, n int) string {
	return insert + strings.Repeat(", (?, ?)", n-1)
}

// prepareWriter prepares the writer's statements on db.
func prepareWriter(db *sql.DB) (writerStmts, error) {
	var st writerStmts
	prep := func(dst **sql.Stmt, query string) error {
		var err error
		if *dst, err = db.Prepare(query); err != nil {
			st.close()
			return fmt.Errorf("audit: failed to prepare the writer's statements: %w", err)
		}
		return nil
	}
	if err := prep(&st.record, insertRecord); err != nil {
		return writerStmts{}, err
	}
	if err := prep(&st.checkpoint, insertCheckpoint); err != nil {
		return writerStmts{}, err
	}
	for n := 1; n <= maxRowsPerInsert; n++ {
		if err := prep(&st.entries[n-1], multiRow(insertEntries, n)); err != nil {
			return writerStmts{}, err
		}
		if err := prep(&st.hashes[n-1], multiRow(insertHashes, n)); err != nil {
			return writerStmts{}, err
		}
	}
	return st, nil
}

func (st writerStmts) close() {
	for _, x := range append([]*sql.Stmt{st.record, st.checkpoint}, append(st.entries[:], st.hashes[:]...)...) {
		if x != nil {
			x.Close()
		}
	}
}

// txStmts binds the writer's statements to one transaction as it first uses
// each; they close with it.
type txStmts struct {
	ctx                context.Context
	tx                 *sql.Tx
	all                *writerStmts
	record, checkpoint *sql.Stmt
	entries, hashes    [maxRowsPerInsert]*sql.Stmt
}

func (st *writerStmts) in(ctx context.Context, tx *sql.Tx) *txStmts {
	return &txStmts{ctx: ctx, tx: tx, all: st}
}

func (t *txStmts) bind(dst **sql.Stmt, src *sql.Stmt) *sql.Stmt {
	if *dst == nil {
		*dst = t.tx.StmtContext(t.ctx, src)
	}
	return *dst
}

func (t *txStmts) recordStmt() *sql.Stmt     { return t.bind(&t.record, t.all.record) }
func (t *txStmts) checkpointStmt() *sql.Stmt { return t.bind(&t.checkpoint, t.all.checkpoint) }

// insertRows inserts (start+i, vals[i]) for every i into the log's entries
// (hashes false) or hashes, maxRowsPerInsert rows per statement.
func (t *txStmts) insertRows(hashes bool, start int64, vals [][]byte) error {
	args := make([]any, 0, 2*min(len(vals), maxRowsPerInsert))
	for len(vals) > 0 {
		n := min(len(vals), maxRowsPerInsert)
		var stmt *sql.Stmt
		if hashes {
			stmt = t.bind(&t.hashes[n-1], t.all.hashes[n-1])
		} else {
			stmt = t.bind(&t.entries[n-1], t.all.entries[n-1])
		}
		args = args[:0]
		for i, v := range vals[:n] {
			args = append(args, start+int64(i), v)
		}
		if _, err := stmt.ExecContext(t.ctx, args...); err != nil {
			return err
		}
		start, vals = start+int64(n), vals[n:]
	}
	return nil
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// List implements Store.
func (s *SQLite) List(ctx context.Context, afterSeq int64, limit int) ([]Record, error) {
	limit, err := listLimit(afterSeq, limit)
	if err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, ErrClosed
	}
	rows, err := s.db.QueryContext(ctx, selectRecords, afterSeq, limit)
	if err != nil {
		return nil, fmt.Errorf("audit: failed to list records: %w", err)
	}
	defer rows.Close()
	var out []Record
	for rows.Next() {
		var r Record
		var micros, hostAsserted int64
		var treeIndex sql.NullInt64
		var leafHash []byte
		if err := rows.Scan(&r.Seq, &micros, &r.Kind, &r.Outcome, &r.Wallet, &r.BearerSHA256,
			&r.Audience, &r.TTLSeconds, &r.Kid, &r.JTI, &r.Detail, &hostAsserted, &r.Count, &r.Client,
			&treeIndex, &leafHash); err != nil {
			return nil, fmt.Errorf("audit: failed to read record: %w", err)
		}
		if treeIndex.Valid && len(leafHash) == tlog.HashSize {
			r.Logged = &Logged{Index: treeIndex.Int64, LeafHash: tlog.Hash(leafHash)}
		}
		r.Time = time.UnixMicro(micros).UTC()
		r.HostAssertedWallet = hostAsserted != 0
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("audit: failed to list records: %w", err)
	}
	return out, nil
}

// Ping implements Store: it has the writer commit a transaction that
// rewrites the heartbeat row and reads audit_records, sharing the fsync of
// whatever records are being committed with it. So it fails (with an error
// wrapping ErrNotWritable) when records cannot be committed: the writer's
// connection broken, the table gone, the file locked by another process for
// longer than ctx allows; and (wrapping ErrFileReplaced) once the database
// file was deleted or replaced.
func (s *SQLite) Ping(ctx context.Context) error {
	if lost := s.lost.Load(); lost != nil {
		return *lost
	}
	if s.gap.Load() {
		return fmt.Errorf("audit: %w", ErrLogGap)
	}
	req := &appendRequest{probe: true, done: make(chan appendResult, 1)}
	if err := s.enqueue(ctx, req); err != nil {
		if errors.Is(err, ErrClosed) {
			return err
		}
		return fmt.Errorf("audit: %w: the writer's queue stayed full: %w", ErrNotWritable, err)
	}
	select {
	case res := <-req.done:
		if res.err != nil && !errors.Is(res.err, ErrFileReplaced) {
			return fmt.Errorf("audit: %w: %w", ErrNotWritable, res.err)
		}
		return res.err
	case <-ctx.Done():
		return fmt.Errorf("audit: %w: the writer did not commit in time: %w", ErrNotWritable, ctx.Err())
	}
}

// Count implements Store. The aggregates are appended every interval
// (WithAggregateInterval) and by Close.
func (s *SQLite) Count(r Record) error {
	return s.counted.count(r)
}

// Flush appends the aggregates of everything counted so far, as the end of
// an interval does, and starts a new interval.
func (s *SQLite) Flush(ctx context.Context) error {
	return s.counted.flush(ctx)
}

// Stats returns the writer's counters.
func (s *SQLite) Stats() Stats {
	return Stats{
		Commits:       s.commits.Load(),
		Records:       s.records.Load(),
		FailedRecords: s.failedRecords.Load(),
		LogBatches:    s.logBatches.Load(),
		LogEntries:    s.logEntries.Load(),
		TxTime:        time.Duration(s.txTime.Load()),
	}
}

// Close implements Store. It appends the pending aggregates, lets the
// writer commit every record already handed to it, then closes the
// database. Appends that have not been handed over get ErrClosed.
func (s *SQLite) Close() error {
	s.closeOnce.Do(func() {
		s.counted.stop()
		s.mu.Lock()
		s.closed = true
		close(s.reqs)
		s.mu.Unlock()
		<-s.writerDone
		s.stmts.close()
		s.conn.Close()
		if err := s.db.Close(); err != nil {
			s.closeErr = fmt.Errorf("audit: failed to close database: %w", err)
		}
	})
	return s.closeErr
}
