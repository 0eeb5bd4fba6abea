package seed

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/smithy-go"

	"github.com/agentkeys/broker/enclave/attester"
	"github.com/agentkeys/broker/enclave/egress"
	"github.com/agentkeys/broker/enclave/kmsrecipient"
	"github.com/agentkeys/broker/internal/kmstest"
	"github.com/agentkeys/broker/shared/protocol"
)

func TestMain(m *testing.M) {
	code := m.Run()
	kmstest.Cleanup()
	os.Exit(code)
}

var testCreds = protocol.AWSCredentials{AccessKeyID: "AKIATESTTESTTESTTEST", SecretAccessKey: "secret-never-logged", SessionToken: "token"}

// newSimulated is a simulated attester on stateDir measuring a small fake
// executable, so its PCRs are stable for the test.
func newSimulated(t testing.TB, stateDir string) *attester.Simulated {
	t.Helper()
	exe := filepath.Join(t.TempDir(), "enclave")
	if err := os.WriteFile(exe, []byte("enclave binary v1"), 0o755); err != nil {
		t.Fatal(err)
	}
	a, err := attester.NewSimulated(attester.SimulatedOptions{StateDir: stateDir, Executable: exe, AppData: []byte("policy v1")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// pinned are the PCRs a key policy made by kms-policy.sh --pcrs 0,1,2 pins.
func pinned(a attester.Attester) map[int][]byte {
	p := a.PCRs()
	return map[int][]byte{0: p[0], 1: p[1], 2: p[2]}
}

func newKMS(t *testing.T, url string, a attester.Attester) *KMS {
	t.Helper()
	k, err := NewKMS(KMSConfig{KeyID: kmstest.KeyID, Region: kmstest.Region, Endpoint: url, AllowHTTP: true,
		Dialer: egress.Direct{}, Attester: a, Timeout: 60 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := k.SetCredentials(testCreds); err != nil {
		t.Fatal(err)
	}
	return k
}

func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// TestKMSRefuses shows every way the sealing refuses a seed, against one
// local-kms behind the attestation shim.
func TestKMSRefuses(t *testing.T) {
	ctx := context.Background()
	sim := newSimulated(t, t.TempDir())
	srv := kmstest.Start(t, kmstest.Options{Roots: sim.RootPool(), PCRs: pinned(sim)})
	k := newKMS(t, srv.URL, sim)
	seed, blob, err := k.Generate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(seed) != Size || len(blob) == 0 {
		t.Fatalf("Generate: %d-byte seed, %d-byte blob", len(seed), len(blob))
	}
	if bytes.Contains(blob, seed) {
		t.Fatal("the blob carries the seed in clear")
	}
	again, err := k.Unseal(ctx, blob)
	if err != nil || !bytes.Equal(again, seed) {
		t.Fatalf("Unseal = %x, %v; want the generated seed", again, err)
	}

	other := newSimulated(t, t.TempDir()) // same PCRs, another simulated root
	changed := pinned(sim)
	changed[0] = bytes.Repeat([]byte{0xee}, 48)
	changed1 := pinned(sim)
	changed1[1] = bytes.Repeat([]byte{0xee}, 48)
	debug := kmstest.NewForger(t, attester.ModeNitro, nil) // all-zero PCRs

	tests := []struct {
		name    string
		att     attester.Attester
		setup   func()
		wantAPI string // the KMS error code, or
		wantErr error  // an error of the enclave's own
		wantMsg string
	}{
		{name: "changed PCR0", att: sim, setup: func() { srv.SetPCRs(changed) },
			wantAPI: "AccessDeniedException", wantMsg: "ImageSha384"},
		{name: "changed PCR1", att: sim, setup: func() { srv.SetPCRs(changed1) },
			wantAPI: "AccessDeniedException", wantMsg: "PCR1"},
		{name: "document from another root", att: other,
			wantAPI: "ValidationException", wantMsg: "does not verify"},
		{name: "debug-mode document", att: debug, setup: func() { srv.SetRoots(debug.RootPool()) },
			wantAPI: "AccessDeniedException", wantMsg: "debug-mode"},
		{name: "answer in clear", att: sim, setup: func() { srv.Misbehave(kmstest.AnswerInClear) },
			wantErr: ErrPlaintextInAnswer},
		{name: "recipient ignored", att: sim, setup: func() { srv.Misbehave(kmstest.IgnoreRecipient) },
			wantErr: ErrPlaintextInAnswer},
		{name: "wrong-shaped envelope", att: sim, setup: func() { srv.Misbehave(kmstest.WrongEnvelope) },
			wantMsg: "kmsrecipient: unsupported envelope"},
		{name: "envelope for another key", att: sim, setup: func() { srv.Misbehave(kmstest.ForAnotherKey) },
			wantErr: kmsrecipient.ErrWrongRecipient},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv.SetPCRs(pinned(sim))
			srv.SetRoots(sim.RootPool())
			srv.Misbehave(kmstest.Behave)
			if tt.setup != nil {
				tt.setup()
			}
			k := newKMS(t, srv.URL, tt.att)
			for _, call := range []struct {
				name string
				f    func() ([]byte, error)
			}{
				{"Unseal", func() ([]byte, error) { return k.Unseal(ctx, blob) }},
				{"Generate", func() ([]byte, error) { s, _, err := k.Generate(ctx); return s, err }},
			} {
				s, err := call.f()
				if err == nil {
					t.Fatalf("%s released a seed", call.name)
				}
				if s != nil {
					t.Errorf("%s returned a seed with its error", call.name)
				}
				if tt.wantAPI != "" && apiCode(err) != tt.wantAPI {
					t.Errorf("%s: %v; want KMS error %s", call.name, err, tt.wantAPI)
				}
				if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
					t.Errorf("%s: %v; want %v", call.name, err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantMsg) {
					t.Errorf("%s: %v; want %q in it", call.name, err, tt.wantMsg)
				}
			}
		})
	}
}

func TestKMSRequestsCarryNoSecret(t *testing.T) {
	sim := newSimulated(t, t.TempDir())
	srv := kmstest.Start(t, kmstest.Options{Roots: sim.RootPool(), PCRs: pinned(sim)})
	k, err := NewKMS(KMSConfig{KeyID: kmstest.KeyID, Region: kmstest.Region, Endpoint: srv.URL, AllowHTTP: true,
		Dialer: egress.Direct{}, Attester: sim})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := k.Generate(context.Background()); !errors.Is(err, ErrNoCredentials) {
		t.Fatalf("Generate without credentials: %v; want ErrNoCredentials", err)
	}
	expired := testCreds
	expired.Expiration = time.Now().Add(-time.Minute).Unix()
	if err := k.SetCredentials(expired); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("SetCredentials(expired) = %v", err)
	}
	if err := k.SetCredentials(protocol.AWSCredentials{AccessKeyID: "AKIA"}); err == nil {
		t.Fatal("credentials without a secret accepted")
	}
	if srv.Calls("GenerateDataKey") != 0 {
		t.Fatal("a call without credentials reached KMS")
	}
	if s := testCreds.String(); strings.Contains(s, testCreds.SecretAccessKey) || strings.Contains(s, testCreds.SessionToken) {
		t.Fatalf("credentials print their secret: %s", s)
	}
}

func TestNewKMSRefuses(t *testing.T) {
	sim := newSimulated(t, t.TempDir())
	for _, tt := range []struct {
		name string
		cfg  KMSConfig
		want string
	}{
		{"no key", KMSConfig{Region: "eu-west-2", Dialer: egress.Direct{}, Attester: sim}, "--kms-key-id"},
		{"http without AllowHTTP", KMSConfig{KeyID: "k", Region: "eu-west-2", Endpoint: "http://127.0.0.1:1", Dialer: egress.Direct{}, Attester: sim}, "https"},
		{"no dialer", KMSConfig{KeyID: "k", Region: "eu-west-2", Attester: sim}, "dialer"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewKMS(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewKMS = %v; want %q", err, tt.want)
			}
		})
	}
}

// TestKMSTLS: over https the client verifies KMS's certificate with its own
// roots; by default the embedded bundle, which a test CA is not in.
func TestKMSTLS(t *testing.T) {
	sim := newSimulated(t, t.TempDir())
	srv := kmstest.Start(t, kmstest.Options{Roots: sim.RootPool(), PCRs: pinned(sim)})
	front := httptest.NewUnstartedServer(srv)
	front.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	front.StartTLS()
	t.Cleanup(front.Close)

	k, err := NewKMS(KMSConfig{KeyID: kmstest.KeyID, Region: kmstest.Region, Endpoint: front.URL,
		Dialer: egress.Direct{}, Attester: sim})
	if err != nil {
		t.Fatal(err)
	}
	k.SetCredentials(testCreds)
	if _, _, err := k.Generate(context.Background()); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("Generate against a certificate outside the embedded roots: %v", err)
	}

	pool := x509.NewCertPool()
	pool.AddCert(front.Certificate())
	k, err = NewKMS(KMSConfig{KeyID: kmstest.KeyID, Region: kmstest.Region, Endpoint: front.URL,
		Dialer: egress.Direct{}, Attester: sim, RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	k.SetCredentials(testCreds)
	if _, _, err := k.Generate(context.Background()); err != nil {
		t.Fatalf("Generate over TLS with the server's root: %v", err)
	}
}
