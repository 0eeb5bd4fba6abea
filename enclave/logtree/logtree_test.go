package logtree

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/agentkeys/broker/shared/auditlog"
	"github.com/agentkeys/broker/shared/protocol"
)

const origin = "broker.example.com/audit"

func newLog(t testing.TB, seed byte, opts ...func(*Config)) *Log {
	t.Helper()
	cfg := Config{Origin: origin, Key: ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, 32))}
	for _, o := range opts {
		o(&cfg)
	}
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// store is a host's store as the tests need it: it applies batches in order
// and keeps every hash, entry and checkpoint.
type store struct {
	mu          sync.Mutex
	hashes      auditlog.HashMap
	entries     [][]byte
	checkpoints map[int64][]byte
}

func newStore() *store { return &store{hashes: auditlog.HashMap{}, checkpoints: map[int64][]byte{}} }

func (s *store) apply(t testing.TB, b protocol.AuditBatch) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if b.Start < int64(len(s.entries)) {
		if !bytes.Equal(s.checkpoints[b.Start+int64(len(b.Entries))], b.Checkpoint) {
			t.Errorf("batch at %d seen twice, differently", b.Start)
		}
		return
	}
	if b.Start != int64(len(s.entries)) {
		t.Fatalf("batch at %d applied at size %d", b.Start, len(s.entries))
	}
	hs, err := auditlog.SplitHashes(b.Hashes, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	first := tlog.StoredHashIndex(0, b.Start)
	if int64(len(hs)) != tlog.StoredHashIndex(0, b.Start+int64(len(b.Entries)))-first {
		t.Fatalf("batch at %d carries %d hashes", b.Start, len(hs))
	}
	for i, h := range hs {
		s.hashes[first+int64(i)] = h
	}
	s.entries = append(s.entries, b.Entries...)
	s.checkpoints[int64(len(s.entries))] = b.Checkpoint
}

// resumeRequest is what the host presents: the latest checkpoint and its right edge.
func (s *store) resumeRequest(at int64) protocol.AuditResumeRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	if at == 0 {
		return protocol.AuditResumeRequest{}
	}
	var hs []tlog.Hash
	for _, x := range auditlog.RightEdge(at) {
		hs = append(hs, s.hashes[x])
	}
	return protocol.AuditResumeRequest{Checkpoint: s.checkpoints[at], Hashes: auditlog.JoinHashes(hs)}
}

// open verifies a checkpoint of the log l keeps, with its verifier key.
func open(t testing.TB, l *Log, cp []byte) tlog.Tree {
	t.Helper()
	v, err := note.NewVerifier(l.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	n, err := note.Open(cp, note.VerifierList(v))
	if err != nil {
		t.Fatal(err)
	}
	c, err := auditlog.ParseCheckpoint(n.Text)
	if err != nil || c.Origin != v.Name() {
		t.Fatalf("checkpoint %q: %v", n.Text, err)
	}
	return c.Tree
}

// check verifies one Append result the way an agent would: its proof under
// its checkpoint.
func check(t testing.TB, l *Log, got protocol.AuditLogged, entry []byte) {
	t.Helper()
	tree := open(t, l, got.Batch.Checkpoint)
	proof, err := auditlog.SplitHashes(got.Proof, 63)
	if err != nil {
		t.Fatal(err)
	}
	if err := tlog.CheckRecord(proof, tree.N, tree.Hash, got.Index, tlog.RecordHash(entry)); err != nil {
		t.Fatalf("entry %d in tree %d: %v", got.Index, tree.N, err)
	}
	if !bytes.Equal(got.Batch.Entries[got.Index-got.Batch.Start], entry) {
		t.Fatalf("entry %d is not in its batch", got.Index)
	}
}

func entryFor(i int64) []byte { return fmt.Appendf(nil, `{"entry":%d}`, i) }

// appendMany appends n entries from g goroutines, applying each batch to s
// and checking each proof, and returns the indexes handed out.
func appendMany(t testing.TB, l *Log, s *store, n, g int) []int64 {
	t.Helper()
	var mu sync.Mutex
	var got []int64
	var wg sync.WaitGroup
	per := n / g
	for w := range g {
		count := per
		if w == g-1 {
			count = n - per*(g-1)
		}
		wg.Go(func() {
			for range count {
				var entry []byte
				res, err := l.Append(func(i int64) ([]byte, error) { entry = entryFor(i); return entry, nil })
				if err != nil {
					t.Error(err)
					return
				}
				check(t, l, res, entry)
				s.applyOrdered(t, res.Batch)
				mu.Lock()
				got = append(got, res.Index)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	s.flush(t)
	return got
}

// applyOrdered applies batches as they come, holding back those that arrive
// early, as the host's store does.
var early sync.Map // *store → []protocol.AuditBatch

func (s *store) applyOrdered(t testing.TB, b protocol.AuditBatch) {
	v, _ := early.LoadOrStore(s, &earlyQ{})
	q := v.(*earlyQ)
	q.mu.Lock()
	defer q.mu.Unlock()
	q.b = append(q.b, b)
	sort.Slice(q.b, func(i, j int) bool { return q.b[i].Start < q.b[j].Start })
	for len(q.b) > 0 {
		s.mu.Lock()
		size := int64(len(s.entries))
		s.mu.Unlock()
		if q.b[0].Start > size {
			return
		}
		s.apply(t, q.b[0])
		q.b = q.b[1:]
	}
}

type earlyQ struct {
	mu sync.Mutex
	b  []protocol.AuditBatch
}

func (s *store) flush(t testing.TB) {
	v, ok := early.Load(s)
	if ok && len(v.(*earlyQ).b) > 0 {
		t.Fatalf("batches never applied: from %d", v.(*earlyQ).b[0].Start)
	}
}

// TestTreeAgainstTlog: for random sizes and concurrency, every index is handed
// out once, every proof verifies, the final checkpoint is the tlog tree of the
// entries, and every checkpoint is consistent with the final one.
func TestTreeAgainstTlog(t *testing.T) {
	for _, tc := range []struct {
		n, g   int
		linger time.Duration
		batch  int
	}{
		{1, 1, 0, 0}, {2, 1, 0, 0}, {7, 1, 0, 0}, {200, 16, 0, 0}, {333, 64, 0, 4},
		{rand.IntN(500) + 1, rand.IntN(32) + 1, 0, 0}, {300, 32, time.Millisecond, 0}, {97, 8, 0, 1},
	} {
		t.Run(fmt.Sprintf("%d_by_%d", tc.n, tc.g), func(t *testing.T) {
			l := newLog(t, 1, func(c *Config) { c.Linger, c.MaxBatch = tc.linger, tc.batch })
			if _, err := l.Resume(protocol.AuditResumeRequest{}); err != nil {
				t.Fatal(err)
			}
			s := newStore()
			idx := appendMany(t, l, s, tc.n, tc.g)
			sort.Slice(idx, func(i, j int) bool { return idx[i] < idx[j] })
			for i, x := range idx {
				if x != int64(i) {
					t.Fatalf("indexes %v are not 0..%d", idx, tc.n-1)
				}
			}
			size, cp := l.State()
			tree := open(t, l, cp)
			if size != int64(tc.n) || tree.N != size {
				t.Fatalf("size %d, checkpoint %d, want %d", size, tree.N, tc.n)
			}
			// The tree from scratch, with tlog.
			ref := auditlog.HashMap{}
			for i := range int64(tc.n) {
				if !bytes.Equal(s.entries[i], entryFor(i)) {
					t.Fatalf("entry %d is %s", i, s.entries[i])
				}
				sh, _ := tlog.StoredHashes(i, entryFor(i), ref)
				for j, h := range sh {
					ref[tlog.StoredHashIndex(0, i)+int64(j)] = h
				}
			}
			if root, _ := tlog.TreeHash(size, ref); root != tree.Hash {
				t.Fatal("the checkpoint's root is not the tlog root of the entries")
			}
			for x, h := range ref {
				if s.hashes[x] != h {
					t.Fatalf("stored hash %d differs", x)
				}
			}
			for n, c := range s.checkpoints {
				older := open(t, l, c)
				if older.N != n {
					t.Fatalf("checkpoint stored at %d is of size %d", n, older.N)
				}
				p, err := tlog.ProveTree(size, n, ref)
				if err != nil {
					t.Fatal(err)
				}
				if err := tlog.CheckTree(p, size, tree.Hash, n, older.Hash); err != nil {
					t.Fatalf("checkpoint %d is not consistent with %d: %v", n, size, err)
				}
			}
		})
	}
}

// TestRestartContinues: a new Log (a restarted enclave) resumed from the
// host's store continues the indexes, and its checkpoints are consistent with
// the ones before the restart.
func TestRestartContinues(t *testing.T) {
	s := newStore()
	l1 := newLog(t, 1)
	l1.Resume(protocol.AuditResumeRequest{})
	appendMany(t, l1, s, 37, 4)
	_, before := l1.State()

	l2 := newLog(t, 1)
	if _, err := l2.Append(func(int64) ([]byte, error) { return []byte("x"), nil }); !errors.Is(err, protocol.ErrAuditLog) {
		t.Fatalf("Append before Resume: %v", err)
	}
	resp, err := l2.Resume(s.resumeRequest(37))
	if err != nil || resp.Size != 37 {
		t.Fatalf("Resume: %v %+v", err, resp)
	}
	idx := appendMany(t, l2, s, 20, 3)
	for _, x := range idx {
		if x < 37 || x >= 57 {
			t.Fatalf("index %d after the restart", x)
		}
	}
	_, after := l2.State()
	t1, t2 := open(t, l1, before), open(t, l2, after)
	p, err := tlog.ProveTree(t2.N, t1.N, s.hashes)
	if err != nil {
		t.Fatal(err)
	}
	if err := tlog.CheckTree(p, t2.N, t2.Hash, t1.N, t1.Hash); err != nil {
		t.Fatalf("the checkpoints before and after the restart are inconsistent: %v", err)
	}
}

// TestRollbackForks: a host presenting an older checkpoint to a restarted
// enclave makes it continue from there; whoever holds the later checkpoint
// finds that no consistency proof joins the two.
func TestRollbackForks(t *testing.T) {
	s := newStore()
	l1 := newLog(t, 1)
	l1.Resume(protocol.AuditResumeRequest{})
	appendMany(t, l1, s, 10, 1)
	old := s.resumeRequest(4) // an older state the host kept
	_, later := l1.State()    // held by an auditor
	laterTree := open(t, l1, later)

	l2 := newLog(t, 1)
	if resp, err := l2.Resume(old); err != nil || resp.Size != 4 {
		t.Fatalf("Resume from the older checkpoint: %v %+v", err, resp)
	}
	fork := newStore()
	// The forked store: the first 4 entries, then new ones.
	for n := int64(0); n < 4; n++ {
		sh, _ := tlog.StoredHashes(n, s.entries[n], fork.hashes)
		for j, h := range sh {
			fork.hashes[tlog.StoredHashIndex(0, n)+int64(j)] = h
		}
		fork.entries = append(fork.entries, s.entries[n])
	}
	for range 8 {
		res, err := l2.Append(func(i int64) ([]byte, error) { return fmt.Appendf(nil, "forked %d", i), nil })
		if err != nil {
			t.Fatal(err)
		}
		fork.apply(t, res.Batch)
	}
	_, forked := l2.State()
	ft := open(t, l2, forked)
	if ft.N != 12 {
		t.Fatalf("forked size %d", ft.N)
	}
	// The auditor holding the checkpoint of size 10 asks the forked log for a
	// consistency proof: none checks.
	p, err := tlog.ProveTree(ft.N, laterTree.N, fork.hashes)
	if err != nil {
		t.Fatal(err)
	}
	if err := tlog.CheckTree(p, ft.N, ft.Hash, laterTree.N, laterTree.Hash); err == nil {
		t.Fatal("the forked checkpoint is consistent with the later one")
	}
}

// TestResumeRefuses: a forged checkpoint, another key's checkpoint, a wrong
// right edge, and malformed presentations are refused, and leave the log
// unresumed.
func TestResumeRefuses(t *testing.T) {
	s := newStore()
	l1 := newLog(t, 1)
	l1.Resume(protocol.AuditResumeRequest{})
	appendMany(t, l1, s, 9, 1)
	good := s.resumeRequest(9)
	other := newLog(t, 2) // another seed, the same origin
	other.Resume(protocol.AuditResumeRequest{})
	os := newStore()
	appendMany(t, other, os, 9, 1)

	edit := func(f func(*protocol.AuditResumeRequest)) protocol.AuditResumeRequest {
		r := protocol.AuditResumeRequest{Checkpoint: bytes.Clone(good.Checkpoint), Hashes: bytes.Clone(good.Hashes)}
		f(&r)
		return r
	}
	for name, req := range map[string]protocol.AuditResumeRequest{
		"forged size": edit(func(r *protocol.AuditResumeRequest) {
			r.Checkpoint = bytes.Replace(r.Checkpoint, []byte("\n9\n"), []byte("\n8\n"), 1)
		}),
		"other key":      os.resumeRequest(9),
		"wrong edge":     edit(func(r *protocol.AuditResumeRequest) { r.Hashes[0] ^= 1 }),
		"edge too short": edit(func(r *protocol.AuditResumeRequest) { r.Hashes = r.Hashes[:32] }),
		"edge ragged":    edit(func(r *protocol.AuditResumeRequest) { r.Hashes = r.Hashes[:40] }),
		"hashes, no cp":  edit(func(r *protocol.AuditResumeRequest) { r.Checkpoint = nil }),
		"garbage":        {Checkpoint: []byte("hello\n")},
		"edge of size 8": edit(func(r *protocol.AuditResumeRequest) { r.Hashes = s.resumeRequest(8).Hashes }),
		"unsigned note": edit(func(r *protocol.AuditResumeRequest) {
			r.Checkpoint = r.Checkpoint[:bytes.Index(r.Checkpoint, []byte("\n\n"))+2]
		}),
	} {
		l := newLog(t, 1)
		if _, err := l.Resume(req); err == nil {
			t.Errorf("%s: Resume accepted it", name)
		}
		if _, err := l.Append(func(int64) ([]byte, error) { return []byte("x"), nil }); !errors.Is(err, ErrNotResumed) {
			t.Errorf("%s: the log took an entry after a refused Resume: %v", name, err)
		}
	}
	if _, err := newLog(t, 1).Resume(good); err != nil {
		t.Fatalf("the good presentation: %v", err)
	}
}

// TestRunningResume: a running log hands a host that lost batches those it
// lacks, refuses to go back past what the host acknowledged, and refuses a
// checkpoint of another history.
func TestRunningResume(t *testing.T) {
	l := newLog(t, 1)
	l.Resume(protocol.AuditResumeRequest{})
	s := newStore()
	appendMany(t, l, s, 5, 1)
	l.Ack(3)
	// The host lost entries 3 and 4: it presents size 3 and gets them back.
	lost := newStore()
	for _, n := range []int64{3} {
		lost.hashes, lost.entries, lost.checkpoints = s.hashes, s.entries[:n], map[int64][]byte{n: s.checkpoints[n]}
	}
	resp, err := l.Resume(lost.resumeRequest(3))
	if err != nil || resp.Size != 5 || len(resp.Batches) != 2 || resp.Batches[0].Start != 3 {
		t.Fatalf("Resume from 3: %v %+v", err, resp)
	}
	// Size 2 is below what the host acknowledged: refused.
	if _, err := l.Resume(s.resumeRequest(2)); !errors.Is(err, protocol.ErrAuditLog) {
		t.Fatalf("Resume from below the acknowledged size: %v", err)
	}
	// The current state: nothing to send.
	if resp, err := l.Resume(s.resumeRequest(5)); err != nil || resp.Size != 5 || len(resp.Batches) != 0 {
		t.Fatalf("Resume at the current size: %v %+v", err, resp)
	}
}

// TestUnackedBound: past MaxUnacked unacknowledged entries Append refuses;
// an Ack lets it go on.
func TestUnackedBound(t *testing.T) {
	l := newLog(t, 1, func(c *Config) { c.MaxBatch, c.MaxUnacked = 1, 3 })
	l.Resume(protocol.AuditResumeRequest{})
	add := func() error {
		_, err := l.Append(func(int64) ([]byte, error) { return []byte("e"), nil })
		return err
	}
	for range 3 {
		if err := add(); err != nil {
			t.Fatal(err)
		}
	}
	if err := add(); !errors.Is(err, protocol.ErrAuditLog) {
		t.Fatalf("the 4th unacknowledged entry: %v", err)
	}
	l.Ack(2)
	for range 2 {
		if err := add(); err != nil {
			t.Fatalf("after Ack: %v", err)
		}
	}
	l.Ack(99) // past the log: ignored
	if err := add(); !errors.Is(err, protocol.ErrAuditLog) {
		t.Fatalf("an Ack past the log counted: %v", err)
	}
}

// TestBuildFailure: a failed build takes its index with a void entry, returns
// the error, and the log goes on.
func TestBuildFailure(t *testing.T) {
	l := newLog(t, 1)
	l.Resume(protocol.AuditResumeRequest{})
	boom := errors.New("boom")
	if _, err := l.Append(func(int64) ([]byte, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Fatalf("Append: %v", err)
	}
	res, err := l.Append(func(int64) ([]byte, error) { return []byte("next"), nil })
	if err != nil || res.Index != 1 {
		t.Fatalf("after the failure: %v %+v", err, res)
	}
	if e, err := auditlog.Parse(res.Batch.Entries[0]); res.Batch.Start == 0 && (err != nil || e.Kind != "void") {
		t.Fatalf("void entry: %v %+v", err, e)
	}
}

// TestNewKey: the signer and verifier agree for many keys and names (a
// verifier key's base64 often holds '+').
func TestNewKey(t *testing.T) {
	for i := range 64 {
		name := fmt.Sprintf("127.0.0.1:%d/audit", 40000+i)
		signer, verifier, vkey, err := NewKey(name, ed25519.NewKeyFromSeed(bytes.Repeat([]byte{byte(i)}, 32)))
		if err != nil {
			t.Fatalf("key %d: %v", i, err)
		}
		msg, err := note.Sign(&note.Note{Text: "hello\n"}, signer)
		if err != nil {
			t.Fatal(err)
		}
		v, _ := note.NewVerifier(vkey)
		if _, err := note.Open(msg, note.VerifierList(v)); err != nil || verifier.KeyHash() != v.KeyHash() {
			t.Fatalf("key %d: %v", i, err)
		}
	}
}

// TestResumePages: a host that lost many batches gets them back in answers
// that fit a frame, and asking again from where it got to gets the rest.
func TestResumePages(t *testing.T) {
	l := newLog(t, 1, func(c *Config) { c.MaxBatch = 1 })
	l.Resume(protocol.AuditResumeRequest{})
	s := newStore()
	big := bytes.Repeat([]byte("e"), 3000)
	for range 300 {
		res, err := l.Append(func(int64) ([]byte, error) { return big, nil })
		if err != nil {
			t.Fatal(err)
		}
		s.apply(t, res.Batch)
	}
	host := newStore()
	rounds := 0
	for int64(len(host.entries)) < 300 {
		host.hashes = s.hashes // the right edge of whatever size it is at
		req := host.resumeRequest(int64(len(host.entries)))
		if len(host.entries) > 0 {
			req.Checkpoint = s.checkpoints[int64(len(host.entries))]
		}
		resp, err := l.Resume(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := protocol.Marshal(resp)
		if err != nil || len(b) > protocol.MaxFrameSize-1024 {
			t.Fatalf("answer of %d bytes (%v)", len(b), err)
		}
		for _, bt := range resp.Batches {
			host.apply(t, bt)
		}
		if rounds++; rounds > 20 || len(resp.Batches) == 0 {
			t.Fatalf("round %d: %d batches, more %v", rounds, len(resp.Batches), resp.More)
		}
	}
	if rounds < 2 {
		t.Fatal("everything came in one answer: the test does not page")
	}
}

// TestBatchFitsFrame: the largest batch of the largest entries, as every
// appending answer carries it, fits a protocol frame; a larger MaxBatch is
// refused.
func TestBatchFitsFrame(t *testing.T) {
	if _, err := New(Config{Origin: origin, Key: ed25519.NewKeyFromSeed(make([]byte, 32)), MaxBatch: maxMaxBatch + 1}); err == nil {
		t.Fatalf("MaxBatch %d accepted", maxMaxBatch+1)
	}
	l := newLog(t, 1, func(c *Config) { c.MaxBatch, c.Linger = maxMaxBatch, 50*time.Millisecond })
	l.Resume(protocol.AuditResumeRequest{})
	big := bytes.Repeat([]byte("e"), auditlog.MaxEntrySize)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var largest int
	for range maxMaxBatch {
		wg.Go(func() {
			res, err := l.Append(func(int64) ([]byte, error) { return big, nil })
			if err != nil {
				t.Error(err)
				return
			}
			b, err := protocol.Marshal(protocol.MintOIDCResponse{JWT: strings.Repeat("j", 2048), Log: res})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			largest = max(largest, len(b))
			mu.Unlock()
		})
	}
	wg.Wait()
	if largest > protocol.MaxFrameSize {
		t.Fatalf("an answer of %d bytes, more than a frame", largest)
	}
}
