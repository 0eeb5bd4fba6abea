package audit

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/agentkeys/broker/host/pgdb/pgtest"
	"github.com/agentkeys/broker/shared/protocol"
)

// The contract tests of store_test.go and log_test.go run against
// PostgreSQL too, each in a schema of its own (see pgtest).
func init() {
	stores = append(stores, struct {
		name string
		open func(t *testing.T) Store
	}{"Postgres", func(t *testing.T) Store { return openTestPostgres(t, pgtest.New(t).DSN, "") }})
	logStores = append(logStores, struct {
		name string
		open func(t *testing.T) Store
	}{"postgres", func(t *testing.T) Store {
		return openTestPostgres(t, pgtest.New(t).DSN, "", WithLogGapWait(200*time.Millisecond))
	}})
}

// openTestPostgres opens the log called name in the database at dsn, closed
// when t ends.
func openTestPostgres(t testing.TB, dsn, name string, opts ...Option) *Postgres {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := OpenPostgres(ctx, dsn, name, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestPostgresCAS: two stores (two pools, as two hosts) writing the same log
// at once. Given the batches of one history, each batch is stored once and
// both stores' Appends succeed; given two different histories, every index
// holds the batch of one history only, and each Append of the other fails
// with ErrLogMismatch.
func TestPostgresCAS(t *testing.T) {
	ctx := context.Background()
	t.Run("same history", func(t *testing.T) {
		db := pgtest.New(t)
		a, b := openTestPostgres(t, db.DSN, "shared"), openTestPostgres(t, db.DSN, "shared")
		tl := newTestLog(t)
		var batches []protocol.AuditBatch
		for range 20 {
			batches = append(batches, tl.batch(t, 1+rand.IntN(4)))
		}
		var wg sync.WaitGroup
		for _, s := range []*Postgres{a, b} {
			wg.Go(func() {
				for _, bt := range batches {
					if err := s.AppendBatch(ctx, bt); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		if a.LogSize() != tl.n || b.LogSize() != tl.n {
			t.Fatalf("log sizes %d and %d, want %d", a.LogSize(), b.LogSize(), tl.n)
		}
		entries, err := a.ReadEntries(ctx, 0, tl.n)
		if err != nil {
			t.Fatal(err)
		}
		for i, e := range entries {
			if !bytes.Equal(e, tl.entry(int64(i))) {
				t.Fatalf("entry %d = %s", i, e)
			}
		}
		// Both stores go on from the shared tip.
		next := tl.batch(t, 1)
		if _, err := b.Append(ctx, loggedRecord(next, next.Start)); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Append(ctx, validRecord()); err != nil {
			t.Fatal(err)
		}
		recs, err := a.List(ctx, 0, 10)
		if err != nil || len(recs) != 2 || recs[0].Seq != 1 || recs[1].Seq != 2 {
			t.Fatalf("List: %v, %+v", err, recs)
		}
	})
	t.Run("two histories", func(t *testing.T) {
		db := pgtest.New(t)
		a, b := openTestPostgres(t, db.DSN, "shared", WithLogGapWait(time.Second)), openTestPostgres(t, db.DSN, "shared", WithLogGapWait(time.Second))
		la, lb := newTestLog(t), newTestLog(t)
		lb.tag = `,"b":1`
		const rounds = 30
		var ba, bb []protocol.AuditBatch
		for range rounds {
			ba, bb = append(ba, la.batch(t, 2)), append(bb, lb.batch(t, 2))
		}
		start := make(chan struct{})
		errs := make([][]error, 2)
		var wg sync.WaitGroup
		for k, job := range []struct {
			s  *Postgres
			bs []protocol.AuditBatch
		}{{a, ba}, {b, bb}} {
			wg.Go(func() {
				<-start
				for _, bt := range job.bs {
					_, err := job.s.Append(ctx, loggedRecord(bt, bt.Start))
					errs[k] = append(errs[k], err)
				}
			})
		}
		close(start)
		wg.Wait()
		// Which history each index holds, from the database.
		entries, err := openTestPostgres(t, db.DSN, "shared").ReadEntries(ctx, 0, 2*rounds)
		if err != nil {
			t.Fatal(err)
		}
		ok := 0
		for i := range rounds {
			e := entries[2*i]
			var winner int
			switch {
			case bytes.Equal(e, la.entry(int64(2*i))):
				winner = 0
			case bytes.Equal(e, lb.entry(int64(2*i))):
				winner = 1
			default:
				t.Fatalf("entry %d is neither history's: %s", 2*i, e)
			}
			if !bytes.Equal(entries[2*i+1], []*testLog{la, lb}[winner].entry(int64(2*i+1))) {
				t.Fatalf("batch %d mixes the histories", i)
			}
			if errs[winner][i] != nil {
				t.Errorf("batch %d: the stored history's Append failed: %v", i, errs[winner][i])
			}
			if loser := errs[1-winner][i]; !errors.Is(loser, ErrLogMismatch) {
				t.Errorf("batch %d: the other history's Append = %v, want ErrLogMismatch", i, loser)
			}
			ok++
		}
		var n int
		db.Scan(t, `SELECT count(*) FROM audit_log_entries WHERE log = 'shared'`, &n)
		if n != 2*rounds {
			t.Fatalf("%d entries stored, want %d", n, 2*rounds)
		}
		if a.TipMoved()+b.TipMoved() == 0 {
			t.Log("the two stores never raced (the stored batches are right all the same)")
		}
	})
}

// TestPostgresTwoLogs: two logs in one database are independent (sizes,
// records, seqs), and each store reads the other's log by name.
func TestPostgresTwoLogs(t *testing.T) {
	ctx := context.Background()
	db := pgtest.New(t)
	a, b := openTestPostgres(t, db.DSN, ""), openTestPostgres(t, db.DSN, "host-b")
	la, lb := newTestLog(t), newTestLog(t)
	lb.tag = `,"b":1`
	for range 3 {
		bt := la.batch(t, 2)
		if _, err := a.Append(ctx, loggedRecord(bt, bt.Start)); err != nil {
			t.Fatal(err)
		}
	}
	bt := lb.batch(t, 5)
	rb, err := b.Append(ctx, loggedRecord(bt, 4))
	if err != nil {
		t.Fatal(err)
	}
	if rb.Seq != 1 || a.LogSize() != 6 || b.LogSize() != 5 {
		t.Fatalf("seq %d, sizes %d and %d", rb.Seq, a.LogSize(), b.LogSize())
	}
	for _, tt := range []struct {
		s      *Postgres
		name   string
		want   *testLog
		size   int64
		nrecs  int
		exists bool
	}{
		{a, "host-b", lb, 5, 1, true},
		{b, "", la, 6, 3, true},
		{a, "", la, 6, 3, true},
		{b, "nobody", nil, 0, 0, false},
	} {
		r, err := tt.s.LogReader(tt.name)
		if err != nil {
			t.Fatal(err)
		}
		cp, err := r.Checkpoint(ctx)
		if !tt.exists {
			if !errors.Is(err, ErrUnknownLog) {
				t.Errorf("%q: Checkpoint = %v, want ErrUnknownLog", tt.name, err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		c, err := checkpointTree(cp)
		if err != nil || c.Tree.N != tt.size {
			t.Fatalf("%q: checkpoint %v, size %d", tt.name, err, c.Tree.N)
		}
		es, err := r.ReadEntries(ctx, 0, tt.size)
		if err != nil || !bytes.Equal(es[tt.size-1], tt.want.entry(tt.size-1)) {
			t.Fatalf("%q: entries %v", tt.name, err)
		}
		if _, err := r.ReadEntries(ctx, 0, tt.size+1); err == nil {
			t.Fatalf("%q: read past the log", tt.name)
		}
		hs, err := r.ReadHashes(ctx, []int64{tlog.StoredHashIndex(0, tt.size-1)})
		if err != nil || hs[0] != tlog.RecordHash(tt.want.entry(tt.size-1)) {
			t.Fatalf("%q: hashes %v", tt.name, err)
		}
	}
	if _, err := a.LogReader("Bad_Name"); err == nil {
		t.Fatal("an invalid log name was accepted")
	}
	recs, _ := a.List(ctx, 0, 10)
	if len(recs) != 3 {
		t.Fatalf("the default log lists %d records, want its own 3", len(recs))
	}
	names, err := a.LogNames(ctx)
	if err != nil || !slices.Equal(names, []string{"", "host-b"}) {
		t.Fatalf("LogNames = %q, %v", names, err)
	}
}

// TestPostgresReopen: a log survives a reopen and goes on; a log whose rows
// were altered is refused.
func TestPostgresReopen(t *testing.T) {
	ctx := context.Background()
	db := pgtest.New(t)
	s := openTestPostgres(t, db.DSN, "a")
	tl := newTestLog(t)
	for range 4 {
		b := tl.batch(t, 3)
		if _, err := s.Append(ctx, loggedRecord(b, b.Start)); err != nil {
			t.Fatal(err)
		}
	}
	want, _ := s.ResumeRequest(ctx)
	s.Close()
	s = openTestPostgres(t, db.DSN, "a")
	got, _ := s.ResumeRequest(ctx)
	if s.LogSize() != 12 || !bytes.Equal(got.Checkpoint, want.Checkpoint) || !bytes.Equal(got.Hashes, want.Hashes) {
		t.Fatalf("after reopen: size %d", s.LogSize())
	}
	r, err := s.Append(ctx, validRecord())
	if err != nil || r.Seq != 5 {
		t.Fatalf("continuing after reopen: seq %d, %v", r.Seq, err)
	}
	s.Close()
	for name, stmt := range map[string]string{
		"entry removed":  `DELETE FROM audit_log_entries WHERE log = 'a' AND idx = 7`,
		"hash changed":   `UPDATE audit_log_hashes SET hash = sha256(hash) WHERE log = 'a' AND idx = (SELECT max(idx) FROM audit_log_hashes WHERE log = 'a')`,
		"record added":   `INSERT INTO audit_records SELECT log, seq + 100, time_unix_micro, kind, outcome, wallet, bearer_sha256, audience, ttl_seconds, kid, jti, detail, host_asserted_wallet, count, client, NULL, NULL FROM audit_records WHERE log = 'a' AND seq = 5`,
		"tip shortened":  `UPDATE audit_logs SET size = 9, checkpoint = (SELECT note FROM audit_log_checkpoints WHERE log = 'a' AND size = 9) WHERE log = 'a'`,
		"checkpoint cut": `UPDATE audit_logs SET checkpoint = substring(checkpoint for 20) WHERE log = 'a'`,
	} {
		t.Run(name, func(t *testing.T) {
			db := pgtest.New(t)
			s := openTestPostgres(t, db.DSN, "a")
			tl := newTestLog(t)
			for range 4 {
				b := tl.batch(t, 3)
				if _, err := s.Append(ctx, loggedRecord(b, b.Start)); err != nil {
					t.Fatal(err)
				}
			}
			s.Append(ctx, validRecord())
			s.Close()
			db.Exec(t, stmt)
			if s, err := OpenPostgres(ctx, db.DSN, "a"); err == nil {
				s.Close()
				t.Fatal("opened an altered log")
			}
		})
	}
}

// TestPostgresRefusesNonDurable: a connection on which commits would not be
// durable is refused.
func TestPostgresRefusesNonDurable(t *testing.T) {
	db := pgtest.New(t)
	ctx := context.Background()
	for _, param := range []string{"synchronous_commit=off", "options=-c%20synchronous_commit%3Doff"} {
		s, err := OpenPostgres(ctx, db.DSN+"&"+param, "")
		if err == nil {
			s.Close()
			t.Fatalf("%s: opened", param)
		}
		if !strings.Contains(err.Error(), "synchronous_commit is off") {
			t.Errorf("%s: %v, want an error about synchronous_commit", param, err)
		}
	}
	s := openTestPostgres(t, db.DSN+"&synchronous_commit=remote_write", "")
	if _, err := s.Append(ctx, validRecord()); err != nil {
		t.Fatal(err)
	}
}

// TestPostgresPasswordNotInErrors: the DSN's password appears in no error.
func TestPostgresPasswordNotInErrors(t *testing.T) {
	const pw = "Sup3r-s3cret-pw"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, dsn := range []string{
		"postgres://agentkeys:" + pw + "@127.0.0.1:1/audit?connect_timeout=5",
		"postgresql://agentkeys@127.0.0.1:1/audit?password=" + pw + "&connect_timeout=5",
		"postgres://agentkeys:" + pw + "@127.0.0.1:1/audit?sslmode=bogus",
		"postgres://agentkeys:" + pw + "@[::1/audit",
	} {
		_, err := OpenPostgres(ctx, dsn, "")
		if err == nil {
			t.Fatalf("opened %s", dsn)
		}
		if strings.Contains(err.Error(), pw) {
			t.Errorf("the error shows the password: %v", err)
		}
	}
}

// TestPostgresConnectionLoss: with the server unreachable, Append and Ping
// fail and nothing is reported stored; once it is back, the store works
// again without a restart.
func TestPostgresConnectionLoss(t *testing.T) {
	ctx := context.Background()
	db := pgtest.New(t)
	proxy := db.NewProxy(t)
	s := openTestPostgres(t, proxy.DSN, "")
	tl := newTestLog(t)
	b0 := tl.batch(t, 2)
	if _, err := s.Append(ctx, loggedRecord(b0, 0)); err != nil {
		t.Fatal(err)
	}
	proxy.Stop()
	b1 := tl.batch(t, 2)
	if _, err := s.Append(ctx, loggedRecord(b1, 2)); err == nil {
		t.Fatal("Append succeeded with the server unreachable")
	}
	if _, err := s.Append(ctx, validRecord()); err == nil {
		t.Fatal("Append succeeded with the server unreachable")
	}
	if err := s.Ping(ctx); !errors.Is(err, ErrNotWritable) {
		t.Fatalf("Ping with the server unreachable = %v, want ErrNotWritable", err)
	}
	if s.LogSize() != 2 {
		t.Fatalf("log size %d after failed Appends, want 2", s.LogSize())
	}
	if err := proxy.Start(); err != nil {
		t.Fatal(err)
	}
	waitRecovered(t, s)
	if _, err := s.Append(ctx, loggedRecord(b1, 3)); err != nil {
		t.Fatal(err)
	}
	if s.LogSize() != 4 {
		t.Fatalf("log size %d, want 4", s.LogSize())
	}
	recs, err := s.List(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	// Record 1 and the failed Appends' records are not stored; waitRecovered
	// added records of its own.
	for _, r := range recs {
		if r.Logged != nil && r.Logged.Index == 2 {
			t.Fatalf("a failed Append's record is stored: %+v", r)
		}
	}
}

// TestPostgresBackendTerminated: the server process serving the writer's
// transaction is terminated mid-transaction (pg_terminate_backend, as a
// restart would): that Append fails and stores nothing; the next ones
// succeed on a new connection.
func TestPostgresBackendTerminated(t *testing.T) {
	ctx := context.Background()
	db := pgtest.New(t)
	s := openTestPostgres(t, db.DSN, "")
	tl := newTestLog(t)
	b0 := tl.batch(t, 1)
	if _, err := s.Append(ctx, loggedRecord(b0, 0)); err != nil {
		t.Fatal(err)
	}
	// Hold the log's row from a connection of another application, so the
	// writer's compare-and-swap waits for it.
	lock := pgtest.Begin(t, db.BaseDSN())
	if _, err := lock.Exec(ctx, `SELECT * FROM `+db.Schema+`.audit_logs WHERE log = '' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	b1 := tl.batch(t, 1)
	done := make(chan error, 1)
	go func() { _, err := s.Append(ctx, loggedRecord(b1, 1)); done <- err }()
	waitFor(func() bool { return db.Waiting(t) > 0 })
	if n := db.Terminate(t); n == 0 {
		t.Fatal("no backend terminated")
	}
	if err := <-done; err == nil {
		t.Fatal("Append succeeded although its transaction's server process was terminated")
	}
	lock.Rollback(ctx)
	if s.LogSize() != 1 {
		t.Fatalf("log size %d, want 1", s.LogSize())
	}
	waitRecovered(t, s)
	if _, err := s.Append(ctx, loggedRecord(b1, 1)); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	var n int
	db.Scan(t, `SELECT count(*) FROM audit_records WHERE tree_index = 1`, &n)
	if n != 1 {
		t.Fatalf("%d records of entry 1, want 1", n)
	}
}

// waitRecovered appends until an Append succeeds, as a host's callers do:
// the pool drops its broken connections as it meets them. Bounded: 100
// attempts, far more than the pool's connections.
func waitRecovered(t *testing.T, s Store) {
	t.Helper()
	var err error
	for range 100 {
		if _, err = s.Append(context.Background(), validRecord()); err == nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("the store did not recover: %v", err)
}

// BenchmarkPostgresAppendSerial, BenchmarkPostgresAppendParallel and
// BenchmarkPostgresAppendLogged are bench_test.go's and log_test.go's
// benchmarks against PostgreSQL (AGENTKEYS_TEST_POSTGRES).
func BenchmarkPostgresAppendSerial(b *testing.B) {
	benchmarkPostgres(b, false, false)
}

func BenchmarkPostgresAppendParallel(b *testing.B) {
	benchmarkPostgres(b, true, false)
}

func BenchmarkPostgresAppendParallelNoGroupCommit(b *testing.B) {
	benchmarkPostgres(b, true, false, WithMaxBatch(1))
}

func BenchmarkPostgresAppendLogged(b *testing.B) {
	benchmarkPostgres(b, true, true)
}

func benchmarkPostgres(b *testing.B, parallel, logged bool, opts ...Option) {
	s := openTestPostgres(b, pgtest.New(b).DSN, "", opts...)
	ctx := context.Background()
	tl := newTestLog(b)
	var mu sync.Mutex
	one := func() error {
		r := validRecord()
		if logged {
			mu.Lock()
			batch := tl.batch(b, 1)
			mu.Unlock()
			r = loggedRecord(batch, batch.Start)
		}
		_, err := s.Append(ctx, r)
		return err
	}
	b.ReportAllocs()
	b.ResetTimer()
	if parallel {
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := one(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	} else {
		for b.Loop() {
			if err := one(); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	if st := s.Stats(); st.Commits > 0 {
		b.ReportMetric(float64(st.Records)/float64(st.Commits), "records/commit")
	}
}

// TestPostgresPing: Ping commits the heartbeat, and fails (ErrNotWritable)
// when it cannot, and when the database holds less of the log than the
// store committed (restored from an older backup): then Appends fail too.
func TestPostgresPing(t *testing.T) {
	ctx := context.Background()
	t.Run("heartbeat", func(t *testing.T) {
		db := pgtest.New(t)
		s := openTestPostgres(t, db.DSN, "a")
		if err := s.Ping(ctx); err != nil {
			t.Fatal(err)
		}
		var n int
		db.Scan(t, `SELECT count(*) FROM audit_heartbeat WHERE log = 'a'`, &n)
		if n != 1 {
			t.Fatalf("%d heartbeat rows, want 1", n)
		}
		db.Exec(t, `DROP TABLE audit_heartbeat`)
		if err := s.Ping(ctx); !errors.Is(err, ErrNotWritable) {
			t.Fatalf("Ping without its table = %v, want ErrNotWritable", err)
		}
	})
	t.Run("older database", func(t *testing.T) {
		db := pgtest.New(t)
		s := openTestPostgres(t, db.DSN, "a")
		tl := newTestLog(t)
		for range 2 {
			b := tl.batch(t, 2)
			if _, err := s.Append(ctx, loggedRecord(b, b.Start)); err != nil {
				t.Fatal(err)
			}
		}
		// The database as it was after the first batch.
		for _, stmt := range []string{
			`DELETE FROM audit_log_entries WHERE idx >= 2`,
			`DELETE FROM audit_log_hashes WHERE idx >= 3`,
			`DELETE FROM audit_log_checkpoints WHERE size > 2`,
			`DELETE FROM audit_records WHERE seq > 1`,
			`UPDATE audit_logs SET size = 2, seq = 1, checkpoint = (SELECT note FROM audit_log_checkpoints WHERE size = 2)`,
		} {
			db.Exec(t, stmt)
		}
		if err := s.Ping(ctx); !errors.Is(err, ErrNotWritable) || !strings.Contains(err.Error(), "older backup") {
			t.Fatalf("Ping on an older database = %v", err)
		}
		b := tl.batch(t, 1)
		if _, err := s.Append(ctx, loggedRecord(b, b.Start)); err == nil {
			t.Fatal("Append on an older database succeeded")
		}
		if _, err := s.Append(ctx, validRecord()); err == nil {
			t.Fatal("Append on an older database succeeded")
		}
		var n int
		db.Scan(t, `SELECT count(*) FROM audit_records`, &n)
		if n != 1 {
			t.Fatalf("%d records, want the 1 left", n)
		}
	})
}
