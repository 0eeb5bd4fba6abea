package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/agentkeys/broker/shared/auditlog"
	"github.com/agentkeys/broker/shared/protocol"
)

// testLog makes batches as the enclave does (the host's tests do not import
// the enclave): entries, their stored hashes, a signed checkpoint.
type testLog struct {
	signer note.Signer
	hashes auditlog.HashMap
	n      int64
	tag    string // makes another history's entries differ
}

func newTestLog(t testing.TB) *testLog {
	t.Helper()
	const origin = "broker.example.com/audit"
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, 32))
	vkey, _ := note.NewEd25519VerifierKey(origin, priv.Public().(ed25519.PublicKey))
	hash := strings.Split(vkey, "+")[1]
	signer, err := note.NewSigner("PRIVATE+KEY+" + origin + "+" + hash + "+" + base64.StdEncoding.EncodeToString(append([]byte{1}, priv.Seed()...)))
	if err != nil {
		t.Fatal(err)
	}
	return &testLog{signer: signer, hashes: auditlog.HashMap{}}
}

func (l *testLog) entry(i int64) []byte { return fmt.Appendf(nil, `{"entry":%d%s}`, i, l.tag) }

func (l *testLog) batch(t testing.TB, n int) protocol.AuditBatch {
	t.Helper()
	b := protocol.AuditBatch{Start: l.n}
	var hs []tlog.Hash
	for range n {
		e := l.entry(l.n)
		sh, err := tlog.StoredHashes(l.n, e, l.hashes)
		if err != nil {
			t.Fatal(err)
		}
		for j, h := range sh {
			l.hashes[tlog.StoredHashIndex(0, l.n)+int64(j)] = h
		}
		hs = append(hs, sh...)
		b.Entries = append(b.Entries, e)
		l.n++
	}
	root, _ := tlog.TreeHash(l.n, l.hashes)
	cp, err := note.Sign(&note.Note{Text: auditlog.Checkpoint{Origin: "broker.example.com/audit", Tree: tlog.Tree{N: l.n, Hash: root}}.Format()}, l.signer)
	if err != nil {
		t.Fatal(err)
	}
	b.Hashes, b.Checkpoint = auditlog.JoinHashes(hs), cp
	return b
}

func loggedRecord(b protocol.AuditBatch, i int64) Record {
	r := validRecord()
	r.JTI = fmt.Sprint(i)
	r.Batch, r.Logged = &b, &Logged{Index: i}
	return r
}

// logStores are the stores the log's contract tests run against, each
// opened with a log gap wait of 200ms; postgres_test.go adds PostgreSQL.
var logStores = []struct {
	name string
	open func(t *testing.T) Store
}{
	{"sqlite", func(t *testing.T) Store { return openTestSQLite(t, WithLogGapWait(200*time.Millisecond)) }},
	{"memory", func(t *testing.T) Store {
		m := NewMemory()
		m.SetLogGapWait(200 * time.Millisecond)
		return m
	}},
}

func bothStores(t *testing.T, f func(t *testing.T, s Store)) {
	for _, impl := range logStores {
		t.Run(impl.name, func(t *testing.T) { f(t, impl.open(t)) })
	}
}

// TestLogBatches: batches carried by records from many goroutines, in any
// order and each by several records, are stored once and in order; the log
// reads back as the tree the batches made, and the records know their entries.
func TestLogBatches(t *testing.T) {
	bothStores(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		tl := newTestLog(t)
		var batches []protocol.AuditBatch
		for range 40 {
			batches = append(batches, tl.batch(t, 1+rand.IntN(7)))
		}
		var recs []Record
		for _, b := range batches {
			for i := range b.Entries {
				recs = append(recs, loggedRecord(b, b.Start+int64(i)))
			}
		}
		rand.Shuffle(len(recs), func(i, j int) { recs[i], recs[j] = recs[j], recs[i] })
		var wg sync.WaitGroup
		for _, r := range recs {
			wg.Go(func() {
				if _, err := s.Append(ctx, r); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if s.LogSize() != tl.n {
			t.Fatalf("LogSize %d, want %d", s.LogSize(), tl.n)
		}
		cp, err := s.Checkpoint(ctx)
		if err != nil || !bytes.Equal(cp, batches[len(batches)-1].Checkpoint) {
			t.Fatalf("Checkpoint: %v", err)
		}
		entries, err := s.ReadEntries(ctx, 0, tl.n)
		if err != nil {
			t.Fatal(err)
		}
		for i, e := range entries {
			if !bytes.Equal(e, tl.entry(int64(i))) {
				t.Fatalf("entry %d = %s", i, e)
			}
		}
		var idx []int64
		for x := range tlog.StoredHashIndex(0, tl.n) {
			idx = append(idx, x)
		}
		hs, err := s.ReadHashes(ctx, idx)
		if err != nil {
			t.Fatal(err)
		}
		for i, h := range hs {
			if tl.hashes[idx[i]] != h {
				t.Fatalf("hash %d differs", idx[i])
			}
		}
		if _, err := s.ReadHashes(ctx, []int64{tlog.StoredHashIndex(0, tl.n)}); err == nil {
			t.Fatal("read a hash past the log")
		}
		if _, err := s.ReadEntries(ctx, 0, tl.n+1); err == nil {
			t.Fatal("read an entry past the log")
		}
		// A batch stored again is a no-op.
		if err := s.AppendBatch(ctx, batches[3]); err != nil {
			t.Fatalf("a stored batch again: %v", err)
		}
		listed, err := s.List(ctx, 0, 1000)
		if err != nil || len(listed) != len(recs) {
			t.Fatalf("List: %v, %d records", err, len(listed))
		}
		seen := map[int64]bool{}
		for _, r := range listed {
			if r.Logged == nil || r.Batch != nil || r.Logged.LeafHash != tlog.RecordHash(tl.entry(r.Logged.Index)) || seen[r.Logged.Index] {
				t.Fatalf("record %+v", r)
			}
			seen[r.Logged.Index] = true
		}
		// The resume request is the tip: verify its right edge gives its root.
		req, _ := s.ResumeRequest(ctx)
		edge := auditlog.HashMap{}
		hs2, _ := auditlog.SplitHashes(req.Hashes, 63)
		for i, x := range auditlog.RightEdge(tl.n) {
			edge[x] = hs2[i]
		}
		root, _ := tlog.TreeHash(tl.n, edge)
		want, _ := tlog.TreeHash(tl.n, tl.hashes)
		if root != want || !bytes.Equal(req.Checkpoint, cp) {
			t.Fatal("the resume request is not the tip")
		}
	})
}

// TestLogGap: a batch whose predecessor never comes fails its record with
// ErrLogGap after the bounded wait, stores nothing, and fails Ping until the
// missing batch is stored.
func TestLogGap(t *testing.T) {
	bothStores(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		tl := newTestLog(t)
		first, second := tl.batch(t, 2), tl.batch(t, 3)
		if _, err := s.Append(ctx, loggedRecord(second, 3)); !errors.Is(err, ErrLogGap) {
			t.Fatalf("Append past a gap: %v", err)
		}
		if err := s.Ping(ctx); !errors.Is(err, ErrLogGap) {
			t.Fatalf("Ping with a gap: %v", err)
		}
		if rs, _ := s.List(ctx, 0, 10); len(rs) != 0 || s.LogSize() != 0 {
			t.Fatalf("stored %d records, log size %d", len(rs), s.LogSize())
		}
		// What Resume does: store the missing batch alone, then the later one.
		if err := s.AppendBatch(ctx, first); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Append(ctx, loggedRecord(second, 4)); err != nil {
			t.Fatal(err)
		}
		if err := s.Ping(ctx); err != nil || s.LogSize() != 5 {
			t.Fatalf("Ping after catching up: %v, size %d", err, s.LogSize())
		}
	})
}

// TestLogGapGrace: a batch that arrives before the batch ahead of it is
// committed with that one, in one transaction, when that one comes within
// the grace (here far longer than the test), rather than parked in a
// transaction of its own.
func TestLogGapGrace(t *testing.T) {
	received := make(chan struct{}, 1)
	s := openTestSQLite(t, testingOnlyStallWriter(func() {
		select {
		case received <- struct{}{}:
		default:
		}
	}))
	s.gapGrace = time.Minute // past what WithLogGapGrace allows: the test never depends on timing
	ctx := context.Background()
	tl := newTestLog(t)
	first, second := tl.batch(t, 1), tl.batch(t, 1)
	before := s.Stats().Commits
	errs := make(chan error, 2)
	go func() { _, err := s.Append(ctx, loggedRecord(second, 1)); errs <- err }()
	<-received // the writer holds the later batch
	go func() { _, err := s.Append(ctx, loggedRecord(first, 0)); errs <- err }()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got := s.Stats().Commits - before; got != 1 {
		t.Errorf("the two batches took %d transactions, want 1", got)
	}
	if s.LogSize() != 2 {
		t.Errorf("log size %d, want 2", s.LogSize())
	}
}

// TestLogMismatch: a batch whose hashes, entries or checkpoint disagree, or
// that overlaps the log differently, is refused with ErrLogMismatch and
// stores nothing.
func TestLogMismatch(t *testing.T) {
	bothStores(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		tl := newTestLog(t)
		b0 := tl.batch(t, 3)
		if err := s.AppendBatch(ctx, b0); err != nil {
			t.Fatal(err)
		}
		good := tl.batch(t, 2)
		other := newTestLog(t)
		other.tag = ",\"other\":1"
		otherB := other.batch(t, 3) // [0, 3) of another history
		older := newTestLog(t)
		older.tag = ",\"older\":1"
		olderB := older.batch(t, 1) // [0, 1) of another history, under the tip
		for name, b := range map[string]protocol.AuditBatch{
			"entry":                {Start: good.Start, Entries: [][]byte{[]byte("x"), good.Entries[1]}, Hashes: good.Hashes, Checkpoint: good.Checkpoint},
			"hash":                 {Start: good.Start, Entries: good.Entries, Hashes: append([]byte{good.Hashes[0] ^ 1}, good.Hashes[1:]...), Checkpoint: good.Checkpoint},
			"short hashes":         {Start: good.Start, Entries: good.Entries, Hashes: good.Hashes[:32], Checkpoint: good.Checkpoint},
			"checkpoint":           {Start: good.Start, Entries: good.Entries, Hashes: good.Hashes, Checkpoint: b0.Checkpoint},
			"empty":                {Start: good.Start, Checkpoint: good.Checkpoint},
			"other history":        otherB,
			"older, other history": olderB,
		} {
			r := validRecord()
			if len(b.Entries) > 0 {
				r.Batch, r.Logged = &b, &Logged{Index: b.Start}
			}
			var err error
			if r.Batch != nil {
				_, err = s.Append(ctx, r)
			} else {
				err = s.AppendBatch(ctx, b)
			}
			if !errors.Is(err, ErrLogMismatch) {
				t.Errorf("%s: %v", name, err)
			}
		}
		if rs, _ := s.List(ctx, 0, 10); len(rs) != 0 || s.LogSize() != 3 {
			t.Fatalf("stored %d records, log size %d", len(rs), s.LogSize())
		}
		if err := s.AppendBatch(ctx, good); err != nil {
			t.Fatalf("the good batch: %v", err)
		}
		// A record naming an entry outside its batch is the caller's bug.
		r := loggedRecord(good, 9)
		if _, err := s.Append(ctx, r); !errors.Is(err, ErrInvalidRecord) {
			t.Fatalf("entry outside its batch: %v", err)
		}
	})
}

// TestMemoryFailureKeepsLogWhole: with the store failing, a record and its
// batch are both refused; once it works again, the same batch is stored.
func TestMemoryFailureKeepsLogWhole(t *testing.T) {
	m := NewMemory()
	ctx := context.Background()
	tl := newTestLog(t)
	b := tl.batch(t, 2)
	m.SetFailure(errors.New("disk full"))
	if _, err := m.Append(ctx, loggedRecord(b, 0)); err == nil || m.LogSize() != 0 {
		t.Fatalf("Append with the store failing: %v, size %d", err, m.LogSize())
	}
	m.SetFailure(nil)
	if _, err := m.Append(ctx, loggedRecord(b, 1)); err != nil || m.LogSize() != 2 {
		t.Fatalf("Append after: %v, size %d", err, m.LogSize())
	}
}

// TestSQLiteLogReopen: the log survives a reopen; a database whose log was
// altered is refused; a version 2 database gains the log tables.
func TestSQLiteLogReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	s, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tl := newTestLog(t)
	for range 5 {
		b := tl.batch(t, 3)
		if _, err := s.Append(ctx, loggedRecord(b, b.Start)); err != nil {
			t.Fatal(err)
		}
	}
	want, _ := s.ResumeRequest(ctx)
	s.Close()
	s, err = OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := s.ResumeRequest(ctx)
	if s.LogSize() != 15 || !bytes.Equal(got.Checkpoint, want.Checkpoint) || !bytes.Equal(got.Hashes, want.Hashes) {
		t.Fatalf("after reopen: size %d", s.LogSize())
	}
	b := tl.batch(t, 1)
	if err := s.AppendBatch(ctx, b); err != nil {
		t.Fatalf("continuing after reopen: %v", err)
	}
	if _, err := s.db.Exec(`DELETE FROM log_entries WHERE idx = 7`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err := OpenSQLite(path); err == nil {
		s.Close()
		t.Fatal("opened a log with an entry removed")
	}

	// Migration: a version 2 file (no log tables) gains them.
	path = filepath.Join(t.TempDir(), "v2.db")
	s, err = OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, stmt := range []string{`DROP TABLE log_entries`, `DROP TABLE log_hashes`, `DROP TABLE log_checkpoints`, `UPDATE schema_version SET version = 2`} {
		if _, err := s.db.Exec(stmt); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	s, err = OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var v int
	s.db.QueryRow(`SELECT version FROM schema_version`).Scan(&v)
	if err := s.AppendBatch(ctx, newTestLog(t).batch(t, 2)); err != nil || v != schemaVersion {
		t.Fatalf("after migration: %v, version %d", err, v)
	}
}

// TestLogLargeBatch: a batch with more entries and hashes than one INSERT
// takes (maxRowsPerInsert) is stored whole, read back, and reopened.
func TestLogLargeBatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	s, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tl := newTestLog(t)
	for _, n := range []int{maxRowsPerInsert, 3*maxRowsPerInsert + 5, 1} {
		if err := s.AppendBatch(ctx, tl.batch(t, n)); err != nil {
			t.Fatalf("batch of %d: %v", n, err)
		}
	}
	check := func(s *SQLite) {
		t.Helper()
		if s.LogSize() != tl.n {
			t.Fatalf("LogSize %d, want %d", s.LogSize(), tl.n)
		}
		entries, err := s.ReadEntries(ctx, 0, tl.n)
		if err != nil {
			t.Fatal(err)
		}
		for i, e := range entries {
			if !bytes.Equal(e, tl.entry(int64(i))) {
				t.Fatalf("entry %d = %s", i, e)
			}
		}
		var idx []int64
		for x := range tlog.StoredHashIndex(0, tl.n) {
			idx = append(idx, x)
		}
		hs, err := s.ReadHashes(ctx, idx)
		if err != nil {
			t.Fatal(err)
		}
		for i, h := range hs {
			if tl.hashes[idx[i]] != h {
				t.Fatalf("hash %d differs", idx[i])
			}
		}
	}
	check(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = OpenSQLite(path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	check(s)
}

// TestResumeNamesTheLog: Resume presents the store's log under the name it is
// given (every round), and refuses a name that is not a log name without
// calling the enclave.
func TestResumeNamesTheLog(t *testing.T) {
	ctx := context.Background()
	s := NewMemory()
	tl := newTestLog(t)
	if err := s.AppendBatch(ctx, tl.batch(t, 3)); err != nil {
		t.Fatal(err)
	}
	more := tl.batch(t, 2)
	var got []protocol.AuditResumeRequest
	call := func(_ context.Context, op protocol.Op, req, resp any) error {
		r := req.(protocol.AuditResumeRequest)
		got = append(got, r)
		out := resp.(*protocol.AuditResumeResponse)
		if len(got) == 1 {
			*out = protocol.AuditResumeResponse{Size: 5, Batches: []protocol.AuditBatch{more}, More: true}
		} else {
			*out = protocol.AuditResumeResponse{Size: 5}
		}
		return nil
	}
	if err := Resume(ctx, s, "host-a", call); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Log != "host-a" || got[1].Log != "host-a" || len(got[0].Checkpoint) == 0 {
		t.Fatalf("requests %+v", got)
	}
	if s.LogSize() != 5 {
		t.Fatalf("stored %d", s.LogSize())
	}
	got = nil
	for _, bad := range []string{"Host-A", "a/b", "-a"} {
		if err := Resume(ctx, s, bad, call); !errors.Is(err, auditlog.ErrLogName) || len(got) != 0 {
			t.Fatalf("Resume(%q): %v, %d calls", bad, err, len(got))
		}
	}
}
