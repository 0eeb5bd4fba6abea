// Package testbroker runs a whole broker in-process for tests: a simulated
// enclave (the real enclave service) behind the real protocol on a unix socket,
// and the real host API on an httptest server on loopback. Nothing is mocked;
// only the processes are folded into one.
//
// Tests that must exercise the binaries themselves build and start them (see
// the e2e tests); everything else uses this for speed.
package testbroker

import (
	"context"
	"crypto/rand"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/agentkeys/broker/enclave/attester"
	"github.com/agentkeys/broker/enclave/logtree"
	"github.com/agentkeys/broker/enclave/service"
	"github.com/agentkeys/broker/host/api"
	"github.com/agentkeys/broker/host/audit"
	"github.com/agentkeys/broker/host/awscreds"
	"github.com/agentkeys/broker/host/enclaveclient"
	"github.com/agentkeys/broker/host/metrics"
	"github.com/agentkeys/broker/host/ratelimit"
	"github.com/agentkeys/broker/host/revocation"
	"github.com/agentkeys/broker/host/witness"
	"github.com/agentkeys/broker/shared/auditlog"
	"github.com/agentkeys/broker/shared/policy"
	"github.com/agentkeys/broker/shared/protocol"
	"github.com/agentkeys/broker/shared/tlogproof"
)

// Options adjust the broker.
type Options struct {
	// Policy adjusts the enclave policy (its issuer is set to the server URL).
	Policy func(*policy.Policy)
	// Audit replaces the default in-memory audit store.
	Audit audit.Store
	// Revocations replaces the default in-memory revocation list
	// (Broker.Revocations is then nil).
	Revocations revocation.Store
	// Issuer, if set, is the issuer (the policy's and the API's) instead of
	// the server's own URL: for brokers behind one front end. Broker.URL
	// stays the server's address.
	Issuer string
	// Seed, if set, is the enclave's seed (32 bytes) instead of a random
	// one: brokers given one seed and one policy are two enclaves from one
	// image, with the same keys.
	Seed []byte
	// SessionBackend is the compatibility backend URL, if any.
	SessionBackend string
	// DefaultTTLSeconds is passed to the API.
	DefaultTTLSeconds int64
	// SignInLimit, if set, rate-limits sign-in per client.
	SignInLimit *ratelimit.Limiter
	// Now, if set, is the enclave's clock (to expire sessions in tests).
	Now func() time.Time
	// AWS, if set, is called with the issuer URL (known only once the listener
	// exists) and returns the AWS credential broker for /v1/mint-aws-creds.
	AWS func(issuer string) *awscreds.Broker
	// Logger, if set, is the API's logger.
	Logger *slog.Logger
	// Configure, if set, adjusts the API's configuration last (limits,
	// trusted proxies).
	Configure func(*api.Config)
	// EnclaveAudit tunes the enclave's audit log (batching, bounds).
	EnclaveAudit logtree.Config
	// AuditLogName names the log the host keeps (--audit-log-name; "" is
	// the default log).
	AuditLogName string
	// Witnesses, if set, is called once the enclave's checkpoint verifier
	// key is known (origin is its name) and returns the witnesses the host
	// submits checkpoints to (Broker.Witnesses, running until the test
	// ends).
	Witnesses func(origin, verifierKey string) []witness.Witness
	// WitnessInterval is the witnesses' Run interval (default
	// witness.DefaultInterval).
	WitnessInterval time.Duration
}

// Broker is a running in-process broker.
type Broker struct {
	URL         string // the server, http://127.0.0.1:PORT
	Issuer      string // the issuer: URL unless Options.Issuer says otherwise
	Audit       audit.Store
	Memory      *audit.Memory // the default store (nil if Options.Audit was given)
	Revocations *revocation.Memory
	API         *api.API
	Enclave     *enclaveclient.Client
	Metrics     *metrics.Metrics
	Attester    *attester.Simulated
	Witnesses   *witness.Witnesses // nil without Options.Witnesses

	t        testing.TB
	now      func() time.Time
	addr     string
	pol      policy.Policy
	seed     []byte
	logCfg   logtree.Config
	logName  string
	stateDir string

	mu  sync.Mutex
	srv *protocol.Server
}

// Start starts a broker and stops it when the test ends.
func Start(t testing.TB, opts Options) *Broker {
	t.Helper()
	hs := httptest.NewUnstartedServer(nil)
	self := "http://" + hs.Listener.Addr().String()
	issuer := self
	if opts.Issuer != "" {
		issuer = opts.Issuer
	}
	pol := policy.Default(issuer)
	if opts.Policy != nil {
		opts.Policy(&pol)
	}
	if err := pol.Normalize(); err != nil {
		t.Fatal(err)
	}
	b := &Broker{t: t, now: opts.Now, URL: self, Issuer: issuer, pol: pol, logCfg: opts.EnclaveAudit, logName: opts.AuditLogName, addr: "unix:" + filepath.Join(t.TempDir(), "enclave.sock"), stateDir: t.TempDir()}
	b.seed = make([]byte, 32)
	rand.Read(b.seed)
	if opts.Seed != nil {
		b.seed = append([]byte(nil), opts.Seed...)
	}
	b.Audit = opts.Audit
	if b.Audit == nil {
		b.Memory = audit.NewMemory()
		b.Audit = b.Memory
	}
	b.StartEnclave()

	dial, err := protocol.Dialer(b.addr)
	if err != nil {
		t.Fatal(err)
	}
	b.Enclave = enclaveclient.New(enclaveclient.Config{
		Dial: dial, FailFast: 200 * time.Millisecond, MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		OnConnect: func(ctx context.Context, call enclaveclient.CallFunc) error {
			return audit.Resume(ctx, b.Audit, opts.AuditLogName, call)
		},
	})
	var revs revocation.Store = opts.Revocations
	if revs == nil {
		b.Revocations = revocation.NewMemory()
		revs = b.Revocations
	}
	b.Metrics = metrics.New(b.Enclave)
	cfg := api.Config{Issuer: issuer, Enclave: b.Enclave, Audit: b.Audit, AuditLogName: opts.AuditLogName, Revocations: revs,
		Metrics: b.Metrics, DefaultTTLSeconds: opts.DefaultTTLSeconds, SignInLimit: opts.SignInLimit, Logger: opts.Logger}
	if opts.AWS != nil {
		cfg.AWS = opts.AWS(issuer)
	}
	if opts.SessionBackend != "" {
		cfg.SessionBackend, err = api.NewSessionBackend(opts.SessionBackend)
		if err != nil {
			t.Fatal(err)
		}
	}
	if opts.Witnesses != nil {
		b.startWitnesses(opts)
		cfg.Witnesses = b.Witnesses
	}
	if opts.Configure != nil {
		opts.Configure(&cfg)
	}
	a, err := api.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b.API = a
	b.WaitConnected()
	hs.Config.Handler = a
	hs.Start()
	t.Cleanup(func() {
		hs.Close()
		b.Enclave.Close()
		b.StopEnclave()
	})
	return b
}

// startWitnesses builds Broker.Witnesses, its metrics on Broker.Metrics,
// and runs it until the test ends.
func (b *Broker) startWitnesses(opts Options) {
	b.t.Helper()
	b.WaitConnected()
	info, ok := b.Enclave.Info()
	if !ok {
		b.t.Fatal("no enclave Info after connecting")
	}
	v, err := note.NewVerifier(info.CheckpointVerifierKey)
	if err != nil {
		b.t.Fatal(err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ws, err := witness.New(witness.Config{Source: b.Audit, Witnesses: opts.Witnesses(v.Name(), info.CheckpointVerifierKey),
		Interval: opts.WitnessInterval, Registerer: b.Metrics.Registry, Logger: log})
	if err != nil {
		b.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ws.Run(ctx); close(done) }()
	b.t.Cleanup(func() { cancel(); <-done })
	b.Witnesses = ws
}

// StartEnclave starts (or restarts) the simulated enclave on the same socket,
// from the same seed and state: the same keys, fresh nonces.
func (b *Broker) StartEnclave() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.srv != nil {
		return
	}
	att, err := attester.NewSimulated(attester.SimulatedOptions{StateDir: b.stateDir, AppData: []byte(b.pol.Digest())})
	if err != nil {
		b.t.Fatal(err)
	}
	b.Attester = att
	seed := append([]byte(nil), b.seed...)
	svc, err := service.New(service.Config{Policy: b.pol, Seed: seed, Attester: att, Now: b.now, Audit: b.logCfg})
	if err != nil {
		b.t.Fatal(err)
	}
	l, err := protocol.Listen(b.addr)
	if err != nil {
		b.t.Fatal(err)
	}
	b.srv = &protocol.Server{Handler: svc}
	go b.srv.Serve(l)
}

// StopEnclave stops the enclave, dropping its connections.
func (b *Broker) StopEnclave() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.srv == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b.srv.Shutdown(ctx)
	b.srv = nil
}

// WaitConnected waits (bounded) until the host holds an enclave connection.
func (b *Broker) WaitConnected() {
	b.t.Helper()
	for range 1000 {
		if b.Enclave.Connected() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.t.Fatal("the host did not connect to the enclave")
}

// WaitDisconnected waits (bounded) until the host has noticed the enclave is gone.
func (b *Broker) WaitDisconnected() {
	b.t.Helper()
	for range 1000 {
		if !b.Enclave.Connected() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.t.Fatal("the host did not notice the enclave going away")
}

// Rotate stops the enclave, changes its policy with adjust, and starts it again
// from the same seed: what deploying a new image with a new policy does. It
// returns once the host has reconnected and serves the new policy's keys.
func (b *Broker) Rotate(adjust func(*policy.Policy)) {
	b.t.Helper()
	b.StopEnclave()
	b.WaitDisconnected()
	pol := b.pol
	pol.IssuerKeys = append([]string(nil), b.pol.IssuerKeys...)
	adjust(&pol)
	if err := pol.Normalize(); err != nil {
		b.t.Fatal(err)
	}
	b.mu.Lock()
	b.pol = pol
	b.mu.Unlock()
	b.StartEnclave()
	for range 1000 {
		if info, ok := b.Enclave.Info(); ok && info.PolicyDigest == pol.Digest() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.t.Fatal("the host did not pick up the new policy")
}

// AuditLogName is the name of the log this broker's host keeps
// (Options.AuditLogName; "" is the default log).
func (b *Broker) AuditLogName() string { return b.logName }

// CheckProof verifies a log_proof the way an agent would (the checkpoint's
// signature with the enclave's published verifier key, the inclusion of the
// entry the store holds at its index) and returns that entry.
func (b *Broker) CheckProof(t testing.TB, proof string) auditlog.Entry {
	t.Helper()
	p, err := tlogproof.Parse([]byte(proof))
	if err != nil {
		t.Fatalf("log_proof: %v\n%s", err, proof)
	}
	info, ok := b.Enclave.Info()
	if !ok {
		t.Fatal("no enclave info")
	}
	v, err := note.NewVerifier(info.CheckpointVerifierKey)
	if err != nil {
		t.Fatal(err)
	}
	n, err := note.Open(p.Checkpoint, note.VerifierList(v))
	if err != nil {
		t.Fatalf("the proof's checkpoint: %v", err)
	}
	c, err := auditlog.ParseCheckpoint(n.Text)
	if err != nil || c.Origin != v.Name() {
		t.Fatalf("the proof's checkpoint %q: %v", n.Text, err)
	}
	entries, err := b.Audit.ReadEntries(context.Background(), p.Index, p.Index+1)
	if err != nil {
		t.Fatalf("entry %d: %v", p.Index, err)
	}
	if err := tlog.CheckRecord(p.Hashes, c.Tree.N, c.Tree.Hash, p.Index, tlog.RecordHash(entries[0])); err != nil {
		t.Fatalf("entry %d under the checkpoint of %d: %v", p.Index, c.Tree.N, err)
	}
	e, err := auditlog.Parse(entries[0])
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// CheckConsistent checks that the checkpoint (a signed note) is consistent
// with the store's latest, by a consistency proof from the store's hashes,
// and returns the size it names.
func (b *Broker) CheckConsistent(t testing.TB, checkpoint []byte) int64 {
	t.Helper()
	info, _ := b.Enclave.Info()
	v, err := note.NewVerifier(info.CheckpointVerifierKey)
	if err != nil {
		t.Fatal(err)
	}
	tree := func(cp []byte) tlog.Tree {
		n, err := note.Open(cp, note.VerifierList(v))
		if err != nil {
			t.Fatal(err)
		}
		c, err := auditlog.ParseCheckpoint(n.Text)
		if err != nil {
			t.Fatal(err)
		}
		return c.Tree
	}
	latest, err := b.Audit.Checkpoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	old, cur := tree(checkpoint), tree(latest)
	r := storeHashes{b.Audit}
	p, err := tlog.ProveTree(cur.N, old.N, r)
	if err != nil {
		t.Fatal(err)
	}
	if err := tlog.CheckTree(p, cur.N, cur.Hash, old.N, old.Hash); err != nil {
		t.Fatalf("checkpoint of %d is not consistent with the latest (%d): %v", old.N, cur.N, err)
	}
	return old.N
}

type storeHashes struct{ r audit.LogReader }

func (s storeHashes) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	return s.r.ReadHashes(context.Background(), idx)
}

// CheckLogWhole checks that the store holds the whole of the enclave's audit
// log: the enclave, shown the store's tip (audit_resume), has nothing more,
// and every entry up to it reads back.
func (b *Broker) CheckLogWhole(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	req, err := b.Audit.ResumeRequest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	req.Log = b.logName
	var resp protocol.AuditResumeResponse
	if err := b.Enclave.Call(ctx, protocol.OpAuditResume, req, &resp); err != nil {
		t.Fatalf("audit_resume with the store's tip: %v", err)
	}
	size := b.Audit.LogSize()
	if resp.Size != size || len(resp.Batches) != 0 {
		t.Fatalf("the enclave's log has %d entries (%d batches to hand back), the store %d", resp.Size, len(resp.Batches), size)
	}
	for start := int64(0); start < size; start += audit.MaxReadEntries {
		if _, err := b.Audit.ReadEntries(ctx, start, min(size, start+audit.MaxReadEntries)); err != nil {
			t.Fatal(err)
		}
	}
}
