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

// ErrFileReplaced is wrapped by the errors of a SQLite store whose database
// file (or its -wal file) was deleted or replaced under it. Records written
// after that would go to a file nobody can read again, so from then on every
// Append and Ping fails, until the host is restarted.
var ErrFileReplaced = errors.New("database file was deleted or replaced")

// ErrNotWritable is wrapped by the error of a Ping that could not write.
var ErrNotWritable = errors.New("database cannot be written")

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

	// Count adds r, a refusal, to the store's aggregate of the refusals with
	// r's Client, Kind, Outcome and Wallet in the current interval, instead
	// of storing it as a record of its own. At the end of each interval, and
	// on Close, each aggregate is appended as one record: the first
	// refusal's Time, Count the number of refusals, Detail the first one's
	// and the span of times. Other fields are not kept.
	//
	// Count is for refusals that anyone can cause at any rate, such as
	// requests with no bearer token: a flood of them writes a handful of
	// records per interval instead of one each. It does not wait for the
	// disk, so an aggregate can be lost in a crash; use Append for anything
	// that gates a credential. It fails only for an invalid record or a
	// closed store.
	Count(r Record) error

	// List returns up to limit records with Seq greater than afterSeq, in
	// Seq order. limit must be positive; values above MaxListLimit are
	// lowered to it. Page through the log with afterSeq = the last Seq seen.
	List(ctx context.Context, afterSeq int64, limit int) ([]Record, error)

	// Ping reports whether the store can be written, for /readyz: an error
	// wrapping ErrFileReplaced or ErrNotWritable says why not.
	Ping(ctx context.Context) error

	// Log is the Merkle log: the enclave's batches, which Append stores with
	// the records that carry them.
	Log

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
