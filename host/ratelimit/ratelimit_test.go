package ratelimit

import (
	"fmt"
	"net/http/httptest"
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
	tests := []struct {
		remote string
		xff    []string
		proxy  bool
		want   string
	}{
		{"192.0.2.1:5000", nil, false, "192.0.2.1"},
		{"192.0.2.1:5000", []string{"198.51.100.7"}, false, "192.0.2.1"},
		{"10.0.0.2:5000", []string{"198.51.100.7"}, true, "198.51.100.7"},
		{"10.0.0.2:5000", []string{"203.0.113.9, 198.51.100.7"}, true, "198.51.100.7"},
		{"10.0.0.2:5000", []string{"forged", "203.0.113.9, 198.51.100.8"}, true, "198.51.100.8"},
		{"10.0.0.2:5000", []string{"not-an-ip"}, true, "10.0.0.2"},
		{"[2001:db8::1]:443", nil, false, "2001:db8::1"},
	}
	for _, tt := range tests {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = tt.remote
		for _, v := range tt.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		if got := ClientKey(r, tt.proxy); got != tt.want {
			t.Errorf("%+v: %q", tt, got)
		}
	}
}
