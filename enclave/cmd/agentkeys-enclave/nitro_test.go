package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	stdlog "log"
	"log/slog"
	"math/big"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/agentkeys/broker/enclave/attester"
	"github.com/agentkeys/broker/enclave/egress"
	"github.com/agentkeys/broker/host/enclaveclient"
	"github.com/agentkeys/broker/host/sealedseed"
	"github.com/agentkeys/broker/internal/kmstest"
	"github.com/agentkeys/broker/internal/lockedbuf"
	"github.com/agentkeys/broker/shared/protocol"
)

// kmsHost is the name the enclave dials in nitro mode: the default endpoint
// of --kms-region.
const kmsHost = "kms." + kmstest.Region + ".amazonaws.com"

// fakeNSM stands in for /dev/nsm: the test's forger, which serve must not
// close, since the restarted enclave gets the same NSM.
type fakeNSM struct{ *kmstest.Forger }

func (fakeNSM) Close() error { return nil }

// vsockRoutes stands in for the vsock-proxy: it applies the enclave's
// --egress allowlist, then dials the test's KMS over TCP.
type vsockRoutes struct {
	routes egress.Routes
	to     string
}

func (v vsockRoutes) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if _, ok := v.routes[addr]; !ok {
		return nil, fmt.Errorf("egress: %s is not an allowed destination", addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", v.to)
}

// kmsTLS serves h over TLS with a certificate for kmsHost from a CA of its
// own, returned as a pool.
func kmsTLS(t *testing.T, srv *kmstest.Server) (addr string, roots *x509.CertPool) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caT := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test KMS CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caT, caT, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafT := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: kmsHost}, DNSNames: []string{kmsHost},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafT, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewUnstartedServer(srv)
	front.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER}, PrivateKey: key}}}
	front.StartTLS()
	t.Cleanup(front.Close)
	roots = x509.NewCertPool()
	roots.AddCert(ca)
	return front.Listener.Addr().String(), roots
}

// startEnclave runs agentkeys-enclave in-process with args and returns a
// function that stops it with SIGINT and returns its exit status.
func startEnclave(t *testing.T, args []string, stderr *lockedbuf.Buffer) (stop func() int) {
	t.Helper()
	done := make(chan int, 1)
	go func() { done <- run(args, &bytes.Buffer{}, stderr) }()
	return func() int {
		syscall.Kill(os.Getpid(), syscall.SIGINT)
		select {
		case code := <-done:
			return code
		case <-time.After(60 * time.Second):
			t.Fatalf("the enclave did not stop:\n%s", stderr.String())
			return -1
		}
	}
}

// TestNitroMode starts the enclave binary's run function in nitro mode
// against a fake NSM and the attesting KMS stand-in, reached through the
// --egress allowlist and TLS to kms.REGION.amazonaws.com verified with the
// enclave's roots; the host's enclaveclient with the sealedseed hook unseals
// it. A restart unseals the stored blob to the same keys.
func TestNitroMode(t *testing.T) {
	w, flags, def := stdlog.Writer(), stdlog.Flags(), slog.Default()
	t.Cleanup(func() { slog.SetDefault(def); stdlog.SetOutput(w); stdlog.SetFlags(flags) })
	pcrs := map[int][]byte{0: bytes.Repeat([]byte{0xa0}, 48), 1: bytes.Repeat([]byte{0xa1}, 48), 2: bytes.Repeat([]byte{0xa2}, 48)}
	nsm := kmstest.NewForger(t, attester.ModeNitro, pcrs)
	srv := kmstest.Start(t, kmstest.Options{Roots: nsm.RootPool(), PCRs: pcrs})
	addr, roots := kmsTLS(t, srv)

	saved := [...]any{openNSM, nitroEgress, kmsRoots}
	t.Cleanup(func() {
		openNSM = saved[0].(func() (attester.Attester, error))
		nitroEgress = saved[1].(func(egress.Routes) egress.Dialer)
		kmsRoots = saved[2].(*x509.CertPool)
	})
	openNSM = func() (attester.Attester, error) { return fakeNSM{nsm}, nil }
	nitroEgress = func(r egress.Routes) egress.Dialer { return vsockRoutes{routes: r, to: addr} }
	kmsRoots = roots

	dir := t.TempDir()
	pol := filepath.Join(dir, "policy.json")
	os.WriteFile(pol, []byte(`{"issuer":"https://broker.example.com"}`), 0o600)
	sock := filepath.Join(dir, "e.sock")
	args := []string{"--policy", pol, "--listen", "unix:" + sock, "--kms-key-id", kmstest.KeyID, "--kms-region", kmstest.Region,
		"--egress", kmsHost + ":443=8000", "--origin-listen", "unix:" + filepath.Join(dir, "origin.sock"), "--acme-directory", ""}
	var stderr lockedbuf.Buffer
	stop := startEnclave(t, args, &stderr)

	// Before unseal: info says so, everything else is unavailable.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var conn net.Conn
	var err error
	for conn == nil {
		if conn, err = protocol.Dial(ctx, "unix:"+sock); err != nil {
			if ctx.Err() != nil {
				t.Fatalf("enclave did not listen: %v\n%s", err, stderr.String())
			}
			conn = nil
			time.Sleep(20 * time.Millisecond)
		}
	}
	raw := protocol.NewClient(conn)
	var info protocol.InfoResponse
	if err := raw.Call(ctx, protocol.OpInfo, protocol.InfoRequest{}, &info); err != nil {
		t.Fatal(err)
	}
	if info.Mode != attester.ModeNitro || info.Seed != protocol.SeedNeedsUnseal || !bytes.Equal(info.PCRs[0], pcrs[0]) {
		t.Fatalf("info before unseal: mode %q seed %q", info.Mode, info.Seed)
	}
	var nonce protocol.SessionNonceResponse
	if err := raw.Call(ctx, protocol.OpSessionNonce, protocol.SessionNonceRequest{}, &nonce); !errors.Is(err, protocol.ErrUnavailable) {
		t.Fatalf("session_nonce before unseal: %v", err)
	}
	raw.Close()

	// The host unseals it on connect.
	blobPath := filepath.Join(dir, "host", sealedseed.FileName)
	creds := aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{AccessKeyID: "AKIAHOST", SecretAccessKey: "host-secret-value", SessionToken: "host-token",
			CanExpire: true, Expires: time.Now().Add(time.Hour)}, nil
	})
	keeper, err := sealedseed.New(sealedseed.Config{BlobPath: blobPath, Credentials: creds})
	if err != nil {
		t.Fatal(err)
	}
	dial, _ := protocol.Dialer("unix:" + sock)
	host := enclaveclient.New(enclaveclient.Config{Dial: dial, Unseal: keeper.Unseal, MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	defer host.Close()
	first := waitInfo(t, host, nil, &stderr)
	if first.SigningKid == "" || first.Mode != attester.ModeNitro {
		t.Fatalf("info after unseal: %+v", first)
	}
	if fi, err := os.Stat(blobPath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("sealed seed file: %v %v", fi, err)
	}
	if err := host.Call(ctx, protocol.OpSessionNonce, protocol.SessionNonceRequest{}, &nonce); err != nil || nonce.Nonce == "" {
		t.Fatalf("session_nonce after unseal: %v", err)
	}

	// Restart: the host's client redials and unseals the stored blob.
	if code := stop(); code != 0 {
		t.Fatalf("exit %d:\n%s", code, stderr.String())
	}
	stop = startEnclave(t, args, &stderr)
	second := waitInfo(t, host, first, &stderr)
	if second.SigningKid != first.SigningKid || second.CheckpointVerifierKey != first.CheckpointVerifierKey {
		t.Fatalf("restart changed the keys: %s → %s", first.SigningKid, second.SigningKid)
	}
	if g, d := srv.Calls("GenerateDataKey"), srv.Calls("Decrypt"); g != 1 || d != 2 {
		t.Fatalf("KMS saw %d GenerateDataKey and %d Decrypt; want 1 and 2", g, d)
	}
	if code := stop(); code != 0 {
		t.Fatalf("exit %d:\n%s", code, stderr.String())
	}
	log := stderr.String()
	for _, secret := range []string{"host-secret-value", "host-token"} {
		if strings.Contains(log, secret) {
			t.Fatalf("the enclave logged a credential:\n%s", log)
		}
	}
	if !strings.Contains(log, "waiting for the host to unseal") || !strings.Contains(log, `"msg":"seed unsealed; serving"`) {
		t.Fatalf("log lacks the unseal steps:\n%s", log)
	}
}

// waitInfo waits (bounded) for the host's client to hold an Info other than
// prev from a connected, unsealed enclave.
func waitInfo(t *testing.T, c *enclaveclient.Client, prev *protocol.InfoResponse, stderr *lockedbuf.Buffer) *protocol.InfoResponse {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		if info, ok := c.Info(); ok && info != prev && c.Connected() {
			return info
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("the host did not unseal the enclave:\n%s", stderr.String())
	return nil
}

// TestSimulatedKMS: --simulated --kms-endpoint runs the same sealing against a
// KMS-compatible endpoint over plain HTTP, with simulated attestation.
func TestSimulatedKMS(t *testing.T) {
	w, flags, def := stdlog.Writer(), stdlog.Flags(), slog.Default()
	t.Cleanup(func() { slog.SetDefault(def); stdlog.SetOutput(w); stdlog.SetFlags(flags) })
	dir := t.TempDir()
	stateDir := filepath.Join(dir, "state")
	policyJSON := []byte(`{"issuer":"http://127.0.0.1:8091"}`)
	pol := filepath.Join(dir, "policy.json")
	os.WriteFile(pol, policyJSON, 0o600)
	// The enclave will load this root and measure this executable and policy.
	sim, err := attester.NewSimulated(attester.SimulatedOptions{StateDir: stateDir, AppData: policyJSON})
	if err != nil {
		t.Fatal(err)
	}
	p := sim.PCRs()
	srv := kmstest.Start(t, kmstest.Options{Roots: sim.RootPool(), PCRs: map[int][]byte{0: p[0], 1: p[1], 2: p[2]}})
	sim.Close()

	sock := filepath.Join(dir, "e.sock")
	var stderr lockedbuf.Buffer
	stop := startEnclave(t, []string{"--simulated", "--state-dir", stateDir, "--policy", pol, "--listen", "unix:" + sock,
		"--kms-key-id", kmstest.KeyID, "--kms-region", kmstest.Region, "--kms-endpoint", srv.URL}, &stderr)
	defer func() {
		if code := stop(); code != 0 {
			t.Errorf("exit %d:\n%s", code, stderr.String())
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var conn net.Conn
	for conn == nil {
		if conn, err = protocol.Dial(ctx, "unix:"+sock); err != nil {
			if ctx.Err() != nil {
				t.Fatalf("enclave did not listen: %v\n%s", err, stderr.String())
			}
			conn = nil
			time.Sleep(20 * time.Millisecond)
		}
	}
	c := protocol.NewClient(conn)
	defer c.Close()
	creds := protocol.AWSCredentials{AccessKeyID: "AKIATEST", SecretAccessKey: "s"}
	var first, second protocol.UnsealResponse
	if err := c.Call(ctx, protocol.OpUnseal, protocol.UnsealRequest{Credentials: creds}, &first); err != nil {
		t.Fatalf("unseal: %v\n%s", err, stderr.String())
	}
	if err := c.Call(ctx, protocol.OpUnseal, protocol.UnsealRequest{CiphertextBlob: first.CiphertextBlob, Credentials: creds}, &second); err != nil {
		t.Fatalf("unseal with the blob: %v", err)
	}
	var info protocol.InfoResponse
	if err := c.Call(ctx, protocol.OpInfo, protocol.InfoRequest{}, &info); err != nil {
		t.Fatal(err)
	}
	if !first.Created || info.Mode != attester.ModeSimulated || info.Seed != "" || info.SigningKid == "" {
		t.Fatalf("created %v, info mode %q seed %q kid %q", first.Created, info.Mode, info.Seed, info.SigningKid)
	}
	if _, err := os.Stat(filepath.Join(stateDir, "seed")); !os.IsNotExist(err) {
		t.Fatal("a KMS-sealed simulated enclave wrote a seed file")
	}
}
