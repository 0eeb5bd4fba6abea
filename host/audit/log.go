package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/agentkeys/broker/shared/auditlog"
	"github.com/agentkeys/broker/shared/protocol"
)

// DefaultLogGapWait is how long a batch that arrives before the batch ahead
// of it waits for that one, unless WithLogGapWait says otherwise.
const DefaultLogGapWait = 5 * time.Second

// DefaultLogGapGrace is how long the SQLite writer waits for the batches
// that fill a gap before it commits a transaction in which a later batch
// would wait for them, unless WithLogGapGrace says otherwise.
const DefaultLogGapGrace = time.Millisecond

// MaxReadEntries is the most entries one ReadEntries call returns.
const MaxReadEntries = 4096

// ErrLogGap is wrapped by the error of an Append whose log batch waited in
// vain for the batches before it: the host lost an enclave answer (a caller
// gave up before it arrived). Until the store catches up (Resume fetches the
// missing batches from the enclave), Ping fails with it too.
var ErrLogGap = errors.New("the audit log is missing entries the enclave logged")

// ErrLogMismatch is wrapped by the error of an Append or AppendBatch whose
// batch does not fit the stored log: its hashes or checkpoint disagree with
// its entries or with the tree the store holds, or it overlaps what is stored
// with different contents. Nothing of it is stored.
var ErrLogMismatch = errors.New("audit log batch does not fit the stored log")

// LogReader reads the Merkle log (for tiles, proofs and auditors).
type LogReader interface {
	// Checkpoint returns the latest signed checkpoint note, or nil for an
	// empty log.
	Checkpoint(ctx context.Context) ([]byte, error)
	// ReadHashes returns the stored hashes at the given tlog stored-hash
	// indexes; every one must be stored.
	ReadHashes(ctx context.Context, indexes []int64) ([]tlog.Hash, error)
	// ReadEntries returns the entries [start, end), every one stored, at most
	// MaxReadEntries of them.
	ReadEntries(ctx context.Context, start, end int64) ([][]byte, error)
}

// Log is the Merkle log side of a Store: the enclave's batches, stored in
// order and exactly once.
type Log interface {
	LogReader
	// AppendBatch stores a batch that no record carries (one that Resume
	// fetched). A batch already stored is a no-op; one that starts past the
	// stored size waits (bounded) for the ones before it.
	AppendBatch(ctx context.Context, b protocol.AuditBatch) error
	// LogSize is the number of entries stored durably: the host's
	// acknowledgement to the enclave (log_size).
	LogSize() int64
	// ResumeRequest is the store's latest checkpoint and right edge, for
	// audit_resume.
	ResumeRequest(ctx context.Context) (protocol.AuditResumeRequest, error)
}

// Logged is where a record's entry is in the Merkle log.
type Logged struct {
	Index    int64
	LeafHash tlog.Hash // tlog.RecordHash of the entry
}

// Resume presents the store's log to the enclave (audit_resume) as the log
// named name ("" for the default log; see shared/auditlog) and stores the
// batches the enclave answers with, until it has them all. The host calls it
// on every new enclave connection, before it mints, and again when an Append
// failed with ErrLogGap. An enclave keeps one log per boot: it refuses a
// name other than the one its first audit_resume gave.
func Resume(ctx context.Context, log Log, name string, call func(ctx context.Context, op protocol.Op, req, resp any) error) error {
	if err := auditlog.CheckLogName(name); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	for range 1 << 16 { // bounded: each round stores at least one batch
		req, err := log.ResumeRequest(ctx)
		if err != nil {
			return err
		}
		req.Log = name
		var resp protocol.AuditResumeResponse
		if err := call(ctx, protocol.OpAuditResume, req, &resp); err != nil {
			return fmt.Errorf("audit: the enclave refused the stored log: %w", err)
		}
		for _, b := range resp.Batches {
			if err := log.AppendBatch(ctx, b); err != nil {
				return fmt.Errorf("audit: failed to store a batch the enclave handed back: %w", err)
			}
		}
		if !resp.More || len(resp.Batches) == 0 {
			return nil
		}
	}
	return errors.New("audit: resume did not finish")
}

// logState is the tip of the stored log, kept in memory by every store: the
// size, the right edge and the latest checkpoint.
type logState struct {
	size       int64
	edge       auditlog.HashMap
	checkpoint []byte
}

// batchTip is what storing a batch adds: its stored hashes by index (and in
// order from first), and the tip after it.
type batchTip struct {
	hashes  map[int64]tlog.Hash
	first   int64       // the stored-hash index of ordered[0]
	ordered []tlog.Hash // the batch's stored hashes, in index order
	next    logState
}

// maxBatchEntries bounds a batch from the enclave (its MaxBatch is at most 256).
const maxBatchEntries = 1024

// extend checks that b extends st: b starts at st.size, its hashes are the
// stored hashes of its entries on top of st's right edge, and its
// checkpoint's text names the tree they end. The signature is not checked
// here (the host has no business refusing the enclave's log; auditors check
// it), but a batch that would make the stored tree disagree with its own
// checkpoint is refused.
func (st logState) extend(b protocol.AuditBatch) (batchTip, error) {
	n := int64(len(b.Entries))
	if b.Start != st.size || n == 0 || n > maxBatchEntries {
		return batchTip{}, fmt.Errorf("%w: batch of %d at %d, stored size %d", ErrLogMismatch, n, b.Start, st.size)
	}
	end := b.Start + n
	first := tlog.StoredHashIndex(0, b.Start)
	hs, err := auditlog.SplitHashes(b.Hashes, int(tlog.StoredHashIndex(0, end)-first))
	if err != nil || int64(len(hs)) != tlog.StoredHashIndex(0, end)-first {
		return batchTip{}, fmt.Errorf("%w: batch at %d carries the wrong number of hashes", ErrLogMismatch, b.Start)
	}
	added := make(map[int64]tlog.Hash, len(hs))
	r := auditlog.Overlay{Top: added, Base: st.edge}
	k := 0
	for i, e := range b.Entries {
		if len(e) == 0 || len(e) > auditlog.MaxEntrySize {
			return batchTip{}, fmt.Errorf("%w: entry %d is %d bytes", ErrLogMismatch, b.Start+int64(i), len(e))
		}
		sh, err := tlog.StoredHashes(b.Start+int64(i), e, r)
		if err != nil {
			return batchTip{}, fmt.Errorf("%w: %v", ErrLogMismatch, err)
		}
		for j, h := range sh {
			if h != hs[k] {
				return batchTip{}, fmt.Errorf("%w: stored hash %d of batch at %d", ErrLogMismatch, k, b.Start)
			}
			added[tlog.StoredHashIndex(0, b.Start+int64(i))+int64(j)] = h
			k++
		}
	}
	root, err := tlog.TreeHash(end, r)
	if err != nil {
		return batchTip{}, fmt.Errorf("%w: %v", ErrLogMismatch, err)
	}
	c, err := checkpointTree(b.Checkpoint)
	if err != nil || c.Tree.N != end || c.Tree.Hash != root {
		return batchTip{}, fmt.Errorf("%w: the checkpoint of batch at %d does not name the tree its entries make", ErrLogMismatch, b.Start)
	}
	idx := auditlog.RightEdge(end)
	edge, err := r.ReadHashes(idx)
	if err != nil {
		return batchTip{}, fmt.Errorf("%w: %v", ErrLogMismatch, err)
	}
	next := logState{size: end, edge: make(auditlog.HashMap, len(idx)), checkpoint: b.Checkpoint}
	for i, x := range idx {
		next.edge[x] = edge[i]
	}
	return batchTip{hashes: added, first: first, ordered: hs, next: next}, nil
}

// checkpointTree parses the text of a signed note without checking its
// signatures.
func checkpointTree(note []byte) (auditlog.Checkpoint, error) {
	i := bytes.Index(note, []byte("\n\n"))
	if i < 0 || len(note) > 4096 {
		return auditlog.Checkpoint{}, errors.New("not a signed note")
	}
	return auditlog.ParseCheckpoint(string(note[:i+1]))
}

// logged checks a record's claim to an entry of its batch and returns where
// the entry is.
func logged(r Record) (Logged, error) {
	b := r.Batch
	if r.Logged == nil {
		return Logged{}, fmt.Errorf("%w: a record with a batch must say which entry is its own (Logged)", ErrInvalidRecord)
	}
	i := r.Logged.Index - b.Start
	if i < 0 || i >= int64(len(b.Entries)) {
		return Logged{}, fmt.Errorf("%w: entry %d is not in the batch [%d, %d)", ErrInvalidRecord, r.Logged.Index, b.Start, b.Start+int64(len(b.Entries)))
	}
	return Logged{Index: r.Logged.Index, LeafHash: tlog.RecordHash(b.Entries[i])}, nil
}

func readEntriesRange(start, end int64) error {
	if start < 0 || end < start || end-start > MaxReadEntries {
		return fmt.Errorf("audit: ReadEntries [%d, %d): want 0 <= start <= end, at most %d entries", start, end, MaxReadEntries)
	}
	return nil
}
