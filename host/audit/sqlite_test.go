package audit

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func openTestSQLite(t testing.TB, opts ...Option) *SQLite {
	t.Helper()
	s, err := OpenSQLite(filepath.Join(t.TempDir(), "audit.db"), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// stall holds the SQLite writer at its first batch (see
// testingOnlyStallWriter) until Release.
type stall struct {
	entered     chan struct{} // closed once the writer is held
	release     chan struct{}
	once        sync.Once
	releaseOnce sync.Once
}

func newStall() *stall {
	return &stall{entered: make(chan struct{}), release: make(chan struct{})}
}

func (st *stall) option() Option {
	return testingOnlyStallWriter(func() {
		st.once.Do(func() {
			close(st.entered)
			<-st.release
		})
	})
}

func (st *stall) Release() { st.releaseOnce.Do(func() { close(st.release) }) }

// openStalledSQLite opens a store whose writer st holds at its first batch.
// If the test fails while the writer is held, cleanup releases it before
// closing the store, so the failure is reported instead of hanging Close.
func openStalledSQLite(t *testing.T, st *stall, opts ...Option) *SQLite {
	t.Helper()
	s := openTestSQLite(t, append(opts, st.option())...)
	t.Cleanup(st.Release) // runs before openTestSQLite's Close
	return s
}

// waitFor polls cond until it holds. It makes no claim about how long that
// takes; the test binary's timeout bounds it.
func waitFor(cond func() bool) {
	for !cond() {
		time.Sleep(time.Millisecond)
	}
}

// queueAppends starts n Appends of recordN(i) while st holds the writer, and
// returns once the writer holds one and the other n-1 wait in its queue.
// wait returns each Append's result.
func queueAppends(t *testing.T, s *SQLite, st *stall, n int) (wait func() ([]Record, []error)) {
	t.Helper()
	recs := make([]Record, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { recs[i], errs[i] = s.Append(context.Background(), recordN(i)) })
	}
	<-st.entered
	waitFor(func() bool { return len(s.reqs) == n-1 })
	return func() ([]Record, []error) {
		wg.Wait()
		return recs, errs
	}
}

func TestSQLiteReopen(t *testing.T) {
	ctx := context.Background()
	// A directory that does not exist yet, with characters that mean
	// something in a URI, to check both the 0700 creation and the escaping.
	parent := filepath.Join(t.TempDir(), "new dir #1?x=y&%41")
	path := filepath.Join(parent, "sub", "audit.db")

	inputs := []Record{
		validRecord(),
		{
			Time:    time.Date(2026, 2, 3, 4, 5, 6, 7, time.FixedZone("UTC-7", -7*3600)),
			Kind:    KindSession,
			Outcome: OutcomeUnauthorized,
			Wallet:  WalletUnknown,
			Detail:  "session token signature invalid",
		},
		{
			Kind:               KindAWSCreds,
			Outcome:            OutcomeSTSError,
			Wallet:             testWallet,
			BearerSHA256:       HashBearer("b"),
			TTLSeconds:         -1,
			Detail:             "AccessDenied: ünïcødé ✓ \n second line",
			HostAssertedWallet: true,
		},
	}

	s, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	var appended []Record
	for _, in := range inputs {
		r, err := s.Append(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		appended = append(appended, r)
	}
	for _, f := range []struct {
		path string
		mode fs.FileMode
	}{
		{parent, 0o700 | fs.ModeDir},
		{filepath.Dir(path), 0o700 | fs.ModeDir},
		{path, 0o600},
		{path + "-wal", 0o600},
	} {
		fi, err := os.Stat(f.path)
		if err != nil {
			t.Fatal(err)
		}
		if runtime.GOOS != "windows" && fi.Mode() != f.mode {
			t.Errorf("%s has mode %v, want %v", f.path, fi.Mode(), f.mode)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The escaped name reached SQLite intact: only the database's own files.
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "audit.db") {
			t.Errorf("unexpected file %q next to the database", e.Name())
		}
	}

	s, err = OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.List(ctx, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, appended) {
		t.Errorf("after reopen List =\n%+v\nwant\n%+v", got, appended)
	}
	for i, r := range got {
		if r.Seq != int64(i+1) {
			t.Errorf("record %d has Seq %d, want %d", i, r.Seq, i+1)
		}
		in := inputs[i]
		if !in.Time.IsZero() && !r.Time.Equal(in.Time.Truncate(time.Microsecond)) {
			t.Errorf("record %d time %v, want %v to the microsecond", i, r.Time, in.Time)
		}
	}
	next, err := s.Append(ctx, validRecord())
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(len(inputs) + 1); next.Seq != want {
		t.Errorf("first Append after reopen has Seq %d, want %d", next.Seq, want)
	}
}

func TestSQLitePragmas(t *testing.T) {
	s := openTestSQLite(t)
	ctx := context.Background()
	// Hold several connections at once, so each is a different one from
	// the pool: the DSN must have set the pragmas on all of them.
	var conns []*sql.Conn
	for range 3 {
		c, err := s.db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	for i, c := range conns {
		for _, p := range []struct{ name, want string }{
			{"journal_mode", "wal"},
			{"synchronous", "2"},
			{"busy_timeout", "5000"},
			{"foreign_keys", "1"},
		} {
			var got string
			if err := c.QueryRowContext(ctx, "PRAGMA "+p.name).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != p.want {
				t.Errorf("connection %d: PRAGMA %s = %q, want %q", i, p.name, got, p.want)
			}
		}
	}
}

func TestSQLiteRefusesNonDurablePragmas(t *testing.T) {
	tests := []struct {
		name    string
		pragmas []string
		wantErr string // "" = must open
	}{
		{"default", sqlitePragmas, ""},
		{"synchronous NORMAL", []string{"journal_mode(WAL)", "synchronous(NORMAL)", "foreign_keys(1)"}, "PRAGMA synchronous"},
		{"synchronous OFF", []string{"journal_mode(WAL)", "synchronous(OFF)", "foreign_keys(1)"}, "PRAGMA synchronous"},
		{"rollback journal", []string{"journal_mode(DELETE)", "synchronous(FULL)", "foreign_keys(1)"}, "PRAGMA journal_mode"},
		{"no journal", []string{"journal_mode(OFF)", "synchronous(FULL)", "foreign_keys(1)"}, "PRAGMA journal_mode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := OpenSQLite(filepath.Join(t.TempDir(), "audit.db"), testingOnlyPragmas(tt.pragmas...))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				s.Close()
				return
			}
			if err == nil {
				s.Close()
				t.Fatal("OpenSQLite succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("OpenSQLite = %v, want an error about %s", err, tt.wantErr)
			}
		})
	}
}

func TestSQLiteOptions(t *testing.T) {
	for _, n := range []int{0, -1, maxMaxBatch + 1} {
		if s, err := OpenSQLite(filepath.Join(t.TempDir(), "audit.db"), WithMaxBatch(n)); err == nil {
			s.Close()
			t.Errorf("WithMaxBatch(%d) accepted", n)
		}
	}
	if _, err := OpenSQLite(""); err == nil {
		t.Error("OpenSQLite(\"\") succeeded")
	}
}

func TestSQLiteSchemaVersion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	s, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.Exec(`UPDATE schema_version SET version = ?`, schemaVersion+1); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err := OpenSQLite(path); err == nil {
		s.Close()
		t.Fatal("OpenSQLite accepted a database with a newer schema")
	} else if !strings.Contains(err.Error(), fmt.Sprintf("schema version is %d", schemaVersion+1)) {
		t.Errorf("OpenSQLite = %v, want an error naming the schema version", err)
	}
}

func TestSQLiteGroupCommit(t *testing.T) {
	tests := []struct {
		maxBatch, n int
		commits     int64
	}{
		{DefaultMaxBatch, 50, 1},
		{16, 50, 4}, // 16 + 16 + 16 + 2
		{1, 5, 5},   // group commit off
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("batch%d_records%d", tt.maxBatch, tt.n), func(t *testing.T) {
			st := newStall()
			s := openStalledSQLite(t, st, WithMaxBatch(tt.maxBatch))
			wait := queueAppends(t, s, st, tt.n)
			if got := s.Stats(); got != (Stats{}) {
				t.Fatalf("Stats while the writer is held = %+v, want zero", got)
			}
			st.Release()
			recs, errs := wait()
			seen := map[int64]bool{}
			for i := range tt.n {
				if errs[i] != nil {
					t.Fatalf("Append %d: %v", i, errs[i])
				}
				if recs[i].Seq < 1 || recs[i].Seq > int64(tt.n) || seen[recs[i].Seq] {
					t.Errorf("Append %d got Seq %d: out of range or repeated", i, recs[i].Seq)
				}
				seen[recs[i].Seq] = true
			}
			got := s.Stats()
			if got.TxTime <= 0 {
				t.Errorf("Stats.TxTime = %v after %d commits, want > 0", got.TxTime, got.Commits)
			}
			got.TxTime = 0
			if want := (Stats{Commits: tt.commits, Records: int64(tt.n)}); got != want {
				t.Errorf("Stats = %+v, want %+v", got, want)
			}
		})
	}
}

func TestSQLiteFailedBatch(t *testing.T) {
	const n = 10
	const poisoned = 3 // recordN(poisoned) gets Detail "poison"
	tests := []struct {
		name      string
		breakIt   func(t *testing.T, s *SQLite)
		pingFails bool
		repair    func(t *testing.T, s *SQLite) // nil: cannot be repaired in place
	}{
		{
			name: "table dropped",
			breakIt: func(t *testing.T, s *SQLite) {
				mustExec(t, s.db, `DROP TABLE audit_records`)
			},
			pingFails: true,
		},
		{
			name: "database and writer's connection closed underneath",
			breakIt: func(t *testing.T, s *SQLite) {
				if err := s.db.Close(); err != nil {
					t.Fatal(err)
				}
				if err := s.conn.Close(); err != nil {
					t.Fatal(err)
				}
			},
			pingFails: true,
		},
		{
			// One record in the batch fails after others were inserted:
			// the whole transaction must roll back.
			name: "one record in the batch refused",
			breakIt: func(t *testing.T, s *SQLite) {
				mustExec(t, s.db, `CREATE TRIGGER poison BEFORE INSERT ON audit_records
					WHEN NEW.detail = 'poison' BEGIN SELECT RAISE(ABORT, 'poisoned'); END`)
			},
			repair: func(t *testing.T, s *SQLite) {
				mustExec(t, s.db, `DROP TRIGGER poison`)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newStall()
			s := openStalledSQLite(t, st)
			recs := make([]Record, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range n {
				r := recordN(i)
				if i == poisoned {
					r.Detail = "poison"
				}
				wg.Go(func() { recs[i], errs[i] = s.Append(context.Background(), r) })
			}
			<-st.entered
			waitFor(func() bool { return len(s.reqs) == n-1 })
			tt.breakIt(t, s)
			st.Release()
			wg.Wait()

			for i := range n {
				if errs[i] == nil {
					t.Errorf("Append %d succeeded (Seq %d) in a failed batch", i, recs[i].Seq)
				}
			}
			if got, want := s.Stats(), (Stats{FailedRecords: n}); got != want {
				t.Errorf("Stats = %+v, want %+v", got, want)
			}
			if err := s.Ping(context.Background()); (err != nil) != tt.pingFails {
				t.Errorf("Ping = %v, want failure %v", err, tt.pingFails)
			}
			if tt.repair == nil {
				return
			}
			tt.repair(t, s)
			after, err := s.Append(context.Background(), validRecord())
			if err != nil {
				t.Fatal(err)
			}
			got, err := s.List(context.Background(), 0, 100)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || got[0] != after || after.Seq != 1 {
				t.Errorf("after the failed batch List = %+v, want only the new record with Seq 1", got)
			}
		})
	}
}

func mustExec(t *testing.T, db *sql.DB, query string) {
	t.Helper()
	if _, err := db.Exec(query); err != nil {
		t.Fatal(err)
	}
}

func TestSQLiteAppendCanceledWhileWaiting(t *testing.T) {
	st := newStall()
	s := openStalledSQLite(t, st)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := s.Append(ctx, recordN(1))
		errc <- err
	}()
	<-st.entered // the writer holds the record
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Append = %v, want context.Canceled", err)
	}
	st.Release()
	// Documented behaviour: a record handed to the writer is committed even
	// though its caller gave up (and returned no credential).
	waitFor(func() bool { return s.Stats() != (Stats{}) })
	got, err := s.List(context.Background(), 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Detail != recordN(1).Detail {
		t.Errorf("List = %+v, want the canceled caller's record", got)
	}
}

func TestSQLiteCloseDrains(t *testing.T) {
	const n = 20
	path := filepath.Join(t.TempDir(), "audit.db")
	st := newStall()
	s, err := OpenSQLite(path, st.option())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Release)
	wait := queueAppends(t, s, st, n)
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	waitFor(func() bool {
		s.mu.RLock()
		defer s.mu.RUnlock()
		return s.closed
	})
	if _, err := s.Append(context.Background(), validRecord()); !errors.Is(err, ErrClosed) {
		t.Errorf("Append during Close = %v, want ErrClosed", err)
	}
	st.Release()
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	_, errs := wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Append %d queued before Close: %v", i, err)
		}
	}

	s, err = OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.List(context.Background(), 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Errorf("after Close and reopen List has %d records, want %d", len(got), n)
	}
}

func TestStoreConcurrentAppends(t *testing.T) {
	const goroutines, perGoroutine = 8, 50
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		got := make([][]Record, goroutines)
		var wg sync.WaitGroup
		for g := range goroutines {
			wg.Go(func() {
				for i := range perGoroutine {
					r, err := s.Append(ctx, recordN(g*perGoroutine+i))
					if err != nil {
						t.Error(err)
						return
					}
					got[g] = append(got[g], r)
				}
			})
		}
		wg.Wait()

		bySeq := map[int64]Record{}
		for _, rs := range got {
			for _, r := range rs {
				if _, dup := bySeq[r.Seq]; dup {
					t.Fatalf("Seq %d assigned twice", r.Seq)
				}
				bySeq[r.Seq] = r
			}
		}
		if len(bySeq) != goroutines*perGoroutine {
			t.Fatalf("%d distinct Seqs, want %d", len(bySeq), goroutines*perGoroutine)
		}
		list, err := s.List(ctx, 0, MaxListLimit)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != goroutines*perGoroutine {
			t.Fatalf("List has %d records, want %d", len(list), goroutines*perGoroutine)
		}
		for i, r := range list {
			if r.Seq != int64(i+1) {
				t.Fatalf("List[%d].Seq = %d, want %d", i, r.Seq, i+1)
			}
			if bySeq[r.Seq] != r {
				t.Fatalf("List[%d] = %+v, but Append returned %+v for that Seq", i, r, bySeq[r.Seq])
			}
		}
		if sq, ok := s.(*SQLite); ok {
			if st := sq.Stats(); st.Records != goroutines*perGoroutine || st.FailedRecords != 0 {
				t.Errorf("Stats = %+v", st)
			}
		}
	})
}
