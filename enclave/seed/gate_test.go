package seed

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/agentkeys/broker/enclave/attester"
	"github.com/agentkeys/broker/enclave/service"
	"github.com/agentkeys/broker/internal/kmstest"
	"github.com/agentkeys/broker/shared/policy"
	"github.com/agentkeys/broker/shared/protocol"
)

// newGate is what agentkeys-enclave builds in nitro mode: a Gate whose Open
// starts the enclave service on the unsealed seed.
func newGate(t *testing.T, k *KMS, a attester.Attester) *Gate {
	t.Helper()
	pol := policy.Default("https://broker.example.com")
	g, err := NewGate(GateConfig{KMS: k,
		Info: protocol.InfoResponse{ProtocolVersion: protocol.Version, Mode: a.Mode(), Policy: pol, PolicyDigest: pol.Digest(), PCRs: a.PCRs()},
		Open: func(s []byte) (protocol.Handler, error) {
			return service.New(service.Config{Policy: pol, Seed: s, Attester: a})
		}})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// call sends one request through the Gate as the protocol server would.
func call(t *testing.T, g *Gate, op protocol.Op, req, resp any) error {
	t.Helper()
	body, err := protocol.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	out, err := g.Handle(context.Background(), op, body)
	if err != nil {
		return err
	}
	b, err := protocol.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := protocol.Unmarshal(b, resp); err != nil {
		t.Fatal(err)
	}
	return nil
}

func info(t *testing.T, g *Gate) protocol.InfoResponse {
	t.Helper()
	var in protocol.InfoResponse
	if err := call(t, g, protocol.OpInfo, protocol.InfoRequest{}, &in); err != nil {
		t.Fatal(err)
	}
	return in
}

// TestGateFirstStartAndRestart: the first start seals a new seed and uses it
// only once the host sends its blob back; a restart (new attester keys, new
// Gate, same state) unseals to the same keys.
func TestGateFirstStartAndRestart(t *testing.T) {
	stateDir := t.TempDir()
	sim := newSimulated(t, stateDir)
	srv := kmstest.Start(t, kmstest.Options{Roots: sim.RootPool(), PCRs: pinned(sim)})
	g := newGate(t, newKMS(t, srv.URL, sim), sim)

	if in := info(t, g); in.Seed != protocol.SeedNeedsUnseal || in.SigningKid != "" || in.Mode != attester.ModeSimulated {
		t.Fatalf("info before unseal: seed %q, kid %q, mode %q", in.Seed, in.SigningKid, in.Mode)
	}
	var nonce protocol.SessionNonceResponse
	err := call(t, g, protocol.OpSessionNonce, protocol.SessionNonceRequest{}, &nonce)
	if !errors.Is(err, protocol.ErrUnavailable) || !strings.Contains(err.Error(), "unseal") {
		t.Fatalf("session_nonce before unseal: %v; want unavailable naming unseal", err)
	}
	var pc protocol.ProvideCredentialsResponse
	if err := call(t, g, protocol.OpProvideCredentials, protocol.ProvideCredentialsRequest{Credentials: testCreds}, &pc); err != nil {
		t.Fatalf("provide_credentials before unseal: %v", err)
	}

	var first protocol.UnsealResponse
	if err := call(t, g, protocol.OpUnseal, protocol.UnsealRequest{Credentials: testCreds}, &first); err != nil {
		t.Fatal(err)
	}
	if !first.Created || len(first.CiphertextBlob) == 0 || first.KeyID != kmstest.KeyID {
		t.Fatalf("first unseal = %+v", first)
	}
	if g.Unsealed() || info(t, g).Seed != protocol.SeedNeedsUnseal {
		t.Fatal("the Gate used a seed whose blob the host has not sent back")
	}
	var second protocol.UnsealResponse
	if err := call(t, g, protocol.OpUnseal, protocol.UnsealRequest{CiphertextBlob: first.CiphertextBlob, Credentials: testCreds}, &second); err != nil {
		t.Fatal(err)
	}
	if second.Created || len(second.CiphertextBlob) != 0 || !g.Unsealed() {
		t.Fatalf("second unseal = %+v, unsealed %v", second, g.Unsealed())
	}
	in := info(t, g)
	if in.Seed != "" || in.SigningKid == "" || len(in.IssuerKeys) == 0 {
		t.Fatalf("info after unseal: seed %q kid %q", in.Seed, in.SigningKid)
	}
	if err := call(t, g, protocol.OpSessionNonce, protocol.SessionNonceRequest{}, &nonce); err != nil {
		t.Fatalf("session_nonce after unseal: %v", err)
	}
	var again protocol.UnsealResponse
	if err := call(t, g, protocol.OpUnseal, protocol.UnsealRequest{CiphertextBlob: first.CiphertextBlob, Credentials: testCreds}, &again); !errors.Is(err, protocol.ErrBadRequest) {
		t.Fatalf("unseal twice: %v", err)
	}

	// Restart: a new process (new attester keys, same simulated root and PCRs).
	sim2 := newSimulated(t, stateDir)
	g2 := newGate(t, newKMS(t, srv.URL, sim2), sim2)
	var restart protocol.UnsealResponse
	if err := call(t, g2, protocol.OpUnseal, protocol.UnsealRequest{CiphertextBlob: first.CiphertextBlob, Credentials: testCreds}, &restart); err != nil {
		t.Fatal(err)
	}
	in2 := info(t, g2)
	if in2.SigningKid != in.SigningKid || in2.CheckpointVerifierKey != in.CheckpointVerifierKey {
		t.Fatalf("restart changed the keys: kid %s → %s", in.SigningKid, in2.SigningKid)
	}
}

func TestGateRefuses(t *testing.T) {
	sim := newSimulated(t, t.TempDir())
	srv := kmstest.Start(t, kmstest.Options{Roots: sim.RootPool(), PCRs: pinned(sim)})
	g := newGate(t, newKMS(t, srv.URL, sim), sim)
	var resp protocol.UnsealResponse
	for _, tt := range []struct {
		name string
		req  protocol.UnsealRequest
		code protocol.Code
		want string
	}{
		{"no credentials", protocol.UnsealRequest{}, protocol.CodeBadRequest, "access_key_id"},
		{"oversized blob", protocol.UnsealRequest{CiphertextBlob: make([]byte, protocol.MaxCiphertextBlob+1), Credentials: testCreds}, protocol.CodeInternal, "6144"},
		{"garbage blob", protocol.UnsealRequest{CiphertextBlob: []byte("not a KMS blob"), Credentials: testCreds}, protocol.CodeInternal, "Decrypt"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := call(t, g, protocol.OpUnseal, tt.req, &resp)
			if protocol.CodeOf(err) != tt.code || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("unseal: %v; want %s with %q", err, tt.code, tt.want)
			}
		})
	}
	if g.Unsealed() {
		t.Fatal("unsealed after refusals")
	}
	if _, err := g.Handle(context.Background(), protocol.OpUnseal, []byte{0xff}); !errors.Is(err, protocol.ErrBadRequest) {
		t.Fatalf("malformed unseal body: %v", err)
	}
}

// TestGateConcurrentUnseal: however unseals race, the keys are derived once
// and exactly one unseal succeeds.
func TestGateConcurrentUnseal(t *testing.T) {
	sim := newSimulated(t, t.TempDir())
	srv := kmstest.Start(t, kmstest.Options{Roots: sim.RootPool(), PCRs: pinned(sim)})
	k := newKMS(t, srv.URL, sim)
	_, blob, err := k.Generate(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	pol := policy.Default("https://broker.example.com")
	var opens atomic.Int32
	g, err := NewGate(GateConfig{KMS: k, Open: func(s []byte) (protocol.Handler, error) {
		opens.Add(1)
		return service.New(service.Config{Policy: pol, Seed: s, Attester: sim})
	}})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := protocol.Marshal(protocol.UnsealRequest{CiphertextBlob: blob, Credentials: testCreds})
	const n = 4
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := g.Handle(context.Background(), protocol.OpUnseal, body)
			errs <- err
		}()
	}
	ok := 0
	for range n {
		err := <-errs
		switch {
		case err == nil:
			ok++
		case errors.Is(err, protocol.ErrBadRequest), errors.Is(err, protocol.ErrUnavailable):
		default:
			t.Errorf("unseal: %v", err)
		}
	}
	if ok != 1 || opens.Load() != 1 {
		t.Fatalf("%d unseals succeeded, Open ran %d times; want 1 and 1", ok, opens.Load())
	}
}
