// Package logtree is the enclave's audit log: the right edge of an RFC 6962
// Merkle tree (golang.org/x/mod/sumdb/tlog) and the key that signs its
// checkpoints. The enclave is the only writer of the tree: every entry gets
// its index here, and every checkpoint is signed here, over a tree that
// extends the last one this process signed. The host stores what the log
// hands out (entries, stored hashes, checkpoints) and proves nothing.
//
// # Start here
//
// [New] takes a [Config] (the default log's origin, the checkpoint key). A
// new Log takes no entries until [Log.Resume] is given the host's latest
// checkpoint and right edge (and the log's name): an empty store starts an
// empty log. Then [Log.Append] adds an entry, built by the caller once it
// knows the entry's index (a minted JWT's jti names it, so the JWT is
// signed inside build), and returns where it landed: its index, its
// inclusion proof, and the batch to store.
//
// # Group commit
//
// Appends that arrive together share a batch: one checkpoint signature for
// all of them. A batch takes reservations until the batch before it is
// committed and all its own entries are built (so a lone caller waits for
// nobody), or until it holds MaxBatch entries; with Linger set, it also stays
// open at least that long after its first reservation, to grow larger under
// load. Batches commit strictly in order.
//
// Linger is 0 by default because waiting did not pay where it was measured:
// 16 clients minting through the whole broker on 2 cores (testbroker's
// BenchmarkMintParallelLinger) took 283 µs a mint with batches of 1.1
// entries, 267-297 µs with 200 µs of linger (2.6 entries a batch), 300-322 µs
// with 1 ms (5.6) and 343-345 µs with 2 ms (8.9): a checkpoint signature
// costs less than the wait. The host's store groups the batches of many
// mints into one fsync either way.
//
// # Acknowledgement
//
// The host acknowledges what its store holds durably ([Log.Ack], from the
// log_size of each request). The log keeps every batch past the acknowledged
// size, to hand back at [Log.Resume] to a host that lost some, and refuses new
// entries once MaxUnacked are unacknowledged: the log never runs far ahead of
// the store, and a host that stops storing stops minting.
//
// # Restart and rollback
//
// A restarted enclave knows nothing of its log but its key. Resume checks
// that the host's checkpoint is signed by that key and that the hashes it
// presents give the checkpoint's root, and continues from there. A host that
// presents an older checkpoint than the latest one the enclave signed makes a
// restarted enclave continue from it: a fork, which anyone holding a later
// checkpoint detects, because no consistency proof joins the two. A running
// enclave never forks: it refuses a checkpoint older than what the host
// acknowledged, and one it cannot join to the batches it keeps.
//
// # Named logs
//
// Several enclave instances of one image hold the same checkpoint key, and
// each keeps its own log: the host names it in audit_resume
// (protocol.AuditResumeRequest.Log, see shared/auditlog). The first Resume
// that succeeds chooses the log for the Log's life: its origin
// (auditlog.LogOrigin of Config.Origin and the name), and so the name the key
// signs under and the checkpoints' first line. A later Resume naming another
// log is refused: within one boot the enclave signs one log's checkpoints.
package logtree

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/agentkeys/broker/shared/auditlog"
	"github.com/agentkeys/broker/shared/protocol"
)

// Defaults of Config.
const (
	DefaultMaxBatch   = 32
	DefaultMaxUnacked = 4096
)

// maxMaxBatch bounds MaxBatch so that a batch of the largest entries
// (auditlog.MaxEntrySize each) and its hashes fill at most half of a frame:
// every answer that appended carries its whole batch.
const maxMaxBatch = protocol.MaxFrameSize / 2 / auditlog.MaxEntrySize

// Config configures a Log.
type Config struct {
	// Origin is the default log's origin ("broker.example.com/audit"): its
	// checkpoints' first line and the name of its key. The log named N has
	// origin Origin + "/N" (auditlog.LogOrigin); Resume chooses the log.
	Origin string
	// Key signs every log's checkpoints; only the name differs per log.
	Key ed25519.PrivateKey
	// MaxBatch bounds the entries of one batch (default DefaultMaxBatch,
	// at most 32 so that a batch fits half a protocol frame). Every caller's
	// answer carries its whole batch, so the bytes sent grow with its square.
	MaxBatch int
	// MaxUnacked bounds the entries past the host's acknowledged size
	// (default DefaultMaxUnacked); past it Append refuses.
	MaxUnacked int64
	// Linger keeps a batch open at least this long after its first
	// reservation (default 0: a batch closes as soon as it can commit).
	Linger time.Duration
	// Now is the clock of the entries Log writes itself (default time.Now).
	Now func() time.Time
}

// Errors of Append and Resume. Each is a *protocol.Error with code audit_log
// or bad_request, sent to the host as is.
var (
	ErrNotResumed = protocol.Errorf(protocol.CodeAuditLog, "the enclave's audit log is not resumed yet: the host must present its log (audit_resume) before anything is minted")
	errBroken     = errors.New("the audit log failed to sign a checkpoint; restart the enclave")
)

// Log is the enclave's audit log. It is safe for concurrent use.
type Log struct {
	cfg Config

	mu      sync.Mutex
	resumed bool
	// The chosen log (see Named logs), the default one until Resume chose.
	// Set once, under mu, before resumed: build reads origin and signer
	// without mu, for batches reserved once resumed was seen under mu.
	name       string
	origin     string
	signer     note.Signer
	vkey       string
	broken     error
	size       int64            // entries under the latest checkpoint
	edge       auditlog.HashMap // the right edge of size; replaced, never modified
	root       tlog.Hash
	checkpoint []byte
	next       int64    // the next index to reserve
	open       *batch   // the batch taking reservations, if any
	queue      []*batch // reserved, not yet committed, in order
	acked      int64
	kept       []kept // committed batches past acked, in order
}

type kept struct {
	batch    protocol.AuditBatch
	prevRoot tlog.Hash // the root of the tree the batch extends
}

type batch struct {
	start      int64
	entries    [][]byte
	filled     int
	closed     bool // takes no more reservations
	lingered   bool
	committing bool
	done       chan struct{}
	// Set before done is closed.
	out    protocol.AuditBatch
	hashes auditlog.Overlay // every new hash over the prior right edge: enough for proofs
	err    error
}

// New returns a Log that takes no entries until Resume.
func New(cfg Config) (*Log, error) {
	if cfg.Origin == "" || len(cfg.Key) != ed25519.PrivateKeySize {
		return nil, errors.New("logtree: an origin and an Ed25519 key are required")
	}
	signer, _, vkey, err := NewKey(cfg.Origin, cfg.Key)
	if err != nil {
		return nil, fmt.Errorf("logtree: %w", err)
	}
	if cfg.MaxBatch == 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.MaxBatch < 1 || cfg.MaxBatch > maxMaxBatch {
		return nil, fmt.Errorf("logtree: MaxBatch %d is outside [1, %d]", cfg.MaxBatch, maxMaxBatch)
	}
	if cfg.MaxUnacked == 0 {
		cfg.MaxUnacked = DefaultMaxUnacked
	}
	if cfg.MaxUnacked < int64(cfg.MaxBatch) {
		return nil, fmt.Errorf("logtree: MaxUnacked %d is less than MaxBatch %d", cfg.MaxUnacked, cfg.MaxBatch)
	}
	if cfg.Linger < 0 || cfg.Linger > time.Second {
		return nil, fmt.Errorf("logtree: Linger %s is outside [0, 1s]", cfg.Linger)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Log{cfg: cfg, edge: auditlog.HashMap{}, origin: cfg.Origin, signer: signer, vkey: vkey}, nil
}

// VerifierKey is the note verifier key of the log's checkpoints: the default
// log's until Resume chose a named log, then that log's.
func (l *Log) VerifierKey() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.vkey
}

// Name is the name of the log chosen by the first Resume ("" for the default
// log, and before Resume). Called from an Append's build, it is the name of
// the log that entry is appended to: the name never changes once resumed.
func (l *Log) Name() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.name
}

// Append reserves the next index, calls build with it (outside any lock,
// concurrently with other appends), and returns once the entry's batch is
// committed: its checkpoint signed. build returns the entry's encoding
// (shared/auditlog). If build fails, the index is taken by an entry saying
// so and Append returns build's error.
func (l *Log) Append(build func(index int64) ([]byte, error)) (protocol.AuditLogged, error) {
	l.mu.Lock()
	switch {
	case l.broken != nil:
		l.mu.Unlock()
		return protocol.AuditLogged{}, protocol.Errorf(protocol.CodeAuditLog, "%v", l.broken)
	case !l.resumed:
		l.mu.Unlock()
		return protocol.AuditLogged{}, ErrNotResumed
	case l.next-l.acked >= l.cfg.MaxUnacked:
		n, acked := l.next, l.acked
		l.mu.Unlock()
		return protocol.AuditLogged{}, protocol.Errorf(protocol.CodeAuditLog,
			"the host has stored the audit log only up to entry %d of %d; nothing more is logged (or minted) until it stores the rest", acked, n)
	}
	b := l.open
	if b == nil {
		b = &batch{start: l.next, done: make(chan struct{})}
		l.open = b
		l.queue = append(l.queue, b)
		if l.cfg.Linger > 0 {
			time.AfterFunc(l.cfg.Linger, func() { l.linger(b) })
		} else {
			b.lingered = true
		}
	}
	slot := len(b.entries)
	b.entries = append(b.entries, nil)
	l.next++
	if len(b.entries) == l.cfg.MaxBatch {
		b.closed = true
		l.open = nil
	}
	l.mu.Unlock()

	index := b.start + int64(slot)
	entry, berr := build(index)
	if berr != nil {
		entry = l.voidEntry()
	}

	l.mu.Lock()
	b.entries[slot] = entry
	b.filled++
	next := l.ready()
	l.mu.Unlock()
	l.commit(next)

	<-b.done
	if b.err != nil {
		return protocol.AuditLogged{}, protocol.Errorf(protocol.CodeAuditLog, "%v", b.err)
	}
	if berr != nil {
		return protocol.AuditLogged{}, berr
	}
	end := b.start + int64(len(b.entries))
	proof, err := tlog.ProveRecord(end, index, b.hashes)
	if err != nil {
		return protocol.AuditLogged{}, fmt.Errorf("failed to prove entry %d: %w", index, err)
	}
	return protocol.AuditLogged{Index: index, Proof: auditlog.JoinHashes(proof), Batch: b.out}, nil
}

// voidEntry takes the index of an entry whose build failed.
func (l *Log) voidEntry() []byte {
	e := auditlog.Entry{Version: auditlog.Version, Time: l.cfg.Now().Unix(), Kind: "void", Outcome: "enclave_error",
		Wallet: "unknown", Detail: "the enclave failed to build this entry"}
	b, merr := e.Marshal()
	if merr != nil {
		panic(merr) // a fixed, valid entry
	}
	return b
}

func (l *Log) linger(b *batch) {
	l.mu.Lock()
	b.lingered = true
	next := l.ready()
	l.mu.Unlock()
	l.commit(next)
}

// ready returns the first queued batch if it can be committed now, marking it
// committing and closing it to reservations. l.mu must be held.
func (l *Log) ready() *batch {
	if len(l.queue) == 0 {
		return nil
	}
	b := l.queue[0]
	if b.committing || b.filled < len(b.entries) || !(b.lingered || b.closed) {
		return nil
	}
	b.closed, b.committing = true, true
	if l.open == b {
		l.open = nil
	}
	return b
}

// commit commits b, then every batch behind it that became ready meanwhile.
// Only one goroutine commits at a time (ready hands out the first batch of
// the queue once), so the tree state it reads outside l.mu is stable.
func (l *Log) commit(b *batch) {
	for b != nil {
		l.mu.Lock()
		edge, root, broken := l.edge, l.root, l.broken
		l.mu.Unlock()
		var out protocol.AuditBatch
		var hm auditlog.Overlay
		var newRoot tlog.Hash
		err := broken
		if err == nil {
			out, hm, newRoot, err = l.build(b, edge)
		}
		l.mu.Lock()
		if err != nil {
			l.broken = errBroken
			b.err = errBroken
		} else {
			end := b.start + int64(len(b.entries))
			idx := auditlog.RightEdge(end)
			hs, _ := hm.ReadHashes(idx) // build read them all for the root
			ne := make(auditlog.HashMap, len(idx))
			for i, x := range idx {
				ne[x] = hs[i]
			}
			l.size, l.edge, l.root, l.checkpoint = end, ne, newRoot, out.Checkpoint
			l.kept = append(l.kept, kept{batch: out, prevRoot: root})
			b.out, b.hashes = out, hm
		}
		l.queue = l.queue[1:]
		close(b.done)
		b = l.ready()
		l.mu.Unlock()
	}
}

// build hashes b's entries onto edge and signs the checkpoint. The hashes
// it returns are the new ones over edge (which is never modified).
func (l *Log) build(b *batch, edge auditlog.HashMap) (protocol.AuditBatch, auditlog.Overlay, tlog.Hash, error) {
	hm := auditlog.Overlay{Top: make(auditlog.HashMap, 2*len(b.entries)), Base: edge}
	hashes := make([]byte, 0, 2*len(b.entries)*tlog.HashSize)
	for i, e := range b.entries {
		n := b.start + int64(i)
		sh, err := tlog.StoredHashes(n, e, hm)
		if err != nil {
			return protocol.AuditBatch{}, hm, tlog.Hash{}, fmt.Errorf("failed to hash entry %d: %w", n, err)
		}
		for j, h := range sh {
			hm.Top[tlog.StoredHashIndex(0, n)+int64(j)] = h
			hashes = append(hashes, h[:]...)
		}
	}
	end := b.start + int64(len(b.entries))
	root, err := tlog.TreeHash(end, hm)
	if err != nil {
		return protocol.AuditBatch{}, hm, tlog.Hash{}, fmt.Errorf("failed to hash the tree: %w", err)
	}
	cp, err := note.Sign(&note.Note{Text: auditlog.Checkpoint{Origin: l.origin, Tree: tlog.Tree{N: end, Hash: root}}.Format()}, l.signer)
	if err != nil {
		return protocol.AuditBatch{}, hm, tlog.Hash{}, fmt.Errorf("failed to sign the checkpoint: %w", err)
	}
	return protocol.AuditBatch{Start: b.start, Entries: b.entries, Hashes: hashes, Checkpoint: cp}, hm, root, nil
}

// Ack records that the host's store holds the first size entries durably,
// and forgets the batches it holds. A size past the log's is ignored.
func (l *Log) Ack(size int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ackLocked(size)
}

func (l *Log) ackLocked(size int64) {
	if size <= l.acked || size > l.size {
		return
	}
	l.acked = size
	i := 0
	for i < len(l.kept) && l.kept[i].batch.Start+int64(len(l.kept[i].batch.Entries)) <= size {
		i++
	}
	l.kept = append([]kept(nil), l.kept[i:]...)
}

// State is the log's latest checkpoint and size.
func (l *Log) State() (size int64, checkpoint []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.size, l.checkpoint
}

// keptFrom returns the position in l.kept of the batch starting at n, or -1.
func (l *Log) keptFrom(n int64) int {
	for i, k := range l.kept {
		if k.batch.Start == n {
			return i
		}
	}
	return -1
}

// maxResumeBatches bounds the batches of one audit_resume answer, well
// under the protocol's limit on array elements.
const maxResumeBatches = 256

// maxEdge bounds the right edge a host may present: one hash per bit of a
// 63-bit size.
const maxEdge = 63

// Resume takes the host's log (see the package doc and
// protocol.AuditResumeRequest). A log not yet resumed continues from a valid
// presentation of the log req.Log names, which it keeps from then on; a
// running one answers with the batches the host lacks.
func (l *Log) Resume(req protocol.AuditResumeRequest) (protocol.AuditResumeResponse, error) {
	var zero protocol.AuditResumeResponse
	if err := auditlog.CheckLogName(req.Log); err != nil {
		return zero, protocol.Errorf(protocol.CodeBadRequest, "audit_resume: %v", err)
	}
	origin := auditlog.LogOrigin(l.cfg.Origin, req.Log)
	l.mu.Lock()
	resumed, name := l.resumed, l.name
	l.mu.Unlock()
	if resumed && req.Log != name {
		return zero, otherLog(name, req.Log)
	}
	signer, verifier, vkey, err := NewKey(origin, l.cfg.Key)
	if err != nil {
		return zero, protocol.Errorf(protocol.CodeBadRequest, "audit_resume: log %q: %v", req.Log, err)
	}
	var tree tlog.Tree
	edge := auditlog.HashMap{}
	if len(req.Checkpoint) == 0 {
		if len(req.Hashes) != 0 {
			return zero, protocol.Errorf(protocol.CodeBadRequest, "audit_resume: hashes without a checkpoint")
		}
	} else {
		n, err := note.Open(req.Checkpoint, note.VerifierList(verifier))
		if err != nil {
			return zero, protocol.Errorf(protocol.CodeBadRequest, "audit_resume: the checkpoint is not signed by this enclave's checkpoint key for the log %s: %v", origin, err)
		}
		c, err := auditlog.ParseCheckpoint(n.Text)
		if err != nil || c.Origin != origin {
			return zero, protocol.Errorf(protocol.CodeBadRequest, "audit_resume: the checkpoint's text is not a checkpoint of %s", origin)
		}
		tree = c.Tree
		hs, err := auditlog.SplitHashes(req.Hashes, maxEdge)
		if err != nil {
			return zero, protocol.Errorf(protocol.CodeBadRequest, "audit_resume: %v", err)
		}
		idx := auditlog.RightEdge(tree.N)
		if len(hs) != len(idx) {
			return zero, protocol.Errorf(protocol.CodeBadRequest, "audit_resume: a tree of %d entries has %d right-edge hashes, not %d", tree.N, len(idx), len(hs))
		}
		for i, x := range idx {
			edge[x] = hs[i]
		}
		root, err := tlog.TreeHash(tree.N, edge)
		if err != nil || root != tree.Hash {
			return zero, protocol.Errorf(protocol.CodeBadRequest, "audit_resume: the right edge does not give the checkpoint's root hash")
		}
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	if l.resumed && req.Log != l.name {
		return zero, otherLog(l.name, req.Log)
	}
	if !l.resumed {
		l.resumed = true
		l.name, l.origin, l.signer, l.vkey = req.Log, origin, signer, vkey
		l.size, l.next, l.acked = tree.N, tree.N, tree.N
		l.edge, l.root, l.checkpoint = edge, tree.Hash, append([]byte(nil), req.Checkpoint...)
		return protocol.AuditResumeResponse{Size: tree.N}, nil
	}
	switch {
	case tree.N > l.size:
		return zero, protocol.Errorf(protocol.CodeAuditLog, "audit_resume: the host's log has %d entries, more than this enclave's %d: it is not this enclave's log", tree.N, l.size)
	case tree.N == l.size:
		if tree.Hash != l.root {
			return zero, protocol.Errorf(protocol.CodeAuditLog, "audit_resume: the host's checkpoint at %d entries differs from this enclave's", tree.N)
		}
		l.ackLocked(tree.N)
		return protocol.AuditResumeResponse{Size: l.size}, nil
	}
	if i := l.keptFrom(tree.N); i >= 0 {
		if l.kept[i].prevRoot != tree.Hash {
			return zero, protocol.Errorf(protocol.CodeAuditLog, "audit_resume: the host's checkpoint at %d entries differs from this enclave's", tree.N)
		}
		l.ackLocked(tree.N)
		resp := protocol.AuditResumeResponse{Size: l.size}
		sent := 0
		for _, k := range l.kept[l.keptFrom(tree.N):] {
			// Everything the batch adds to the answer, with room for the
			// encoding, so that the answer stays well within a frame.
			n := len(k.batch.Hashes) + len(k.batch.Checkpoint) + 64
			for _, e := range k.batch.Entries {
				n += len(e) + 8
			}
			if (sent+n > protocol.MaxResumeBytes || len(resp.Batches) == maxResumeBatches) && len(resp.Batches) > 0 {
				resp.More = true
				break
			}
			sent += n
			resp.Batches = append(resp.Batches, k.batch)
		}
		return resp, nil
	}
	return zero, protocol.Errorf(protocol.CodeAuditLog,
		"audit_resume: the host's log has %d entries, but it acknowledged %d and this enclave (at %d) keeps no batch from %d: it will not fork its own log; restore the host's store",
		tree.N, l.acked, l.size, tree.N)
}

// otherLog refuses an audit_resume naming another log than the one chosen.
func otherLog(chosen, asked string) error {
	return protocol.Errorf(protocol.CodeAuditLog,
		"audit_resume: this enclave keeps %s this boot (chosen by its first audit_resume), not %s: one enclave keeps one log; give the host the log name it used (--audit-log-name), or restart the enclave",
		logLabel(chosen), logLabel(asked))
}

func logLabel(name string) string {
	if name == "" {
		return "the default audit log"
	}
	return fmt.Sprintf("the audit log %q", name)
}
