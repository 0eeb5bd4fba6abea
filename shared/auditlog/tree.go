package auditlog

import (
	"fmt"
	"math/bits"

	"golang.org/x/mod/sumdb/tlog"
)

// RightEdge returns the stored-hash indexes (tlog.StoredHashIndex) of the
// right edge of a tree of n entries: the roots of its maximal complete
// subtrees, largest (leftmost) first. They are the hashes tlog.TreeHash(n, …)
// reads and the hashes tlog.StoredHashes needs to append entry n, so they are
// all the state a log needs to continue: what the enclave keeps, and what
// the host presents at audit_resume.
func RightEdge(n int64) []int64 {
	var out []int64
	var start int64
	for n > 0 {
		level := 63 - bits.LeadingZeros64(uint64(n))
		out = append(out, tlog.StoredHashIndex(level, start>>level))
		start += 1 << level
		n -= 1 << level
	}
	return out
}

// HashMap is a tlog.HashReader over stored hashes in memory.
type HashMap map[int64]tlog.Hash

// ReadHashes implements tlog.HashReader.
func (m HashMap) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		h, ok := m[x]
		if !ok {
			return nil, fmt.Errorf("audit log: stored hash %d is not at hand", x)
		}
		out[i] = h
	}
	return out, nil
}

// JoinHashes concatenates hashes, the wire form of protocol.AuditBatch.Hashes
// and friends.
func JoinHashes(hs []tlog.Hash) []byte {
	out := make([]byte, 0, len(hs)*tlog.HashSize)
	for _, h := range hs {
		out = append(out, h[:]...)
	}
	return out
}

// SplitHashes splits concatenated hashes, refusing a length that is not a
// multiple of the hash size or more than max hashes.
func SplitHashes(b []byte, max int) ([]tlog.Hash, error) {
	if len(b)%tlog.HashSize != 0 {
		return nil, fmt.Errorf("%w: %d bytes of hashes is not a multiple of %d", ErrInvalid, len(b), tlog.HashSize)
	}
	if len(b)/tlog.HashSize > max {
		return nil, fmt.Errorf("%w: %d hashes, more than %d", ErrInvalid, len(b)/tlog.HashSize, max)
	}
	out := make([]tlog.Hash, len(b)/tlog.HashSize)
	for i := range out {
		out[i] = tlog.Hash(b[i*tlog.HashSize:])
	}
	return out, nil
}

// Overlay is a tlog.HashReader over two HashMaps, neither copied: Top (the
// hashes a batch adds) first, then Base (the right edge it extends).
type Overlay struct{ Top, Base HashMap }

// ReadHashes implements tlog.HashReader.
func (o Overlay) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		h, ok := o.Top[x]
		if !ok {
			if h, ok = o.Base[x]; !ok {
				return nil, fmt.Errorf("audit log: stored hash %d is not at hand", x)
			}
		}
		out[i] = h
	}
	return out, nil
}
