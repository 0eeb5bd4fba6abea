package audit

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Memory is a Store that keeps records in memory, for tests of the code that
// uses a Store. It normalizes, validates and numbers records exactly as
// SQLite does, and can be told to fail with SetFailure.
//
// Memory aggregates what Count is given until Flush or Close, which append
// the aggregates; it has no interval of its own.
type Memory struct {
	agg *aggregator

	mu      sync.Mutex
	log     memLog
	records []Record
	failure error
	closed  bool
}

var (
	_ Store = (*Memory)(nil)
	_ Log   = (*Memory)(nil)
)

// NewMemory returns an empty in-memory Store.
func NewMemory() *Memory {
	return &Memory{agg: newAggregator(DefaultAggregateClients), log: newMemLog()}
}

// Count implements Store.
func (m *Memory) Count(r Record) error {
	r, err := prepare(r, time.Now())
	if err != nil {
		return err
	}
	return m.agg.add(r)
}

// Flush appends the aggregates of everything counted since the last Flush,
// as the end of an interval does.
func (m *Memory) Flush(ctx context.Context) error {
	for _, r := range m.agg.take(false) {
		if _, err := m.Append(ctx, r); err != nil {
			return err
		}
	}
	return nil
}

// SetFailure makes every later Append, List and Ping fail with an error
// wrapping err, as a broken database would; nothing is stored meanwhile.
// SetFailure(nil) makes the store work again.
func (m *Memory) SetFailure(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.failure = err
}

// Append implements Store.
func (m *Memory) Append(ctx context.Context, r Record) (Record, error) {
	if err := ctx.Err(); err != nil {
		return Record{}, err
	}
	r, err := prepare(r, time.Now())
	if err != nil {
		return Record{}, err
	}
	if r.Batch != nil {
		b := r.Batch
		r.Batch = nil
		err := m.withBatch(ctx, *b, func() {
			r.Seq = int64(len(m.records)) + 1
			m.records = append(m.records, r)
		})
		if err != nil {
			return Record{}, err
		}
		return r, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return Record{}, ErrClosed
	}
	if m.failure != nil {
		return Record{}, fmt.Errorf("failed to append audit record: %w", m.failure)
	}
	r.Seq = int64(len(m.records)) + 1
	m.records = append(m.records, r)
	return r, nil
}

// List implements Store.
func (m *Memory) List(ctx context.Context, afterSeq int64, limit int) ([]Record, error) {
	limit, err := listLimit(afterSeq, limit)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	if m.failure != nil {
		return nil, fmt.Errorf("failed to list audit records: %w", m.failure)
	}
	// Seq n is at index n-1.
	if afterSeq >= int64(len(m.records)) {
		return nil, nil
	}
	rest := m.records[afterSeq:]
	return append([]Record(nil), rest[:min(limit, len(rest))]...), nil
}

// Ping implements Store.
func (m *Memory) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if m.failure != nil {
		return fmt.Errorf("audit store unavailable: %w", m.failure)
	}
	if m.log.gap {
		return fmt.Errorf("audit: %w", ErrLogGap)
	}
	return nil
}

// Close implements Store. It appends the pending aggregates first.
func (m *Memory) Close() error {
	for _, r := range m.agg.take(true) {
		m.Append(context.Background(), r)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}
