package service

import (
	"crypto/sha256"
	"sync"
	"time"

	"github.com/agentkeys/broker/shared/protocol"
)

// DefaultSessionCache is how many verified session tokens the enclave
// remembers unless Config.SessionCache says otherwise.
const DefaultSessionCache = 4096

// sessionCache remembers the session tokens this enclave verified, by the
// SHA-256 of the token, so that the next mint with the same token skips the
// ES256 verification and the parsing of its claims. A hit stands for the
// same bytes verified before: it is checked again for everything that
// depends on the time (exp, iat, nbf, exactly as at verification), and the
// chain policy is checked on every call by VerifySession. A token that fails
// those goes through the whole verification again, which answers why. It
// holds at most max tokens; when full, one is forgotten for each new one.
type sessionCache struct {
	max int
	mu  sync.Mutex
	m   map[[sha256.Size]byte]cachedSession
}

type cachedSession struct {
	sess              protocol.Session
	exp, iat, nbf     time.Time
	hasIssued, hasNBF bool
}

// newSessionCache returns a cache of max tokens, or nil (no cache) for max < 0.
func newSessionCache(max int) *sessionCache {
	if max == 0 {
		max = DefaultSessionCache
	}
	if max < 0 {
		return nil
	}
	return &sessionCache{max: max, m: make(map[[sha256.Size]byte]cachedSession)}
}

// get returns the session of token if it was verified and is valid at now.
func (c *sessionCache) get(token string, now time.Time) (protocol.Session, bool) {
	if c == nil {
		return protocol.Session{}, false
	}
	k := sha256.Sum256([]byte(token))
	c.mu.Lock()
	e, ok := c.m[k]
	c.mu.Unlock()
	// The checks of golang-jwt's validator, with no leeway.
	if !ok || !now.Before(e.exp) || (e.hasIssued && now.Before(e.iat)) || (e.hasNBF && now.Before(e.nbf)) {
		return protocol.Session{}, false
	}
	return e.sess, true
}

// put remembers a token that passed the whole verification.
func (c *sessionCache) put(token string, e cachedSession) {
	if c == nil {
		return
	}
	k := sha256.Sum256([]byte(token))
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[k]; !ok && len(c.m) >= c.max {
		for old := range c.m {
			delete(c.m, old)
			break
		}
	}
	c.m[k] = e
}
