package audit

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/agentkeys/broker/shared/auditlog"
	"github.com/agentkeys/broker/shared/protocol"
)

// loadTip reads the stored log's size, right edge and latest checkpoint, and
// refuses a log whose tables disagree (entries without their checkpoint,
// hashes missing, a checkpoint that does not name the stored tree).
func loadTip(conn *sql.Conn) (logState, error) {
	ctx := context.Background()
	tip := logState{edge: auditlog.HashMap{}}
	var n, maxIdx sql.NullInt64
	if err := conn.QueryRowContext(ctx, `SELECT count(*), max(idx) FROM log_entries`).Scan(&n, &maxIdx); err != nil {
		return tip, fmt.Errorf("audit: failed to read the log's size: %w", err)
	}
	if n.Int64 == 0 {
		return tip, nil
	}
	if maxIdx.Int64+1 != n.Int64 {
		return tip, fmt.Errorf("audit: the log's entries have gaps (%d entries, the last at %d): the database was altered", n.Int64, maxIdx.Int64)
	}
	tip.size = n.Int64
	if err := conn.QueryRowContext(ctx, `SELECT note FROM log_checkpoints WHERE size = ?`, tip.size).Scan(&tip.checkpoint); err != nil {
		return tip, fmt.Errorf("audit: failed to read the checkpoint of the log's %d entries: %w", tip.size, err)
	}
	idx := auditlog.RightEdge(tip.size)
	hs, err := readHashes(ctx, conn, idx)
	if err != nil {
		return tip, err
	}
	for i, x := range idx {
		tip.edge[x] = hs[i]
	}
	root, err := tlog.TreeHash(tip.size, tip.edge)
	c, cerr := checkpointTree(tip.checkpoint)
	if err != nil || cerr != nil || c.Tree.N != tip.size || c.Tree.Hash != root {
		return tip, fmt.Errorf("audit: the latest checkpoint does not name the stored tree of %d entries: the database was altered", tip.size)
	}
	return tip, nil
}

type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// readHashes reads stored hashes, in the order asked, a few hundred per query.
func readHashes(ctx context.Context, q queryer, indexes []int64) ([]tlog.Hash, error) {
	got := make(map[int64]tlog.Hash, len(indexes))
	for chunk := range slicesChunk(indexes, 500) {
		args := make([]any, len(chunk))
		for i, x := range chunk {
			args[i] = x
		}
		rows, err := q.QueryContext(ctx, `SELECT idx, hash FROM log_hashes WHERE idx IN (?`+strings.Repeat(",?", len(chunk)-1)+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("audit: failed to read log hashes: %w", err)
		}
		for rows.Next() {
			var x int64
			var h []byte
			if err := rows.Scan(&x, &h); err != nil || len(h) != tlog.HashSize {
				rows.Close()
				return nil, fmt.Errorf("audit: failed to read a log hash: %v", err)
			}
			got[x] = tlog.Hash(h)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("audit: failed to read log hashes: %w", err)
		}
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

func slicesChunk(s []int64, n int) func(func([]int64) bool) {
	return func(yield func([]int64) bool) {
		for len(s) > 0 {
			k := min(n, len(s))
			if !yield(s[:k]) {
				return
			}
			s = s[k:]
		}
	}
}

// AppendBatch implements Log: it hands b to the writer, which stores it in
// order with whatever else it commits.
func (s *SQLite) AppendBatch(ctx context.Context, b protocol.AuditBatch) error {
	if lost := s.lost.Load(); lost != nil {
		return *lost
	}
	req := &appendRequest{batch: &b, batchOnly: true, deadline: time.Now().Add(s.gapWait), done: make(chan appendResult, 1)}
	if err := s.enqueue(ctx, req); err != nil {
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
func (s *SQLite) LogSize() int64 { return s.tip.Load().size }

// ResumeRequest implements Log.
func (s *SQLite) ResumeRequest(ctx context.Context) (protocol.AuditResumeRequest, error) {
	return s.tip.Load().resumeRequest(), nil
}

// Checkpoint implements LogReader.
func (s *SQLite) Checkpoint(ctx context.Context) ([]byte, error) {
	if err := s.readable(); err != nil {
		return nil, err
	}
	return s.tip.Load().checkpoint, nil
}

// ReadHashes implements LogReader.
func (s *SQLite) ReadHashes(ctx context.Context, indexes []int64) ([]tlog.Hash, error) {
	if err := s.readable(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return readHashes(ctx, s.db, indexes)
}

// ReadEntries implements LogReader.
func (s *SQLite) ReadEntries(ctx context.Context, start, end int64) ([][]byte, error) {
	if err := readEntriesRange(start, end); err != nil {
		return nil, err
	}
	if err := s.readable(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	rows, err := s.db.QueryContext(ctx, `SELECT idx, entry FROM log_entries WHERE idx >= ? AND idx < ? ORDER BY idx`, start, end)
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
		return nil, fmt.Errorf("audit: ReadEntries [%d, %d): the log holds %d entries", start, end, s.tip.Load().size)
	}
	return out, nil
}

func (s *SQLite) readable() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	if lost := s.lost.Load(); lost != nil {
		return *lost
	}
	return nil
}
