package audit

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/agentkeys/broker/shared/auditlog"
	"github.com/agentkeys/broker/shared/protocol"
)

// memLog is Memory's Merkle log. Memory.mu guards it.
type memLog struct {
	tip         logState
	hashes      map[int64]tlog.Hash
	entries     [][]byte
	checkpoints map[int64][]byte
	changed     chan struct{} // closed, and replaced, when the log grows
	gapWait     time.Duration
	gap         bool // a batch waited in vain; cleared when the log grows
}

func newMemLog() memLog {
	return memLog{tip: logState{edge: auditlog.HashMap{}}, hashes: map[int64]tlog.Hash{},
		checkpoints: map[int64][]byte{}, changed: make(chan struct{}), gapWait: DefaultLogGapWait}
}

// SetLogGapWait sets how long a batch waits for the batches before it
// (default DefaultLogGapWait).
func (m *Memory) SetLogGapWait(d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.log.gapWait = d
}

// withBatch waits until b can be stored (the log holds everything before
// it), stores it unless it is already stored, then calls then, all under
// m.mu: the batch and what then stores are one step.
func (m *Memory) withBatch(ctx context.Context, b protocol.AuditBatch, then func()) error {
	m.mu.Lock()
	wait := m.log.gapWait
	m.mu.Unlock()
	deadline := time.Now().Add(wait)
	for {
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			return ErrClosed
		}
		if m.failure != nil {
			m.mu.Unlock()
			return fmt.Errorf("failed to append audit log batch: %w", m.failure)
		}
		l := &m.log
		end := b.Start + int64(len(b.Entries))
		switch {
		case b.Start == l.tip.size:
			t, err := l.tip.extend(b)
			if err != nil {
				m.mu.Unlock()
				return err
			}
			for k, v := range t.hashes {
				l.hashes[k] = v
			}
			l.entries = append(l.entries, b.Entries...)
			l.checkpoints[end] = b.Checkpoint
			l.tip, l.gap = t.next, false
			close(l.changed)
			l.changed = make(chan struct{})
			then()
			m.mu.Unlock()
			return nil
		case b.Start < l.tip.size:
			if end > l.tip.size || !bytes.Equal(l.checkpoints[end], b.Checkpoint) {
				m.mu.Unlock()
				return fmt.Errorf("%w: batch [%d, %d) differs from what is stored", ErrLogMismatch, b.Start, end)
			}
			then()
			m.mu.Unlock()
			return nil
		}
		ch, size := l.changed, l.tip.size
		m.mu.Unlock()
		t := time.NewTimer(time.Until(deadline))
		select {
		case <-ch:
			t.Stop()
		case <-t.C:
			m.mu.Lock()
			m.log.gap = true
			m.mu.Unlock()
			return fmt.Errorf("audit: %w: the batch from entry %d waited %s for the store (at %d) to hold the entries before it", ErrLogGap, b.Start, wait, size)
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}

// AppendBatch implements Log.
func (m *Memory) AppendBatch(ctx context.Context, b protocol.AuditBatch) error {
	return m.withBatch(ctx, b, func() {})
}

// LogSize implements Log.
func (m *Memory) LogSize() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.log.tip.size
}

// ResumeRequest implements Log.
func (m *Memory) ResumeRequest(ctx context.Context) (protocol.AuditResumeRequest, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.log.tip.resumeRequest(), nil
}

func (st logState) resumeRequest() protocol.AuditResumeRequest {
	if st.size == 0 {
		return protocol.AuditResumeRequest{}
	}
	var hs []tlog.Hash
	for _, x := range auditlog.RightEdge(st.size) {
		hs = append(hs, st.edge[x])
	}
	return protocol.AuditResumeRequest{Checkpoint: st.checkpoint, Hashes: auditlog.JoinHashes(hs)}
}

// Checkpoint implements LogReader.
func (m *Memory) Checkpoint(ctx context.Context) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failure != nil {
		return nil, fmt.Errorf("audit store unavailable: %w", m.failure)
	}
	return bytes.Clone(m.log.tip.checkpoint), nil
}

// ReadHashes implements LogReader.
func (m *Memory) ReadHashes(ctx context.Context, indexes []int64) ([]tlog.Hash, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failure != nil {
		return nil, fmt.Errorf("audit store unavailable: %w", m.failure)
	}
	return auditlog.HashMap(m.log.hashes).ReadHashes(indexes)
}

// ReadEntries implements LogReader.
func (m *Memory) ReadEntries(ctx context.Context, start, end int64) ([][]byte, error) {
	if err := readEntriesRange(start, end); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failure != nil {
		return nil, fmt.Errorf("audit store unavailable: %w", m.failure)
	}
	if end > int64(len(m.log.entries)) {
		return nil, fmt.Errorf("audit: ReadEntries [%d, %d): the log holds %d entries", start, end, len(m.log.entries))
	}
	out := make([][]byte, 0, end-start)
	for _, e := range m.log.entries[start:end] {
		out = append(out, bytes.Clone(e))
	}
	return out, nil
}
