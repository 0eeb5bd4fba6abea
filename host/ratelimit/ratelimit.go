// Package ratelimit is a per-client token bucket for the host's routes, and
// the rule that names the client ([ClientKey]).
//
// The host limits sign-in (nonces and sign-ins): without that one client could
// hold the enclave's bounded store of outstanding nonces full and lock every
// agent out of signing in, or spend the enclave's CPU on signature recovery.
// It limits minting per client, generously, and refusals before
// authentication per client, strictly (see host/api).
//
// The client is the peer's address; X-Forwarded-For is believed only as far
// as it was written by proxies the operator named (--trusted-proxies).
//
// Memory is bounded: at most MaxKeys clients are tracked; past that, idle
// buckets are dropped first, then arbitrary ones (a dropped client starts
// again with a full bucket, which errs on the side of serving).
package ratelimit

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
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

// RetryAfter is how long a client that was refused waits for its next
// token: the interval between tokens, at least a second (the precision of
// the Retry-After header).
func (l *Limiter) RetryAfter() time.Duration {
	if l.rate <= 0 {
		return time.Hour
	}
	return max(time.Second, time.Duration(float64(time.Second)/l.rate))
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

// ParseTrustedProxies parses the --trusted-proxies list: comma-separated
// CIDR prefixes ("10.0.0.0/8") or single addresses ("192.0.2.7", taken as
// /32 or /128). Spaces around entries are ignored; "" is the empty list.
func ParseTrustedProxies(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if p, err := netip.ParsePrefix(f); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil || a.Zone() != "" {
			return nil, fmt.Errorf("%q is neither a CIDR prefix nor an IP address", f)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// ClientKey names the client of r: the IP address of its peer, unless that
// peer is a trusted proxy (in one of the trusted prefixes). Then it walks
// X-Forwarded-For from the right (every header line, in order, each a
// comma-separated list) past the addresses of trusted proxies, and names the
// first address that is not one: the right-most untrusted hop. Entries to
// its left are whatever the client chose to send, so they are never read.
//
// If every hop is trusted, the left-most is the client; an entry that is
// not an IP address ends the walk at the trusted hop to its right. With no
// trusted prefixes X-Forwarded-For is ignored: a client could forge it.
func ClientKey(r *http.Request, trusted []netip.Prefix) string {
	peer, ok := parseHop(r.RemoteAddr)
	if !ok {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			return r.RemoteAddr
		}
		return host
	}
	if !isTrusted(peer, trusted) {
		return peer.String()
	}
	client := peer
	xff := r.Header.Values("X-Forwarded-For")
	for i := len(xff) - 1; i >= 0; i-- {
		hops := strings.Split(xff[i], ",")
		for j := len(hops) - 1; j >= 0; j-- {
			hop, ok := parseHop(strings.TrimSpace(hops[j]))
			if !ok {
				return client.String()
			}
			client = hop
			if !isTrusted(hop, trusted) {
				return hop.String()
			}
		}
	}
	return client.String()
}

// parseHop parses an address with or without a port ("192.0.2.1",
// "192.0.2.1:443", "[2001:db8::1]:443", "2001:db8::1"), without its zone,
// IPv4-mapped IPv6 addresses as IPv4.
func parseHop(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		ap, err2 := netip.ParseAddrPort(s)
		if err2 != nil {
			return netip.Addr{}, false
		}
		a = ap.Addr()
	}
	return a.WithZone("").Unmap(), true
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
