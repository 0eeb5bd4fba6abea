package ratelimit

import (
	"fmt"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestBucket(t *testing.T) {
	clock := time.Unix(1000, 0)
	l := New(2, 3, 100)
	l.now = func() time.Time { return clock }
	for i := range 3 {
		if !l.Allow("a") {
			t.Fatalf("request %d of the burst refused", i)
		}
	}
	if l.Allow("a") {
		t.Fatal("fourth request in the same instant allowed")
	}
	if !l.Allow("b") {
		t.Fatal("another client refused")
	}
	clock = clock.Add(500 * time.Millisecond) // one token at 2/s
	if !l.Allow("a") || l.Allow("a") {
		t.Fatal("refill is not one token per half second")
	}
	clock = clock.Add(time.Hour) // refills to the burst, not beyond
	for range 3 {
		if !l.Allow("a") {
			t.Fatal("burst not restored")
		}
	}
	if l.Allow("a") {
		t.Fatal("refilled beyond the burst")
	}
}

func TestMemoryBounded(t *testing.T) {
	l := New(1, 1, 50)
	for i := range 1000 {
		l.Allow(fmt.Sprint(i))
		if len(l.buckets) > 50 {
			t.Fatalf("%d buckets tracked, limit 50", len(l.buckets))
		}
	}
}

func TestClientKey(t *testing.T) {
	trusted, err := ParseTrustedProxies("10.0.0.0/8, 192.0.2.10,2001:db8:1::/48")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		remote  string
		xff     []string
		trusted []netip.Prefix
		want    string
	}{
		{"no proxy", "192.0.2.1:5000", nil, trusted, "192.0.2.1"},
		{"IPv6 peer", "[2001:db8::1]:443", nil, trusted, "2001:db8::1"},
		{"IPv4-mapped peer", "[::ffff:192.0.2.1]:443", nil, trusted, "192.0.2.1"},
		{"spoofed XFF from an untrusted peer", "198.51.100.7:5000", []string{"203.0.113.9"}, trusted, "198.51.100.7"},
		{"XFF ignored with no trusted proxies", "10.0.0.2:5000", []string{"203.0.113.9"}, nil, "10.0.0.2"},
		{"trusted proxy", "10.0.0.2:5000", []string{"203.0.113.9"}, trusted, "203.0.113.9"},
		{"trusted proxy, forged entries to the left", "10.0.0.2:5000", []string{"1.2.3.4, 5.6.7.8, 203.0.113.9"}, trusted, "203.0.113.9"},
		{"chain of trusted proxies", "10.0.0.2:5000", []string{"forged, 203.0.113.9, 10.1.1.1, 192.0.2.10"}, trusted, "203.0.113.9"},
		{"chain over several header lines", "10.0.0.2:5000", []string{"forged", "203.0.113.9, 10.1.1.1", "2001:db8:1::5"}, trusted, "203.0.113.9"},
		{"client forges a trusted address", "10.0.0.2:5000", []string{"10.9.9.9, 203.0.113.9"}, trusted, "203.0.113.9"},
		{"every hop trusted", "10.0.0.2:5000", []string{"10.0.0.3, 10.0.0.4"}, trusted, "10.0.0.3"},
		{"trusted proxy without XFF", "10.0.0.2:5000", nil, trusted, "10.0.0.2"},
		{"garbage hop stops the walk", "10.0.0.2:5000", []string{"203.0.113.9, not-an-ip, 10.0.0.3"}, trusted, "10.0.0.3"},
		{"garbage right of the peer", "10.0.0.2:5000", []string{"not-an-ip"}, trusted, "10.0.0.2"},
		{"hop with a port", "10.0.0.2:5000", []string{"[2001:db8::7]:1234"}, trusted, "2001:db8::7"},
		{"untrusted IPv6 client", "10.0.0.2:5000", []string{"2001:db8:2::1"}, trusted, "2001:db8:2::1"},
		{"remote addr without port", "192.0.2.1", nil, trusted, "192.0.2.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = tt.remote
			for _, v := range tt.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := ClientKey(r, tt.trusted); got != tt.want {
				t.Errorf("ClientKey = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseTrustedProxies(t *testing.T) {
	tests := []struct {
		in   string
		want string // fmt of the prefixes, or "error"
	}{
		{"", "[]"},
		{" , ", "[]"},
		{"10.0.0.0/8", "[10.0.0.0/8]"},
		{"10.1.2.3/8", "[10.0.0.0/8]"},
		{"192.0.2.7, 2001:db8::/32", "[192.0.2.7/32 2001:db8::/32]"},
		{"::ffff:192.0.2.7", "[192.0.2.7/32]"},
		{"2001:db8::1", "[2001:db8::1/128]"},
		{"10.0.0.0/33", "error"},
		{"proxy.example.com", "error"},
		{"10.0.0.1:80", "error"},
		{"fe80::1%eth0", "error"},
	}
	for _, tt := range tests {
		got, err := ParseTrustedProxies(tt.in)
		s := fmt.Sprint(got)
		if err != nil {
			s = "error"
		}
		if s != tt.want {
			t.Errorf("ParseTrustedProxies(%q) = %s (%v), want %s", tt.in, s, err, tt.want)
		}
	}
}

// FuzzClientKey: whatever X-Forwarded-For holds, the key is the peer or an
// address written in the header, and never something a trusted proxy's
// untrusted peer could not have been.
func FuzzClientKey(f *testing.F) {
	f.Add("10.0.0.2:5000", "203.0.113.9, 10.0.0.3")
	f.Add("198.51.100.7:1", "1.2.3.4")
	f.Add("10.0.0.2:5000", ",,[::1]:80, ::ffff:10.0.0.1 ,x")
	trusted, _ := ParseTrustedProxies("10.0.0.0/8")
	f.Fuzz(func(t *testing.T, remote, xff string) {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = remote
		r.Header.Set("X-Forwarded-For", xff)
		got := ClientKey(r, trusted)
		peer, ok := parseHop(remote)
		if !ok {
			return
		}
		if !isTrusted(peer, trusted) {
			if got != peer.String() {
				t.Fatalf("untrusted peer %s: key %q", peer, got)
			}
			return
		}
		if got == peer.String() {
			return
		}
		a, err := netip.ParseAddr(got)
		if err != nil {
			t.Fatalf("key %q is not an address", got)
		}
		for _, h := range strings.Split(xff, ",") {
			if p, ok := parseHop(strings.TrimSpace(h)); ok && p == a {
				return
			}
		}
		t.Fatalf("key %q is neither the peer nor a hop of %q", got, xff)
	})
}
