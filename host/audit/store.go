package audit

import (
	"context"
	"errors"
	"fmt"
)

// MaxListLimit is the most records one List call returns.
const MaxListLimit = 1000

// ErrClosed is returned by every Store method called after Close.
var ErrClosed = errors.New("audit store is closed")

// Store is where the host keeps audit records.
//
// Implementations are safe for concurrent use.
type Store interface {
	// Append stores r and returns it as stored: Seq set, Time normalized,
	// free-text fields cleaned. It returns only once the record is durable
	// (committed and synced to stable storage); a nil error is the caller's
	// permission to hand out the credential the record describes.
	//
	// An error means the record must be treated as not stored, and the
	// caller must return no credential. The record may nonetheless be in the
	// store: the caller's context can end while the commit is in flight,
	// and a commit can fail after reaching the disk. The log may therefore
	// hold records of credentials that were never returned, but never lacks
	// one that was.
	Append(ctx context.Context, r Record) (Record, error)

	// List returns up to limit records with Seq greater than afterSeq, in
	// Seq order. limit must be positive; values above MaxListLimit are
	// lowered to it. Page through the log with afterSeq = the last Seq seen.
	List(ctx context.Context, afterSeq int64, limit int) ([]Record, error)

	// Ping reports whether the store can be reached, for /readyz.
	Ping(ctx context.Context) error

	// Close waits for pending Appends to finish, then releases the store.
	// After Close every method returns ErrClosed.
	Close() error
}

// listLimit checks List's arguments and returns the limit to use.
func listLimit(afterSeq int64, limit int) (int, error) {
	if afterSeq < 0 {
		return 0, fmt.Errorf("audit: list: afterSeq is %d, must not be negative", afterSeq)
	}
	if limit <= 0 {
		return 0, fmt.Errorf("audit: list: limit is %d, must be positive", limit)
	}
	return min(limit, MaxListLimit), nil
}
