// Package ratelimit is a per-client token bucket for the host's unauthenticated
// routes (sign-in nonces and sign-ins). Without it one client could hold the
// enclave's bounded store of outstanding nonces full and lock every agent out
// of signing in, or spend the enclave's CPU on signature recovery.
//
// Memory is bounded: at most MaxKeys clients are tracked; past that, idle
// buckets are dropped first, then arbitrary ones (a dropped client starts
// again with a full bucket, which errs on the side of serving).
package ratelimit

import (
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Limiter is a set of token buckets keyed by client. It is safe for concurrent use.
type Limiter struct {
	rate    float64 // tokens per second
	burst   float64
	maxKeys int
	now     func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// New returns a limiter allowing perSecond requests per client on average,
// with bursts of up to burst, tracking at most maxKeys clients.
func New(perSecond float64, burst, maxKeys int) *Limiter {
	return &Limiter{rate: perSecond, burst: float64(burst), maxKeys: maxKeys, now: time.Now, buckets: map[string]*bucket{}}
}

// Allow takes one token from key's bucket and reports whether there was one.
func (l *Limiter) Allow(key string) bool {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= l.maxKeys {
			l.evict(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// evict drops buckets that have refilled (idle clients), and if none has,
// a tenth of them.
func (l *Limiter) evict(now time.Time) {
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.buckets, k)
		}
	}
	for k := range l.buckets {
		if len(l.buckets) < l.maxKeys*9/10 {
			break
		}
		delete(l.buckets, k)
	}
}

// ClientKey names the client of r: its remote IP, or with behindProxy the
// address the proxy appended last to X-Forwarded-For (the only entry the proxy
// itself vouches for; earlier ones are the client's to forge).
func ClientKey(r *http.Request, behindProxy bool) string {
	if behindProxy {
		if xff := r.Header.Values("X-Forwarded-For"); len(xff) > 0 {
			parts := strings.Split(xff[len(xff)-1], ",")
			if ip := strings.TrimSpace(parts[len(parts)-1]); net.ParseIP(ip) != nil {
				return ip
			}
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
