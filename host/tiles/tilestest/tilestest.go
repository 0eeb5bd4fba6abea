// Package tilestest is an in-memory audit log for tests: a tiles.Source
// whose checkpoints are signed with a fixed or given note key.
package tilestest

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"sync"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Origin is the checkpoint origin of every Log.
const Origin = "broker.example.com/audit"

// Log is an in-memory log. Its methods are safe for concurrent use.
type Log struct {
	mu      sync.Mutex
	signer  note.Signer
	entries [][]byte
	hashes  []tlog.Hash
	cp      []byte // the checkpoint of the current size
}

// NewKey returns a deterministic note key pair for name from seed.
func NewKey(name, seed string) (note.Signer, string) {
	s := sha256.Sum256([]byte(seed))
	pub := ed25519.NewKeyFromSeed(s[:]).Public().(ed25519.PublicKey)
	h := sha256.New()
	h.Write([]byte(name + "\n"))
	h.Write(append([]byte{1}, pub...))
	hash := binary.BigEndian.Uint32(h.Sum(nil))
	skey := fmt.Sprintf("PRIVATE+KEY+%s+%08x+%s", name, hash, base64.StdEncoding.EncodeToString(append([]byte{1}, s[:]...)))
	vkey := fmt.Sprintf("%s+%08x+%s", name, hash, base64.StdEncoding.EncodeToString(append([]byte{1}, pub...)))
	signer, err := note.NewSigner(skey)
	if err != nil {
		panic(err)
	}
	return signer, vkey
}

// New returns an empty log signed by signer (nil: NewKey(Origin, "tilestest")).
func New(signer note.Signer) *Log {
	if signer == nil {
		signer, _ = NewKey(Origin, "tilestest")
	}
	l := &Log{signer: signer}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sign()
	return l
}

// VerifierKey is the verifier key of NewKey(Origin, "tilestest").
func VerifierKey() string {
	_, v := NewKey(Origin, "tilestest")
	return v
}

// Entry is the entry at index i of logs built by AppendN.
func Entry(i int64) []byte { return []byte(fmt.Sprintf("entry %d\n", i)) }

// AppendN appends n entries Entry(size), … and signs a checkpoint.
func (l *Log) AppendN(n int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for range n {
		l.appendLocked(Entry(int64(len(l.entries))))
	}
	l.sign()
}

// Append appends entries and signs a checkpoint.
func (l *Log) Append(entries ...[]byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range entries {
		l.appendLocked(e)
	}
	l.sign()
}

func (l *Log) appendLocked(e []byte) {
	hs, err := tlog.StoredHashes(int64(len(l.entries)), e, l.reader())
	if err != nil {
		panic(err)
	}
	l.entries = append(l.entries, e)
	l.hashes = append(l.hashes, hs...)
}

func (l *Log) reader() tlog.HashReaderFunc {
	return func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			if x < 0 || x >= int64(len(l.hashes)) {
				return nil, fmt.Errorf("no stored hash %d", x)
			}
			out[i] = l.hashes[x]
		}
		return out, nil
	}
}

func (l *Log) sign() {
	n := int64(len(l.entries))
	root, err := tlog.TreeHash(n, l.reader())
	if err != nil {
		panic(err)
	}
	l.cp, err = note.Sign(&note.Note{Text: fmt.Sprintf("%s\n%d\n%s\n", l.signer.Name(), n, root)}, l.signer)
	if err != nil {
		panic(err)
	}
}

// Tamper replaces the stored entry i (not its hashes): what a host that
// rewrote its entry store would serve.
func (l *Log) Tamper(i int64, e []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.entries[i] = e
}

// Size is the number of entries.
func (l *Log) Size() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return int64(len(l.entries))
}

// Hashes returns a copy of every stored hash.
func (l *Log) Hashes() []tlog.Hash {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]tlog.Hash(nil), l.hashes...)
}

// Checkpoint implements tiles.Source.
func (l *Log) Checkpoint(context.Context) ([]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]byte(nil), l.cp...), nil
}

// ReadHashes implements tiles.Source.
func (l *Log) ReadHashes(_ context.Context, indexes []int64) ([]tlog.Hash, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.reader()(indexes)
}

// ReadEntries implements tiles.Source.
func (l *Log) ReadEntries(_ context.Context, start, end int64) ([][]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if start < 0 || end < start || end > int64(len(l.entries)) {
		return nil, fmt.Errorf("entries [%d, %d) not in a log of %d", start, end, len(l.entries))
	}
	return append([][]byte(nil), l.entries[start:end]...), nil
}
