package egress

import (
	"context"
	"net"
	"strings"
	"testing"
)

func TestParseRoutes(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
	}{
		{"", "", ""},
		{"kms.us-east-1.amazonaws.com:443=8000", "kms.us-east-1.amazonaws.com:443=8000", ""},
		{"KMS.us-east-1.amazonaws.com:443=8000, acme-v02.api.letsencrypt.org:443=8001", "acme-v02.api.letsencrypt.org:443=8001,kms.us-east-1.amazonaws.com:443=8000", ""},
		{"kms:443", "", "want host:port=vsockport"},
		{"kms=8000", "", "want host:port=vsockport"},
		{"kms:443=0", "", "not a number"},
		{"kms:443=08000", "", "not a number"},
		{"kms:443=x", "", "not a number"},
		{"kms:443=1,KMS:443=2", "", "listed twice"},
	} {
		r, err := ParseRoutes(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: err %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || r.String() != tc.want {
			t.Errorf("%q: %q, %v", tc.in, r.String(), err)
		}
	}
}

// TestRoutesRefuseOthers: only listed destinations are dialled, whatever the
// caller asks.
func TestRoutesRefuseOthers(t *testing.T) {
	r := Routes{"kms.us-east-1.amazonaws.com:443": 8000}
	for _, tc := range []struct{ network, addr string }{
		{"tcp", "evil.example:443"},
		{"tcp", "kms.us-east-1.amazonaws.com:80"},
		{"udp", "kms.us-east-1.amazonaws.com:443"},
	} {
		if _, err := r.DialContext(context.Background(), tc.network, tc.addr); err == nil {
			t.Errorf("%s %s: dialled", tc.network, tc.addr)
		}
	}
}

func TestDirect(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		if c, err := l.Accept(); err == nil {
			c.Close()
		}
	}()
	c, err := Direct{}.DialContext(context.Background(), "tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}
