// Package egress is how the enclave reaches services outside it: AWS KMS for
// its sealed seed, an ACME CA for the issuer origin's certificate.
//
// A Nitro Enclave has no network. Its only way out is vsock to the parent
// instance, where `vsock-proxy` (from aws-nitro-enclaves-cli) listens on one
// vsock port per allowed remote endpoint and forwards the bytes to it. So a
// [Routes] dialer maps each "host:port" the enclave may reach to the vsock
// port of its proxy on the parent (CID 3), and refuses every other address:
// the enclave cannot be talked into connecting anywhere the operator did not
// allow. Whatever travels over these connections is TLS that the enclave
// terminates itself, with roots it carries (the host relays bytes it cannot
// read or change undetected).
//
// In simulated mode [Direct] dials over TCP, so the same KMS and ACME code runs
// against local stand-ins in tests.
package egress

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strings"

	"github.com/agentkeys/broker/shared/protocol"
)

// ParentCID is the vsock CID of the parent instance, as seen from an enclave.
const ParentCID = 3

// Dialer opens connections out of the enclave.
type Dialer interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

// Direct dials over TCP: simulated mode.
type Direct struct{}

// DialContext dials addr over TCP.
func (Direct) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// Routes dials each allowed "host:port" through the vsock-proxy port it maps
// to on the parent instance (CID 3), and refuses any other address.
type Routes map[string]uint32

// ParseRoutes reads "host:port=vsockport,host:port=vsockport".
func ParseRoutes(s string) (Routes, error) {
	r := Routes{}
	if strings.TrimSpace(s) == "" {
		return r, nil
	}
	for _, item := range strings.Split(s, ",") {
		dest, port, ok := strings.Cut(strings.TrimSpace(item), "=")
		host, hp, err := net.SplitHostPort(dest)
		if !ok || err != nil || host == "" || hp == "" {
			return nil, fmt.Errorf("egress route %q: want host:port=vsockport", item)
		}
		var p uint32
		if _, err := fmt.Sscanf(port, "%d", &p); err != nil || p == 0 || fmt.Sprint(p) != port {
			return nil, fmt.Errorf("egress route %q: vsock port %q is not a number in [1, 4294967295]", item, port)
		}
		if _, dup := r[strings.ToLower(dest)]; dup {
			return nil, fmt.Errorf("egress route %q: %s is listed twice", item, dest)
		}
		r[strings.ToLower(dest)] = p
	}
	return r, nil
}

// String lists the routes in a stable order.
func (r Routes) String() string {
	var out []string
	for d, p := range r {
		out = append(out, fmt.Sprintf("%s=%d", d, p))
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

// DialContext dials the vsock-proxy that forwards to addr.
func (r Routes) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if network != "tcp" && network != "tcp4" && network != "tcp6" {
		return nil, fmt.Errorf("egress: network %q is not tcp", network)
	}
	port, ok := r[strings.ToLower(addr)]
	if !ok {
		return nil, fmt.Errorf("egress: %s is not an allowed destination (allowed: %s)", addr, r)
	}
	return protocol.Dial(ctx, fmt.Sprintf("vsock:%d:%d", ParentCID, port))
}
