package audit

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSQLiteFileReplaced: once the database or its -wal file is deleted or
// replaced under a running store, Append and Ping fail with ErrFileReplaced,
// and keep failing.
func TestSQLiteFileReplaced(t *testing.T) {
	// anotherDB leaves a closed, valid audit database (and its -wal) at p.
	anotherDB := func(t *testing.T, p string) {
		o, err := OpenSQLite(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := o.Append(context.Background(), validRecord()); err != nil {
			t.Fatal(err)
		}
		if err := o.Close(); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name    string
		breakIt func(t *testing.T, path string)
		what    string
	}{
		{"database deleted", func(t *testing.T, path string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}, "was deleted"},
		{"-wal deleted", func(t *testing.T, path string) {
			if err := os.Remove(path + "-wal"); err != nil {
				t.Fatal(err)
			}
		}, "-wal was deleted"},
		{"another database renamed over it", func(t *testing.T, path string) {
			other := filepath.Join(t.TempDir(), "other.db")
			anotherDB(t, other)
			if err := os.Rename(other, path); err != nil {
				t.Fatal(err)
			}
		}, "was replaced"},
		{"directory moved away and a new one made", func(t *testing.T, path string) {
			dir := filepath.Dir(path)
			if err := os.Rename(dir, dir+".old"); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			anotherDB(t, path)
		}, "was replaced"},
		{"-wal replaced", func(t *testing.T, path string) {
			f, err := os.CreateTemp(filepath.Dir(path), "wal")
			if err != nil {
				t.Fatal(err)
			}
			f.Close()
			if err := os.Rename(f.Name(), path+"-wal"); err != nil {
				t.Fatal(err)
			}
		}, "-wal was replaced"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), "db", "audit.db")
			s, err := OpenSQLite(path)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if _, err := s.Append(ctx, validRecord()); err != nil {
				t.Fatal(err)
			}
			if err := s.Ping(ctx); err != nil {
				t.Fatalf("Ping before: %v", err)
			}
			tt.breakIt(t, path)
			for i := range 2 { // and again: it stays failed
				if r, err := s.Append(ctx, validRecord()); !errors.Is(err, ErrFileReplaced) {
					t.Fatalf("Append %d after the file went: %+v, %v; want ErrFileReplaced", i, r, err)
				} else if want := path + tt.what; !strings.Contains(err.Error(), tt.what) || !strings.Contains(err.Error(), filepath.Dir(path)) {
					t.Errorf("Append error %q does not say %q", err, want)
				}
				if err := s.Ping(ctx); !errors.Is(err, ErrFileReplaced) {
					t.Fatalf("Ping %d after the file went: %v; want ErrFileReplaced", i, err)
				}
			}
			if got := s.Stats(); got.Records != 1 || got.FailedRecords != 1 {
				t.Errorf("Stats = %+v, want 1 record and 1 failed (the second Append fails before the writer)", got)
			}
		})
	}
}

// TestSQLiteFileReplacedWhileBatchWaits: a file deleted after Appends were
// handed to the writer, before it commits them, fails the whole batch.
func TestSQLiteFileReplacedWhileBatchWaits(t *testing.T) {
	st := newStall()
	path := filepath.Join(t.TempDir(), "audit.db")
	s, err := OpenSQLite(path, st.option())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Release(); s.Close() })
	wait := queueAppends(t, s, st, 5)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	st.Release()
	_, errs := wait()
	for i, err := range errs {
		if !errors.Is(err, ErrFileReplaced) {
			t.Errorf("Append %d = %v, want ErrFileReplaced", i, err)
		}
	}
}

// TestSQLitePingWrites: Ping commits a write (the heartbeat row), so it fails
// when the store cannot write even though it can still be read.
func TestSQLitePingWrites(t *testing.T) {
	ctx := context.Background()
	t.Run("heartbeat", func(t *testing.T) {
		s := openTestSQLite(t)
		before := s.Stats().Commits
		if err := s.Ping(ctx); err != nil {
			t.Fatal(err)
		}
		var micros int64
		if err := s.db.QueryRow(`SELECT time_unix_micro FROM heartbeat WHERE id = 1`).Scan(&micros); err != nil || micros == 0 {
			t.Fatalf("heartbeat after Ping: %d, %v", micros, err)
		}
		if got := s.Stats(); got.Commits != before+1 || got.Records != 0 {
			t.Errorf("Stats after Ping = %+v, want one more commit and no record", got)
		}
		if rs, err := s.List(ctx, 0, 10); err != nil || len(rs) != 0 {
			t.Errorf("Ping added to the log: %+v, %v", rs, err)
		}
	})
	t.Run("writer's connection broken", func(t *testing.T) {
		s := openTestSQLite(t)
		if err := s.conn.Close(); err != nil {
			t.Fatal(err)
		}
		// Still readable through the pool…
		if _, err := s.List(ctx, 0, 10); err != nil {
			t.Fatalf("List: %v", err)
		}
		// …but not writable, and Ping says so.
		if err := s.Ping(ctx); !errors.Is(err, ErrNotWritable) {
			t.Fatalf("Ping = %v, want ErrNotWritable", err)
		}
		if _, err := s.Append(ctx, validRecord()); err == nil {
			t.Fatal("Append succeeded")
		}
	})
	t.Run("locked by another process", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "audit.db")
		s, err := OpenSQLite(path)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		other := sql.OpenDB(connector{dsn: sqliteDSN(path, sqlitePragmas)})
		defer other.Close()
		lock, err := other.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer lock.Close()
		if _, err := lock.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
			t.Fatal(err)
		}
		pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		if err := s.Ping(pctx); !errors.Is(err, ErrNotWritable) {
			t.Fatalf("Ping with the write lock held elsewhere = %v, want ErrNotWritable", err)
		}
		if _, err := lock.ExecContext(ctx, `ROLLBACK`); err != nil {
			t.Fatal(err)
		}
		if err := s.Ping(ctx); err != nil {
			t.Fatalf("Ping after the lock was released: %v", err)
		}
	})
}

// v1Schema is audit_records as schema version 1 created it.
const v1Schema = `CREATE TABLE schema_version (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL) STRICT;
CREATE TABLE audit_records (
	seq INTEGER PRIMARY KEY AUTOINCREMENT, time_unix_micro INTEGER NOT NULL, kind TEXT NOT NULL,
	outcome TEXT NOT NULL, wallet TEXT NOT NULL,
	bearer_sha256 TEXT NOT NULL CHECK (length(bearer_sha256) IN (0, 64)), audience TEXT NOT NULL,
	ttl_seconds INTEGER NOT NULL, kid TEXT NOT NULL, jti TEXT NOT NULL,
	detail TEXT NOT NULL CHECK (length(CAST(detail AS BLOB)) <= 1024),
	host_asserted_wallet INTEGER NOT NULL CHECK (host_asserted_wallet IN (0, 1)),
	leaf_hash BLOB CHECK (leaf_hash IS NULL OR length(leaf_hash) = 32),
	tree_index INTEGER UNIQUE CHECK (tree_index IS NULL OR tree_index >= 0)
) STRICT;
INSERT INTO schema_version (id, version) VALUES (1, 1);
INSERT INTO audit_records (time_unix_micro, kind, outcome, wallet, bearer_sha256, audience, ttl_seconds, kid, jti, detail, host_asserted_wallet)
	VALUES (1764353523456789, 'oidc_jwt', 'ok', 'unknown', '', 'sts.amazonaws.com', 300, 'k', '1', 'old', 0);`

// TestSQLiteMigratesV1: a database written by schema version 1 gains the
// count and client columns; its records read back with Count 1.
func TestSQLiteMigratesV1(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "audit.db")
	if err := createPrivateFile(path); err != nil {
		t.Fatal(err)
	}
	old := sql.OpenDB(connector{dsn: sqliteDSN(path, sqlitePragmas)})
	if _, err := old.Exec(v1Schema); err != nil {
		t.Fatal(err)
	}
	old.Close()

	for i := range 2 { // migrate, then open the migrated file again
		s, err := OpenSQLite(path)
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		var v int64
		if err := s.db.QueryRow(`SELECT version FROM schema_version`).Scan(&v); err != nil || v != schemaVersion {
			t.Errorf("schema version %d, %v; want %d", v, err, schemaVersion)
		}
		agg := validRecord()
		agg.Count, agg.Client = 41, "192.0.2.9"
		if _, err := s.Append(ctx, agg); err != nil {
			t.Fatal(err)
		}
		rs, err := s.List(ctx, 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) != 2+i || rs[0].Detail != "old" || rs[0].Count != 1 || rs[0].Client != "" || rs[1].Count != 41 || rs[1].Client != "192.0.2.9" {
			t.Errorf("open %d: records %+v", i, rs)
		}
		s.Close()
	}
}

// TestCount: refusals given to Count become one record per client, kind,
// outcome and wallet, with the number counted; clients past the bound are
// counted together under OtherClients.
func TestCount(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		refusal := func(client string, outcome string) Record {
			return Record{Kind: KindOIDCJWT, Outcome: outcome, Wallet: WalletUnknown, Client: client, Detail: "missing Authorization: Bearer header"}
		}
		for range 1000 {
			for _, c := range []string{"192.0.2.1", "192.0.2.2"} {
				if err := s.Count(refusal(c, OutcomeUnauthorized)); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := s.Count(refusal("192.0.2.1", OutcomeRateLimited)); err != nil {
			t.Fatal(err)
		}
		for i := range DefaultAggregateClients + 500 { // a flood from changing addresses
			if err := s.Count(refusal(fmt.Sprintf("2001:db8::%x", i), OutcomeUnauthorized)); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Count(Record{Kind: "Not Snake", Outcome: OutcomeUnauthorized, Wallet: WalletUnknown}); !errors.Is(err, ErrInvalidRecord) {
			t.Errorf("Count of an invalid record = %v", err)
		}
		if rs, _ := s.List(ctx, 0, 10); len(rs) != 0 {
			t.Fatalf("records before the interval ended: %+v", rs)
		}
		if err := s.(interface{ Flush(context.Context) error }).Flush(ctx); err != nil {
			t.Fatal(err)
		}
		var rs []Record
		for {
			page, err := s.List(ctx, int64(len(rs)), MaxListLimit)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) == 0 {
				break
			}
			rs = append(rs, page...)
		}
		counts := map[string]int64{}
		for _, r := range rs {
			if r.Kind != KindOIDCJWT || r.Wallet != WalletUnknown || !strings.Contains(r.Detail, "the first: missing Authorization") {
				t.Errorf("aggregate %+v", r)
			}
			if strings.HasPrefix(r.Client, "2001:db8::") && r.Count == 1 {
				counts["distinct"]++
				continue
			}
			counts[r.Client+" "+r.Outcome] += r.Count
		}
		// The two clients of the first loop took two of the slots.
		want := map[string]int64{
			"192.0.2.1 unauthorized": 1000, "192.0.2.2 unauthorized": 1000, "192.0.2.1 rate_limited": 1,
			"distinct": DefaultAggregateClients - 2, OtherClients + " unauthorized": 502,
		}
		if fmt.Sprint(counts) != fmt.Sprint(want) {
			t.Errorf("aggregates %v, want %v", counts, want)
		}
		if len(rs) != DefaultAggregateClients+2 {
			t.Errorf("%d records, want %d", len(rs), DefaultAggregateClients+2)
		}
	})
}

// TestSQLiteCountFlushes: aggregates are written at the end of each interval
// without a Flush, and by Close.
func TestSQLiteCountFlushes(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "audit.db")
	s, err := OpenSQLite(path, WithAggregateInterval(5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	r := Record{Kind: KindAWSCreds, Outcome: OutcomeUnauthorized, Wallet: WalletUnknown, Client: "192.0.2.1"}
	for range 3 {
		s.Count(r)
	}
	waitFor(func() bool { rs, _ := s.List(ctx, 0, 10); return len(rs) == 1 })
	rs, _ := s.List(ctx, 0, 10)
	if rs[0].Count != 3 {
		t.Errorf("aggregate %+v, want Count 3", rs[0])
	}
	s.Close()

	// A long interval: only Close writes the aggregate.
	s, err = OpenSQLite(path, WithAggregateInterval(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	s.Count(r)
	s.Count(r)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Count(r); !errors.Is(err, ErrClosed) {
		t.Errorf("Count after Close = %v, want ErrClosed", err)
	}
	s, err = OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rs, _ = s.List(ctx, 0, 10)
	if len(rs) != 2 || rs[1].Count != 2 {
		t.Errorf("after Close: %+v, want a second aggregate with Count 2", rs)
	}
}

// TestCountBounded: however many distinct wallets or outcomes one client's
// refusals carry, an interval holds a bounded number of aggregates.
func TestCountBounded(t *testing.T) {
	a := newAggregator(10)
	for i := range 1000 {
		r := Record{Time: time.Now(), Kind: KindOIDCJWT, Outcome: OutcomeRateLimited, Client: "192.0.2.1",
			Wallet: fmt.Sprintf("0x%040x", i), Count: 1}
		if err := a.add(r); err != nil {
			t.Fatal(err)
		}
	}
	rs := a.take(false)
	var total int64
	for _, r := range rs {
		total += r.Count
	}
	if len(rs) != 41 || total != 1000 {
		t.Errorf("%d aggregates counting %d, want 41 (40 of their own, one folded) counting 1000", len(rs), total)
	}
}
