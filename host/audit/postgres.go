package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/agentkeys/broker/host/pgdb"
	"github.com/agentkeys/broker/shared/auditlog"
	"github.com/agentkeys/broker/shared/protocol"
)

// DefaultPostgresMaxConns is the most connections a Postgres store holds
// (its writer, List, Ping and the readers of tiles and proofs) unless the DSN
// sets pool_max_conns.
const DefaultPostgresMaxConns = 8

// PostgresTimeout bounds each of a Postgres store's transactions and reads,
// so that a server that stops answering fails the Appends waiting on it
// rather than holding them.
const PostgresTimeout = 10 * time.Second

// maxCASAttempts bounds how often the writer retries a transaction whose
// compare-and-swap on the log's tip found the tip moved.
const maxCASAttempts = 3

// pgSchemaSteps is the audit schema in PostgreSQL, one migration per version
// (see pgdb.Migrate). Every table is keyed by the log's name: the hosts
// sharing the database each write a log of their own ("" is the default
// log) and read every log.
//
// audit_logs holds each log's tip: its size, the last record's seq and the
// latest checkpoint. A writer's transaction starts by moving the tip with a
// compare-and-swap (UPDATE … WHERE size = the size it read and seq = the seq
// it read), which also locks the row for the rest of the transaction, so
// the batches of one log are stored one after another and never two at one
// index; the primary keys say the same a second time.
var pgSchemaSteps = []string{
	fmt.Sprintf(`CREATE TABLE audit_logs (
		log        text   PRIMARY KEY CHECK (log ~ '^([a-z0-9][a-z0-9-]{0,62})?$'),
		size       bigint NOT NULL DEFAULT 0 CHECK (size >= 0),
		seq        bigint NOT NULL DEFAULT 0 CHECK (seq >= 0),
		checkpoint bytea  CHECK ((size = 0) = (checkpoint IS NULL))
	);
	CREATE TABLE audit_records (
		log                  text    NOT NULL,
		seq                  bigint  NOT NULL CHECK (seq >= 1),
		time_unix_micro      bigint  NOT NULL,
		kind                 text    NOT NULL,
		outcome              text    NOT NULL,
		wallet               text    NOT NULL,
		bearer_sha256        text    NOT NULL CHECK (length(bearer_sha256) IN (0, 64)),
		audience             text    NOT NULL,
		ttl_seconds          bigint  NOT NULL,
		kid                  text    NOT NULL,
		jti                  text    NOT NULL,
		detail               text    NOT NULL CHECK (octet_length(detail) <= %d),
		host_asserted_wallet boolean NOT NULL,
		count                bigint  NOT NULL DEFAULT 1 CHECK (count >= 1),
		client               text    NOT NULL DEFAULT '',
		tree_index           bigint  CHECK (tree_index IS NULL OR tree_index >= 0),
		leaf_hash            bytea   CHECK (leaf_hash IS NULL OR length(leaf_hash) = 32),
		PRIMARY KEY (log, seq),
		UNIQUE (log, tree_index)
	);
	CREATE TABLE audit_log_entries (
		log   text   NOT NULL,
		idx   bigint NOT NULL CHECK (idx >= 0),
		entry bytea  NOT NULL,
		PRIMARY KEY (log, idx)
	);
	CREATE TABLE audit_log_hashes (
		log  text   NOT NULL,
		idx  bigint NOT NULL CHECK (idx >= 0),
		hash bytea  NOT NULL CHECK (length(hash) = 32),
		PRIMARY KEY (log, idx)
	);
	CREATE TABLE audit_log_checkpoints (
		log  text   NOT NULL,
		size bigint NOT NULL CHECK (size >= 1),
		note bytea  NOT NULL,
		PRIMARY KEY (log, size)
	);
	CREATE TABLE audit_heartbeat (
		log             text   PRIMARY KEY,
		time_unix_micro bigint NOT NULL
	)`, MaxDetailLen),
}

const (
	pgCAS = `UPDATE audit_logs SET size = $2, seq = $3, checkpoint = $4
		WHERE log = $1 AND size = $5 AND seq = $6`
	pgInsertRecords = `INSERT INTO audit_records (log, seq, time_unix_micro, kind, outcome, wallet, bearer_sha256,
			audience, ttl_seconds, kid, jti, detail, host_asserted_wallet, count, client, tree_index, leaf_hash)
		SELECT $1, * FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[],
			$8::text[], $9::bigint[], $10::text[], $11::text[], $12::text[], $13::boolean[], $14::bigint[],
			$15::text[], $16::bigint[], $17::bytea[])`
	pgInsertEntries     = `INSERT INTO audit_log_entries (log, idx, entry) SELECT $1, * FROM unnest($2::bigint[], $3::bytea[])`
	pgInsertHashes      = `INSERT INTO audit_log_hashes (log, idx, hash) SELECT $1, * FROM unnest($2::bigint[], $3::bytea[])`
	pgInsertCheckpoints = `INSERT INTO audit_log_checkpoints (log, size, note) SELECT $1, * FROM unnest($2::bigint[], $3::bytea[])`
	pgSelectRecords     = `SELECT seq, time_unix_micro, kind, outcome, wallet, bearer_sha256, audience,
		ttl_seconds, kid, jti, detail, host_asserted_wallet, count, client, tree_index, leaf_hash
		FROM audit_records WHERE log = $1 AND seq > $2 ORDER BY seq LIMIT $3`
)

// errTipMoved is insert's error when the compare-and-swap on the log's tip
// found it moved: another store wrote this log, or a commit whose answer was
// lost did commit.
var errTipMoved = errors.New("the log's tip moved under the writer")

// Postgres is a Store in a PostgreSQL database that several hosts share:
// each writes its own log (named when it is opened) and reads every log in
// the database ([Postgres.LogReader]). It keeps the contract of [SQLite], with
// the same writer: one goroutine commits what concurrent Appends hand it in
// one transaction (group commit), and the records and log batches of a
// failed transaction all fail.
//
// Durability is the server's: every connection is refused unless
// synchronous_commit is on (or stronger) and the server runs with fsync on
// (see host/pgdb), so a commit returns only once its WAL is flushed. A lost
// connection or a server that stopped answering fails the transaction (each
// is bounded by PostgresTimeout) and every Append in it; the pool opens new
// connections, so the store works again once the server is back.
type Postgres struct {
	pool *pgxpool.Pool
	log  string // the log this store writes
	dsn  string // for redacting errors; never logged

	counted    *counted // Count's aggregates and their flushing
	closeOnce  sync.Once
	reqs       chan *appendRequest
	writerDone chan struct{}
	maxBatch   int
	stall      func()
	gapWait    time.Duration
	gapGrace   time.Duration
	// tip is the stored log's tip as this store last committed or read it.
	// Only the writer replaces it.
	tip atomic.Pointer[pgTip]
	gap atomic.Bool
	// stale is set when a transaction failed: it may have committed all
	// the same, so the writer reads the tip again before the next one.
	stale atomic.Bool
	// again is set by commit when it read a tip that moved while batches
	// waited: the writer retries them at once. Only the writer uses it.
	again bool

	mu     sync.RWMutex
	closed bool

	commits       atomic.Int64
	records       atomic.Int64
	failedRecords atomic.Int64
	logBatches    atomic.Int64
	logEntries    atomic.Int64
	tipMoved      atomic.Int64
}

var (
	_ Store = (*Postgres)(nil)
	_ Log   = (*Postgres)(nil)
	_ Logs  = (*Postgres)(nil)
)

// pgTip is a log's tip: logState and the seq of its last record.
type pgTip struct {
	logState
	seq int64
}

// OpenPostgres connects to the database at dsn (a postgres:// or
// postgresql:// URL), brings its schema up to date, and opens the log called
// logName ("" for the default log; see CheckLogName) for writing, creating
// it if missing. Of the options, WithMaxBatch, WithAggregateInterval,
// WithAggregateClients, WithLogGapWait and WithLogGapGrace apply, as they do
// to OpenSQLite.
//
// It refuses a server on which commits would not be durable, and a log
// whose tables disagree with each other. No error it returns contains the
// DSN's password. Close the store to stop its writer and close its pool.
func OpenPostgres(ctx context.Context, dsn, logName string, opts ...Option) (*Postgres, error) {
	cfg := sqliteConfig{maxBatch: DefaultMaxBatch, aggEvery: DefaultAggregateInterval,
		aggClients: DefaultAggregateClients, gapWait: DefaultLogGapWait, gapGrace: DefaultLogGapGrace}
	for _, o := range opts {
		o(&cfg)
	}
	switch {
	case cfg.maxBatch < 1 || cfg.maxBatch > maxMaxBatch:
		return nil, fmt.Errorf("audit: max batch is %d, must be between 1 and %d", cfg.maxBatch, maxMaxBatch)
	case cfg.aggEvery < time.Millisecond || cfg.aggEvery > 24*time.Hour:
		return nil, fmt.Errorf("audit: aggregate interval is %s, must be between 1ms and 24h", cfg.aggEvery)
	case cfg.aggClients < 1 || cfg.aggClients > 1_000_000:
		return nil, fmt.Errorf("audit: aggregate clients is %d, must be between 1 and 1000000", cfg.aggClients)
	case cfg.gapWait < time.Millisecond || cfg.gapWait > time.Minute:
		return nil, fmt.Errorf("audit: log gap wait is %s, must be between 1ms and 1m", cfg.gapWait)
	case cfg.gapGrace < 0 || cfg.gapGrace > 10*time.Millisecond:
		return nil, fmt.Errorf("audit: log gap grace is %s, must be between 0 and 10ms", cfg.gapGrace)
	}
	if err := CheckLogName(logName); err != nil {
		return nil, err
	}
	pool, err := pgdb.Open(ctx, dsn, DefaultPostgresMaxConns)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	p := &Postgres{
		pool:       pool,
		log:        logName,
		dsn:        dsn,
		reqs:       make(chan *appendRequest, max(cfg.maxBatch, DefaultMaxBatch)),
		writerDone: make(chan struct{}),
		maxBatch:   cfg.maxBatch,
		stall:      cfg.stall,
		gapWait:    cfg.gapWait,
		gapGrace:   cfg.gapGrace,
	}
	tip, err := p.open(ctx)
	if err != nil {
		pool.Close()
		return nil, pgdb.RedactError(err, dsn)
	}
	p.tip.Store(&tip)
	go groupWriter{reqs: p.reqs, maxBatch: p.maxBatch, gapGrace: p.gapGrace, stall: p.stall,
		size: func() int64 { return p.tip.Load().size }, commit: p.commit, retryNow: func() bool { return p.again }}.run(p.writerDone)
	p.counted = startCounted(cfg.aggClients, cfg.aggEvery, p.Append)
	return p, nil
}

// open migrates the schema, creates the log's row if missing, and reads and
// checks its tip.
func (p *Postgres) open(ctx context.Context) (pgTip, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := pgdb.Migrate(ctx, p.pool, "audit", pgSchemaSteps); err != nil {
		return pgTip{}, fmt.Errorf("audit: %w", err)
	}
	if _, err := p.pool.Exec(ctx, `INSERT INTO audit_logs (log) VALUES ($1) ON CONFLICT (log) DO NOTHING`, p.log); err != nil {
		return pgTip{}, fmt.Errorf("audit: failed to create the log %q: %w", p.log, err)
	}
	return p.loadTip(ctx, true)
}

type pgQuerier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// loadTip reads the log's tip and checks that its checkpoint names the tree
// its right edge makes. With full (at open) it also checks that the entries,
// the checkpoints and the records agree with the tip.
func (p *Postgres) loadTip(ctx context.Context, full bool) (pgTip, error) {
	tip := pgTip{logState: logState{edge: auditlog.HashMap{}}}
	if err := p.pool.QueryRow(ctx, `SELECT size, seq, checkpoint FROM audit_logs WHERE log = $1`, p.log).
		Scan(&tip.size, &tip.seq, &tip.checkpoint); err != nil {
		return pgTip{}, fmt.Errorf("audit: failed to read the tip of the log %q: %w", p.log, err)
	}
	if full {
		var n, last, maxSeq int64
		var note []byte
		if err := p.pool.QueryRow(ctx, `SELECT
				(SELECT count(*) FROM audit_log_entries WHERE log = $1),
				(SELECT coalesce(max(idx), -1) FROM audit_log_entries WHERE log = $1),
				(SELECT coalesce(max(seq), 0) FROM audit_records WHERE log = $1),
				(SELECT note FROM audit_log_checkpoints WHERE log = $1 AND size = $2)`, p.log, tip.size).
			Scan(&n, &last, &maxSeq, &note); err != nil {
			return pgTip{}, fmt.Errorf("audit: failed to check the log %q: %w", p.log, err)
		}
		if n != tip.size || last != n-1 {
			return pgTip{}, fmt.Errorf("audit: the log %q holds %d entries (the last at %d) but its tip says %d: the database was altered", p.log, n, last, tip.size)
		}
		if maxSeq > tip.seq {
			return pgTip{}, fmt.Errorf("audit: the log %q has a record with seq %d past its tip's %d: the database was altered", p.log, maxSeq, tip.seq)
		}
		if tip.size > 0 && !bytes.Equal(note, tip.checkpoint) {
			return pgTip{}, fmt.Errorf("audit: the checkpoint of the log %q's %d entries differs from its tip's: the database was altered", p.log, tip.size)
		}
	}
	if tip.size == 0 {
		return tip, nil
	}
	idx := auditlog.RightEdge(tip.size)
	hs, err := pgReadHashes(ctx, p.pool, p.log, idx)
	if err != nil {
		return pgTip{}, err
	}
	for i, x := range idx {
		tip.edge[x] = hs[i]
	}
	root, err := tlog.TreeHash(tip.size, tip.edge)
	c, cerr := checkpointTree(tip.checkpoint)
	if err != nil || cerr != nil || c.Tree.N != tip.size || c.Tree.Hash != root {
		return pgTip{}, fmt.Errorf("audit: the latest checkpoint of the log %q does not name the stored tree of %d entries: the database was altered", p.log, tip.size)
	}
	return tip, nil
}

// pgReadHashes reads the stored hashes of log, in the order asked.
func pgReadHashes(ctx context.Context, q pgQuerier, log string, indexes []int64) ([]tlog.Hash, error) {
	rows, err := q.Query(ctx, `SELECT idx, hash FROM audit_log_hashes WHERE log = $1 AND idx = ANY($2)`, log, indexes)
	if err != nil {
		return nil, fmt.Errorf("audit: failed to read log hashes: %w", err)
	}
	defer rows.Close()
	got := make(map[int64]tlog.Hash, len(indexes))
	for rows.Next() {
		var x int64
		var h []byte
		if err := rows.Scan(&x, &h); err != nil || len(h) != tlog.HashSize {
			return nil, fmt.Errorf("audit: failed to read a log hash: %v", err)
		}
		got[x] = tlog.Hash(h)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("audit: failed to read log hashes: %w", err)
	}
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		h, ok := got[x]
		if !ok {
			return nil, fmt.Errorf("audit: stored hash %d is not in the log", x)
		}
		out[i] = h
	}
	return out, nil
}

// pgReadEntries reads the entries [start, end) of log, every one stored.
func pgReadEntries(ctx context.Context, q pgQuerier, log string, start, end int64) ([][]byte, error) {
	rows, err := q.Query(ctx, `SELECT idx, entry FROM audit_log_entries WHERE log = $1 AND idx >= $2 AND idx < $3 ORDER BY idx`, log, start, end)
	if err != nil {
		return nil, fmt.Errorf("audit: failed to read log entries: %w", err)
	}
	defer rows.Close()
	out := make([][]byte, 0, end-start)
	for rows.Next() {
		var x int64
		var e []byte
		if err := rows.Scan(&x, &e); err != nil {
			return nil, fmt.Errorf("audit: failed to read a log entry: %w", err)
		}
		if x != start+int64(len(out)) {
			return nil, fmt.Errorf("audit: log entry %d is missing", start+int64(len(out)))
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("audit: failed to read log entries: %w", err)
	}
	if int64(len(out)) != end-start {
		return nil, fmt.Errorf("audit: ReadEntries [%d, %d): the log holds %d entries from %d", start, end, len(out), start)
	}
	return out, nil
}

// Append implements Store: it hands r to the writer and waits until the
// transaction holding it has committed, as SQLite.Append does.
func (p *Postgres) Append(ctx context.Context, r Record) (Record, error) {
	if err := ctx.Err(); err != nil {
		return Record{}, err
	}
	r, err := prepare(r, time.Now())
	if err != nil {
		return Record{}, err
	}
	req := &appendRequest{rec: r, done: make(chan appendResult, 1)}
	if r.Batch != nil {
		req.batch, req.deadline = r.Batch, time.Now().Add(p.gapWait)
		req.rec.Batch, r.Batch = nil, nil
	}
	if err := p.enqueue(ctx, req); err != nil {
		return Record{}, err
	}
	var res appendResult
	select {
	case res = <-req.done:
	case <-ctx.Done():
		select {
		case res = <-req.done:
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

func (p *Postgres) enqueue(ctx context.Context, req *appendRequest) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return ErrClosed
	}
	select {
	case p.reqs <- req:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// commit stores batch in one transaction and answers every request in it
// but those it returns (parked: their log batch must wait for earlier ones).
// When the compare-and-swap on the tip fails, it reads the tip again and
// retries: a batch the database already holds is then compared, not stored
// again, and one that another writer stored differently fails alone with
// ErrLogMismatch.
func (p *Postgres) commit(batch []*appendRequest) (parked []*appendRequest) {
	var res []appendResult
	var tip pgTip
	var stored int
	var err error
	if p.stale.Load() {
		err = p.reloadTip()
	}
	for attempt := 1; err == nil; attempt++ {
		res, tip, stored, err = p.insert(batch)
		if !errors.Is(err, errTipMoved) || attempt == maxCASAttempts {
			break
		}
		p.tipMoved.Add(1)
		err = p.reloadTip()
	}
	if err != nil {
		p.stale.Store(true)
		n := 0
		for _, req := range batch {
			if !req.batchOnly {
				n++
			}
		}
		p.failedRecords.Add(int64(n))
		err = pgdb.RedactError(fmt.Errorf("audit: failed to store record (batch of %d not committed): %w", n, err), p.dsn)
		for _, req := range batch {
			req.done <- appendResult{err: err}
		}
		return nil
	}
	if old := p.tip.Load(); tip.size != old.size || tip.seq != old.seq {
		if tip.size > old.size {
			p.logEntries.Add(tip.size - old.size)
			p.logBatches.Add(int64(stored))
			p.gap.Store(false)
		}
		p.tip.Store(&tip)
	}
	now := time.Now()
	// A batch waits for the batches before it, but another writer of this
	// log may have stored them (or others) meanwhile: read the tip again
	// before failing one, and whenever another writer has been seen.
	refreshed := false
	for i, req := range batch {
		if res[i].parked && (!now.Before(req.deadline) || p.tipMoved.Load() > 0) {
			before := p.tip.Load().size
			refreshed = p.reloadTip() == nil && p.tip.Load().size > before
			break
		}
	}
	p.again = refreshed
	for i, req := range batch {
		switch {
		case res[i].parked && (now.Before(req.deadline) || refreshed && now.Before(req.deadline.Add(p.gapWait))):
			// Past its deadline, a batch gets one more wait, no longer,
			// when the tip moved meanwhile.
			parked = append(parked, req)
			continue
		case res[i].parked:
			p.gap.Store(true)
			res[i] = appendResult{err: fmt.Errorf("audit: %w: the batch from entry %d waited %s for the store (at %d) to hold the entries before it",
				ErrLogGap, req.batch.Start, p.gapWait, tip.size)}
		}
		if res[i].err == nil && !req.batchOnly {
			p.records.Add(1)
		}
		req.done <- res[i]
	}
	return parked
}

// reloadTip reads the tip from the database, for the writer.
func (p *Postgres) reloadTip() error {
	ctx, cancel := context.WithTimeout(context.Background(), PostgresTimeout)
	defer cancel()
	t, err := p.loadTip(ctx, false)
	if err != nil {
		return err
	}
	old := p.tip.Load()
	if t.size < old.size || t.seq < old.seq {
		return fmt.Errorf("audit: the database holds %d entries and %d records of the log %q, fewer than the %d and %d this store committed: was it restored from an older backup?", t.size, t.seq, p.log, old.size, old.seq)
	}
	if t.size > old.size {
		p.gap.Store(false)
	}
	p.tip.Store(&t)
	p.stale.Store(false)
	return nil
}

// pgRows are the rows one transaction inserts, as the arrays unnest takes.
type pgRows struct {
	entryIdx, hashIdx, cpSize []int64
	entries, hashes, notes    [][]byte

	seq, micros, ttl, count                                          []int64
	kind, outcome, wallet, bearer, audience, kid, jti, detail, clien []string
	hostAsserted                                                     []bool
	treeIndex                                                        []*int64
	leafHash                                                         [][]byte
}

func (w *pgRows) record(seq int64, r Record) {
	w.seq = append(w.seq, seq)
	w.micros = append(w.micros, r.Time.UnixMicro())
	w.kind = append(w.kind, r.Kind)
	w.outcome = append(w.outcome, r.Outcome)
	w.wallet = append(w.wallet, r.Wallet)
	w.bearer = append(w.bearer, r.BearerSHA256)
	w.audience = append(w.audience, r.Audience)
	w.ttl = append(w.ttl, r.TTLSeconds)
	w.kid = append(w.kid, r.Kid)
	w.jti = append(w.jti, r.JTI)
	w.detail = append(w.detail, r.Detail)
	w.hostAsserted = append(w.hostAsserted, r.HostAssertedWallet)
	w.count = append(w.count, r.Count)
	w.clien = append(w.clien, r.Client)
	if r.Logged != nil {
		i := r.Logged.Index
		w.treeIndex = append(w.treeIndex, &i)
		w.leafHash = append(w.leafHash, bytes.Clone(r.Logged.LeafHash[:]))
	} else {
		w.treeIndex = append(w.treeIndex, nil)
		w.leafHash = append(w.leafHash, nil)
	}
}

// insert writes batch in one transaction on top of the current tip: the
// compare-and-swap that moves the tip first, then every row, all sent in
// one round trip. It returns each request's result and the tip after it,
// or errTipMoved if the tip in the database was not the one it built on.
func (p *Postgres) insert(batch []*appendRequest) (res []appendResult, tip pgTip, stored int, err error) {
	// Not a caller's context: one caller giving up must not fail the
	// others' records. PostgresTimeout bounds a server that stopped answering.
	ctx, cancel := context.WithTimeout(context.Background(), PostgresTimeout)
	defer cancel()
	old := *p.tip.Load()
	tip = old
	res = make([]appendResult, len(batch))
	var w pgRows
	for i, req := range batch {
		if req.batch != nil {
			var fits error
			next := tip.logState
			if next, res[i].parked, fits, err = p.storeBatch(ctx, tip.logState, *req.batch, &w); err != nil {
				return nil, old, 0, err
			}
			if next.size > tip.size {
				stored++
			}
			tip.logState = next
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
		tip.seq++
		res[i].seq = tip.seq
		w.record(tip.seq, req.rec)
	}
	if tip.size == old.size && tip.seq == old.seq {
		return res, tip, 0, nil // nothing to write: parked, refused, or stored already
	}
	tx, err := p.pool.Begin(ctx)
	if err != nil {
		return nil, old, 0, fmt.Errorf("failed to begin transaction: %w", err)
	}
	defer tx.Rollback(context.Background()) // after Commit, a no-op
	b := &pgx.Batch{}
	b.Queue(pgCAS, p.log, tip.size, tip.seq, tip.checkpoint, old.size, old.seq)
	if len(w.entryIdx) > 0 {
		b.Queue(pgInsertEntries, p.log, w.entryIdx, w.entries)
		b.Queue(pgInsertHashes, p.log, w.hashIdx, w.hashes)
		b.Queue(pgInsertCheckpoints, p.log, w.cpSize, w.notes)
	}
	if len(w.seq) > 0 {
		b.Queue(pgInsertRecords, p.log, w.seq, w.micros, w.kind, w.outcome, w.wallet, w.bearer, w.audience,
			w.ttl, w.kid, w.jti, w.detail, w.hostAsserted, w.count, w.clien, w.treeIndex, w.leafHash)
	}
	br := tx.SendBatch(ctx, b)
	tag, err := br.Exec()
	if err != nil {
		br.Close()
		return nil, old, 0, fmt.Errorf("failed to move the log's tip: %w", err)
	}
	if tag.RowsAffected() != 1 {
		br.Close()
		return nil, old, 0, errTipMoved
	}
	for range b.Len() - 1 {
		if _, err := br.Exec(); err != nil {
			br.Close()
			return nil, old, 0, fmt.Errorf("failed to insert: %w", err)
		}
	}
	if err := br.Close(); err != nil {
		return nil, old, 0, fmt.Errorf("failed to insert: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, old, 0, fmt.Errorf("failed to commit: %w", err)
	}
	p.commits.Add(1)
	return res, tip, stored, nil
}

// storeBatch adds b's rows to w if it extends tip, and returns the new tip,
// as SQLite's storeBatch does: a batch already stored is compared with the
// stored checkpoint, one past tip is parked, one that does not fit gets
// fits. err is a database error.
func (p *Postgres) storeBatch(ctx context.Context, tip logState, b protocol.AuditBatch, w *pgRows) (next logState, parked bool, fits, err error) {
	end := b.Start + int64(len(b.Entries))
	switch {
	case b.Start > tip.size:
		return tip, true, nil, nil
	case b.Start < tip.size:
		var note []byte
		switch {
		case end > tip.size:
		case end == tip.size:
			note = tip.checkpoint
		default:
			// Rows below the tip never change: read them outside the
			// transaction.
			err := p.pool.QueryRow(ctx, `SELECT note FROM audit_log_checkpoints WHERE log = $1 AND size = $2`, p.log, end).Scan(&note)
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return tip, false, nil, fmt.Errorf("failed to read a checkpoint: %w", err)
			}
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
	for i, e := range b.Entries {
		w.entryIdx = append(w.entryIdx, b.Start+int64(i))
		w.entries = append(w.entries, e)
	}
	for k, h := range t.hashes {
		w.hashIdx = append(w.hashIdx, k)
		w.hashes = append(w.hashes, bytes.Clone(h[:]))
	}
	w.cpSize = append(w.cpSize, end)
	w.notes = append(w.notes, b.Checkpoint)
	return t.next, false, nil, nil
}

// List implements Store: the records of this store's log.
func (p *Postgres) List(ctx context.Context, afterSeq int64, limit int) ([]Record, error) {
	limit, err := listLimit(afterSeq, limit)
	if err != nil {
		return nil, err
	}
	if err := p.readable(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, PostgresTimeout)
	defer cancel()
	rows, err := p.pool.Query(ctx, pgSelectRecords, p.log, afterSeq, limit)
	if err != nil {
		return nil, p.redact(fmt.Errorf("audit: failed to list records: %w", err))
	}
	defer rows.Close()
	var out []Record
	for rows.Next() {
		var r Record
		var micros int64
		var treeIndex *int64
		var leafHash []byte
		if err := rows.Scan(&r.Seq, &micros, &r.Kind, &r.Outcome, &r.Wallet, &r.BearerSHA256,
			&r.Audience, &r.TTLSeconds, &r.Kid, &r.JTI, &r.Detail, &r.HostAssertedWallet, &r.Count, &r.Client,
			&treeIndex, &leafHash); err != nil {
			return nil, p.redact(fmt.Errorf("audit: failed to read record: %w", err))
		}
		if treeIndex != nil && len(leafHash) == tlog.HashSize {
			r.Logged = &Logged{Index: *treeIndex, LeafHash: tlog.Hash(leafHash)}
		}
		r.Time = time.UnixMicro(micros).UTC()
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, p.redact(fmt.Errorf("audit: failed to list records: %w", err))
	}
	return out, nil
}

// Ping implements Store: it commits a transaction that rewrites this log's
// heartbeat row and reads its tip, so it fails (wrapping ErrNotWritable)
// when the server cannot be reached or written, and when the database
// holds fewer entries of this log than this store committed (a restore
// from an older backup, say).
func (p *Postgres) Ping(ctx context.Context) error {
	if err := p.readable(); err != nil {
		return err
	}
	if p.gap.Load() {
		return fmt.Errorf("audit: %w", ErrLogGap)
	}
	ctx, cancel := context.WithTimeout(ctx, PostgresTimeout)
	defer cancel()
	size, err := p.heartbeat(ctx)
	if err != nil {
		return p.redact(fmt.Errorf("audit: %w: %w", ErrNotWritable, err))
	}
	if have := p.tip.Load().size; size < have {
		return fmt.Errorf("audit: %w: the database holds %d entries of the log %q, fewer than the %d this host stored: was it restored from an older backup?", ErrNotWritable, size, p.log, have)
	}
	return nil
}

func (p *Postgres) heartbeat(ctx context.Context) (int64, error) {
	tx, err := p.pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("failed to begin transaction: %w", err)
	}
	defer tx.Rollback(context.Background())
	b := &pgx.Batch{}
	b.Queue(`INSERT INTO audit_heartbeat (log, time_unix_micro) VALUES ($1, $2)
		ON CONFLICT (log) DO UPDATE SET time_unix_micro = excluded.time_unix_micro`, p.log, time.Now().UnixMicro())
	b.Queue(`SELECT size FROM audit_logs WHERE log = $1`, p.log)
	br := tx.SendBatch(ctx, b)
	if _, err := br.Exec(); err != nil {
		br.Close()
		return 0, fmt.Errorf("failed to write the heartbeat: %w", err)
	}
	var size int64
	if err := br.QueryRow().Scan(&size); err != nil {
		br.Close()
		return 0, fmt.Errorf("failed to read the log's tip: %w", err)
	}
	if err := br.Close(); err != nil {
		return 0, fmt.Errorf("failed to write the heartbeat: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("failed to commit the heartbeat: %w", err)
	}
	return size, nil
}

func (p *Postgres) redact(err error) error { return pgdb.RedactError(err, p.dsn) }

// Count implements Store, as SQLite.Count does.
func (p *Postgres) Count(r Record) error {
	return p.counted.count(r)
}

// Flush appends the aggregates of everything counted so far and starts a
// new interval.
func (p *Postgres) Flush(ctx context.Context) error {
	return p.counted.flush(ctx)
}

// Stats returns the writer's counters. Commits counts the transactions that
// wrote; see also TipMoved.
func (p *Postgres) Stats() Stats {
	return Stats{
		Commits:       p.commits.Load(),
		Records:       p.records.Load(),
		FailedRecords: p.failedRecords.Load(),
		LogBatches:    p.logBatches.Load(),
		LogEntries:    p.logEntries.Load(),
	}
}

// TipMoved is how many transactions found the log's tip moved by another
// writer (or by a commit whose answer was lost) and were retried.
func (p *Postgres) TipMoved() int64 { return p.tipMoved.Load() }

// Close implements Store: it appends the pending aggregates, lets the
// writer commit everything handed to it, then closes the pool.
func (p *Postgres) Close() error {
	p.closeOnce.Do(func() {
		p.counted.stop()
		p.mu.Lock()
		p.closed = true
		close(p.reqs)
		p.mu.Unlock()
		<-p.writerDone
		p.pool.Close()
	})
	return nil
}

func (p *Postgres) readable() error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return ErrClosed
	}
	return nil
}

// AppendBatch implements Log.
func (p *Postgres) AppendBatch(ctx context.Context, b protocol.AuditBatch) error {
	req := &appendRequest{batch: &b, batchOnly: true, deadline: time.Now().Add(p.gapWait), done: make(chan appendResult, 1)}
	if err := p.enqueue(ctx, req); err != nil {
		return err
	}
	select {
	case res := <-req.done:
		return res.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// LogSize implements Log.
func (p *Postgres) LogSize() int64 { return p.tip.Load().size }

// ResumeRequest implements Log.
func (p *Postgres) ResumeRequest(ctx context.Context) (protocol.AuditResumeRequest, error) {
	return p.tip.Load().resumeRequest(), nil
}

// Checkpoint implements LogReader.
func (p *Postgres) Checkpoint(ctx context.Context) ([]byte, error) {
	if err := p.readable(); err != nil {
		return nil, err
	}
	return p.tip.Load().checkpoint, nil
}

// ReadHashes implements LogReader.
func (p *Postgres) ReadHashes(ctx context.Context, indexes []int64) ([]tlog.Hash, error) {
	return pgLogReader{p: p, name: p.log}.ReadHashes(ctx, indexes)
}

// ReadEntries implements LogReader.
func (p *Postgres) ReadEntries(ctx context.Context, start, end int64) ([][]byte, error) {
	return pgLogReader{p: p, name: p.log}.ReadEntries(ctx, start, end)
}

// OwnLog implements Logs.
func (p *Postgres) OwnLog() string { return p.log }

// LogReader implements Logs: it reads the log called name, this store's own
// or another host's. The own log's reader is the store itself; another's
// reads its tip from the database each time.
func (p *Postgres) LogReader(name string) (LogReader, error) {
	if err := CheckLogName(name); err != nil {
		return nil, err
	}
	if name == p.log {
		return p, nil
	}
	return pgLogReader{p: p, name: name}, nil
}

// LogNames lists the logs in the database, in name order ("" first).
func (p *Postgres) LogNames(ctx context.Context) ([]string, error) {
	if err := p.readable(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, PostgresTimeout)
	defer cancel()
	rows, err := p.pool.Query(ctx, `SELECT log FROM audit_logs ORDER BY log`)
	if err != nil {
		return nil, p.redact(fmt.Errorf("audit: failed to list the logs: %w", err))
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, p.redact(fmt.Errorf("audit: failed to list the logs: %w", err))
	}
	return names, nil
}

// pgLogReader reads one log of a Postgres store's database.
type pgLogReader struct {
	p    *Postgres
	name string
}

// Checkpoint implements LogReader: the log's latest checkpoint, nil while it
// is empty, an error wrapping ErrUnknownLog if it is not in the database.
func (r pgLogReader) Checkpoint(ctx context.Context) ([]byte, error) {
	if err := r.p.readable(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, PostgresTimeout)
	defer cancel()
	var cp []byte
	err := r.p.pool.QueryRow(ctx, `SELECT checkpoint FROM audit_logs WHERE log = $1`, r.name).Scan(&cp)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, fmt.Errorf("audit: %w: %q", ErrUnknownLog, r.name)
	case err != nil:
		return nil, r.p.redact(fmt.Errorf("audit: failed to read the checkpoint of the log %q: %w", r.name, err))
	}
	return cp, nil
}

// ReadHashes implements LogReader.
func (r pgLogReader) ReadHashes(ctx context.Context, indexes []int64) ([]tlog.Hash, error) {
	if err := r.p.readable(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, PostgresTimeout)
	defer cancel()
	hs, err := pgReadHashes(ctx, r.p.pool, r.name, indexes)
	return hs, r.p.redact(err)
}

// ReadEntries implements LogReader.
func (r pgLogReader) ReadEntries(ctx context.Context, start, end int64) ([][]byte, error) {
	if err := readEntriesRange(start, end); err != nil {
		return nil, err
	}
	if err := r.p.readable(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, PostgresTimeout)
	defer cancel()
	es, err := pgReadEntries(ctx, r.p.pool, r.name, start, end)
	return es, r.p.redact(err)
}
