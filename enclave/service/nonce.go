package service

import (
	"container/heap"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/agentkeys/broker/shared/protocol"
)

// Sign-in nonces are stateless: issuing one stores nothing. A nonce is
//
//	issued (8 bytes: unix seconds, big endian) ‖ random (16 bytes) ‖ tag (16 bytes)
//	tag = HMAC-SHA256(key, nonceMACLabel ‖ issued ‖ random), first 16 bytes
//
// written as 80 lowercase hex digits: alphanumeric, as EIP-4361 asks (at least 8
// letters or digits), and one spelling per nonce (uppercase hex is refused). The
// key is drawn from the attester's randomness when the enclave starts and is
// never written anywhere, so a restart invalidates every nonce ever issued.
const (
	nonceRandomSize = 16
	nonceTagSize    = 16
	nonceSize       = 8 + nonceRandomSize + nonceTagSize
	// NonceLength is the length of a sign-in nonce's text.
	NonceLength = 2 * nonceSize
	// nonceMACLabel separates the nonce MAC from any other use of the key.
	nonceMACLabel = "agentkeys sign-in nonce v1\x00"
)

// nonces issues and checks sign-in nonces and remembers the used ones.
//
// The used set is bounded by time alone: an entry is kept only until its nonce
// would have expired anyway (issue time + nonce_lifetime_seconds), then pruned.
// An entry is added only by a sign-in that succeeded, which costs the caller a
// fresh nonce from this enclave (at most nonce_lifetime_seconds old) and a valid
// wallet signature over a message naming this issuer, and costs the enclave a
// signature recovery and a session-token signature; so the set holds at most the
// sign-ins of the last nonce_lifetime_seconds (at most 3600 s by policy), under
// 100 bytes each (BenchmarkNonceUse: 53 with 200 000 entries, 65 with a
// million). The enclave can create sessions only so fast, so that rate times
// the lifetime bounds the set; no count limit is needed, and none could refuse
// sign-ins. A flood of nonce requests adds nothing.
type nonces struct {
	key      [32]byte
	lifetime time.Duration

	mu   sync.Mutex
	used map[[nonceRandomSize]byte]struct{}
	exp  expiryHeap // the same entries, soonest expiry first, for pruning
}

func newNonces(rand io.Reader, lifetime time.Duration) (*nonces, error) {
	n := &nonces{lifetime: lifetime, used: make(map[[nonceRandomSize]byte]struct{})}
	if _, err := io.ReadFull(rand, n.key[:]); err != nil {
		return nil, fmt.Errorf("failed to read randomness for the nonce key: %w", err)
	}
	return n, nil
}

func (n *nonces) tag(issued []byte, random []byte) []byte {
	m := hmac.New(sha256.New, n.key[:])
	m.Write([]byte(nonceMACLabel))
	m.Write(issued)
	m.Write(random)
	return m.Sum(nil)[:nonceTagSize]
}

// issue makes a nonce issued at now (to the second), with randomness from rand.
func (n *nonces) issue(now time.Time, rand io.Reader) (nonce string, expires time.Time, err error) {
	var b [nonceSize]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.Unix()))
	if _, err := io.ReadFull(rand, b[8:8+nonceRandomSize]); err != nil {
		return "", time.Time{}, fmt.Errorf("failed to read randomness: %w", err)
	}
	copy(b[8+nonceRandomSize:], n.tag(b[:8], b[8:8+nonceRandomSize]))
	return hex.EncodeToString(b[:]), time.Unix(now.Unix(), 0).Add(n.lifetime), nil
}

func errNonceForeign() error {
	return protocol.Errorf(protocol.CodeNonceRejected, "nonce was not issued by this enclave (or the enclave restarted since); request a new one")
}

// decode checks that s is a nonce this enclave issued (since it started) and
// returns its issue time and random part. It does not look at the clock.
func (n *nonces) decode(s string) (issued time.Time, id [nonceRandomSize]byte, err error) {
	if len(s) != NonceLength {
		return time.Time{}, id, errNonceForeign()
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return time.Time{}, id, errNonceForeign()
		}
	}
	var b [nonceSize]byte
	if _, err := hex.Decode(b[:], []byte(s)); err != nil {
		return time.Time{}, id, errNonceForeign()
	}
	if !hmac.Equal(b[8+nonceRandomSize:], n.tag(b[:8], b[8:8+nonceRandomSize])) {
		return time.Time{}, id, errNonceForeign()
	}
	secs := binary.BigEndian.Uint64(b[:8])
	if secs > 1<<62 {
		// Only this enclave's clock made it; refuse rather than overflow.
		return time.Time{}, id, errNonceForeign()
	}
	copy(id[:], b[8:8+nonceRandomSize])
	return time.Unix(int64(secs), 0), id, nil
}

// check reports whether s is a nonce this enclave issued, unexpired and not yet
// used, without using it, and returns its issue time.
func (n *nonces) check(s string, now time.Time) (time.Time, error) {
	issued, id, err := n.decode(s)
	if err != nil {
		return time.Time{}, err
	}
	if err := n.fresh(issued, now); err != nil {
		return time.Time{}, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.prune(now)
	if _, ok := n.used[id]; ok {
		return time.Time{}, protocol.Errorf(protocol.CodeNonceRejected, "nonce was already used; request a new one")
	}
	return issued, nil
}

func (n *nonces) fresh(issued, now time.Time) error {
	if !now.Before(issued.Add(n.lifetime)) {
		return protocol.Errorf(protocol.CodeNonceRejected, "nonce expired; request a new one")
	}
	if issued.After(now.Add(ClockSkew)) {
		// Only possible if the enclave's clock went back since it issued it.
		return protocol.Errorf(protocol.CodeNonceRejected, "nonce is dated in the future (the enclave's clock went back); request a new one")
	}
	return nil
}

// use consumes s; of concurrent callers with one nonce exactly one succeeds.
func (n *nonces) use(s string, now time.Time) error {
	issued, id, err := n.decode(s)
	if err != nil {
		return err
	}
	if err := n.fresh(issued, now); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.prune(now)
	if _, ok := n.used[id]; ok {
		return protocol.Errorf(protocol.CodeNonceRejected, "nonce was already used; request a new one")
	}
	n.used[id] = struct{}{}
	heap.Push(&n.exp, expiry{at: issued.Add(n.lifetime).Unix(), id: id})
	return nil
}

// prune forgets used nonces that have expired: fresh refuses them anyway.
// n.mu must be held.
func (n *nonces) prune(now time.Time) {
	for len(n.exp) > 0 && n.exp[0].at <= now.Unix() {
		e := heap.Pop(&n.exp).(expiry)
		delete(n.used, e.id)
	}
}

// usedCount is the size of the used set, for tests.
func (n *nonces) usedCount() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.used)
}

type expiry struct {
	at int64 // unix seconds
	id [nonceRandomSize]byte
}

type expiryHeap []expiry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(expiry)) }
func (h *expiryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}
