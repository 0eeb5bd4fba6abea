package seed

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/agentkeys/broker/shared/protocol"
)

// noRoute is an egress dialer that reaches nothing, so a fuzzed unseal fails
// at the network without leaving the process.
type noRoute struct{}

func (noRoute) DialContext(context.Context, string, string) (net.Conn, error) {
	return nil, errors.New("no route in this test")
}

// FuzzGate feeds the Gate what a host may send: any body for its ops. It
// must answer (never panic), never unseal, and answer other ops unavailable.
func FuzzGate(f *testing.F) {
	for _, req := range []any{
		protocol.UnsealRequest{Credentials: testCreds},
		protocol.UnsealRequest{CiphertextBlob: []byte("blob"), Credentials: testCreds},
		protocol.ProvideCredentialsRequest{Credentials: testCreds},
		protocol.InfoRequest{},
	} {
		b, err := protocol.Marshal(req)
		if err != nil {
			f.Fatal(err)
		}
		for op := range 4 {
			f.Add(uint8(op), b)
		}
	}
	f.Add(uint8(1), []byte{0xa1, 0x61, 0x78, 0xff})
	sim := newSimulated(f, f.TempDir())
	k, err := NewKMS(KMSConfig{KeyID: "arn:aws:kms:eu-west-2:111122223333:key/k", Region: "eu-west-2",
		Dialer: noRoute{}, Attester: sim, Timeout: time.Second})
	if err != nil {
		f.Fatal(err)
	}
	g, err := NewGate(GateConfig{KMS: k, Info: protocol.InfoResponse{Mode: sim.Mode()},
		Open: func([]byte) (protocol.Handler, error) { return nil, errors.New("unreachable") }})
	if err != nil {
		f.Fatal(err)
	}
	ops := []protocol.Op{protocol.OpInfo, protocol.OpUnseal, protocol.OpProvideCredentials, protocol.OpMintOIDC}
	f.Fuzz(func(t *testing.T, op uint8, body []byte) {
		o := ops[int(op)%len(ops)]
		resp, err := g.Handle(context.Background(), o, body)
		if g.Unsealed() {
			t.Fatal("the Gate unsealed without KMS")
		}
		switch o {
		case protocol.OpMintOIDC:
			if !errors.Is(err, protocol.ErrUnavailable) {
				t.Fatalf("mint_oidc while sealed: %v", err)
			}
		case protocol.OpUnseal:
			if err == nil {
				t.Fatalf("unseal without KMS answered %+v", resp)
			}
		case protocol.OpInfo:
			if info, ok := resp.(protocol.InfoResponse); err == nil && (!ok || info.Seed != protocol.SeedNeedsUnseal) {
				t.Fatalf("info while sealed: %+v", resp)
			}
		}
	})
}
