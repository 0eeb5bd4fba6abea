package service

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/agentkeys/broker/enclave/attester"
	"github.com/agentkeys/broker/shared/auditlog"
	"github.com/agentkeys/broker/shared/claims"
	"github.com/agentkeys/broker/shared/manifest"
	"github.com/agentkeys/broker/shared/policy"
	"github.com/agentkeys/broker/shared/protocol"
)

// checkLogged verifies where an entry landed the way an agent would, with the
// verifier key from Info, and returns the entry.
func checkLogged(t *testing.T, vkey string, l protocol.AuditLogged) auditlog.Entry {
	t.Helper()
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	n, err := note.Open(l.Batch.Checkpoint, note.VerifierList(v))
	if err != nil {
		t.Fatalf("checkpoint: %v", err)
	}
	c, err := auditlog.ParseCheckpoint(n.Text)
	if err != nil || c.Origin != v.Name() {
		t.Fatalf("checkpoint text %q: %v", n.Text, err)
	}
	entry := l.Batch.Entries[l.Index-l.Batch.Start]
	proof, err := auditlog.SplitHashes(l.Proof, 63)
	if err != nil {
		t.Fatal(err)
	}
	if err := tlog.CheckRecord(proof, c.Tree.N, c.Tree.Hash, l.Index, tlog.RecordHash(entry)); err != nil {
		t.Fatalf("inclusion of entry %d: %v", l.Index, err)
	}
	e, err := auditlog.Parse(entry)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestMintIsLogged: every JWT's jti is its log index (in the default log),
// carried as the
// agentkeys_log_index tag, and its entry (logged under a checkpoint signed
// with the published key) names the JWT's hash, wallet, session and chain.
func TestMintIsLogged(t *testing.T) {
	e := newEnv(t, nil)
	info := e.info(t)
	w := newWallet(t)
	sess := e.session(t, w)
	for i := range int64(3) {
		var m protocol.MintOIDCResponse
		if err := e.call(t, protocol.OpMintOIDC, protocol.MintOIDCRequest{Token: sess.Token, LogSize: i}, &m); err != nil {
			t.Fatal(err)
		}
		if m.Log.Index != i || m.JTI != auditlog.EntryID("", i) || m.JTI != strconv.FormatInt(i, 10) {
			t.Fatalf("mint %d: index %d, jti %q", i, m.Log.Index, m.JTI)
		}
		var c claims.OIDC
		parts := strings.Split(m.JWT, ".")
		decodeSegment(t, parts[1], &c)
		if c.ID != m.JTI || len(c.Tags.PrincipalTags[claims.LogIndexTag]) != 1 || c.Tags.PrincipalTags[claims.LogIndexTag][0] != m.JTI {
			t.Fatalf("claims jti %q, tags %v", c.ID, c.Tags)
		}
		entry := checkLogged(t, info.CheckpointVerifierKey, m.Log)
		want := auditlog.Entry{
			Version: 1, Time: m.IssuedAt, Kind: "oidc_jwt", Outcome: "ok", Wallet: sess.Session.Wallet,
			SessionID: sess.Session.SessionID, Audience: m.Audience, ExpiresAt: m.ExpiresAt, Kid: m.Kid, JTI: m.JTI,
			JWTSHA256: auditlog.JWTHash(m.JWT), ChainID: 1,
		}
		if entry != want {
			t.Fatalf("entry %+v\nwant  %+v", entry, want)
		}
	}
}

// TestMintRefusedUntilResumed: a fresh enclave mints nothing before the host
// has presented its log.
func TestMintRefusedUntilResumed(t *testing.T) {
	att, err := attester.NewSimulated(attester.SimulatedOptions{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	p := policy.Default(testIssuer)
	p.AllowHostAssertedWallet = true
	svc, err := New(Config{Policy: p, Seed: testSeed, Attester: att})
	if err != nil {
		t.Fatal(err)
	}
	req := protocol.MintOIDCRequest{HostAssertedWallet: "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed"}
	if m, err := svc.MintOIDC(req); !errors.Is(err, protocol.ErrAuditLog) || m.JWT != "" {
		t.Fatalf("mint before resume: %v %+v", err, m)
	}
	if _, err := svc.AuditAppend(protocol.AuditAppendRequest{Entry: protocol.AuditHostEntry{Kind: "aws_creds", Outcome: "ok", Wallet: "unknown"}}); !errors.Is(err, protocol.ErrAuditLog) {
		t.Fatalf("append before resume: %v", err)
	}
	if _, err := svc.Handle(context.Background(), protocol.OpAuditResume, []byte{0xa0}); err != nil {
		t.Fatal(err)
	}
	if m, err := svc.MintOIDC(req); err != nil || m.Log.Index != 0 {
		t.Fatalf("mint after resume: %v %+v", err, m)
	}
}

// TestAuditAppend: a host-asserted entry is logged with the enclave's time
// and host_asserted true; a malformed one is refused and takes no index.
func TestAuditAppend(t *testing.T) {
	e := newEnv(t, nil)
	info := e.info(t)
	var r protocol.AuditAppendResponse
	req := protocol.AuditAppendRequest{Entry: protocol.AuditHostEntry{
		Kind: "aws_creds", Outcome: "ok", Wallet: "0x5AAEB6053F3E94C9B9A09F33669435E7EF1BEAED", ExpiresAt: 99, JTI: "7", AccessKeyID: "ASIAEXAMPLE",
	}}
	if err := e.call(t, protocol.OpAuditAppend, req, &r); err != nil {
		t.Fatal(err)
	}
	entry := checkLogged(t, info.CheckpointVerifierKey, r)
	want := auditlog.Entry{Version: 1, Time: e.clock.Now().Unix(), Kind: "aws_creds", Outcome: "ok",
		Wallet: "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed", ExpiresAt: 99, JTI: "7", HostAsserted: true, AccessKeyID: "ASIAEXAMPLE"}
	if entry != want {
		t.Fatalf("entry %+v\nwant  %+v", entry, want)
	}
	for _, bad := range []protocol.AuditHostEntry{
		{Kind: "Bad Kind", Outcome: "ok", Wallet: "unknown"},
		{Kind: "aws_creds", Outcome: "ok", Wallet: "0x12"},
		{Kind: "aws_creds", Outcome: "ok", Wallet: "unknown", JTI: "abc"},
		{Kind: "aws_creds", Outcome: "ok", Wallet: "unknown", Detail: strings.Repeat("d", auditlog.MaxDetailLen+1)},
	} {
		if err := e.call(t, protocol.OpAuditAppend, protocol.AuditAppendRequest{Entry: bad}, &r); !errors.Is(err, protocol.ErrBadRequest) {
			t.Fatalf("%+v: %v", bad, err)
		}
	}
	if err := e.call(t, protocol.OpAuditAppend, req, &r); err != nil || r.Index != 1 {
		t.Fatalf("the refused entries took indexes: %v %d", err, r.Index)
	}
}

// resumeBody is an audit_resume request as the host sends it: CBOR.
func resumeBody(t *testing.T, req protocol.AuditResumeRequest) []byte {
	t.Helper()
	b, err := protocol.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkNamedJTI checks that a mint in a named log has the jti want (NAME/INDEX)
// in its answer, its claims, its agentkeys_log_index tag and its entry.
func checkNamedJTI(t *testing.T, m protocol.MintOIDCResponse, entry auditlog.Entry, want string) {
	t.Helper()
	var c claims.OIDC
	decodeSegment(t, strings.Split(m.JWT, ".")[1], &c)
	tag := c.Tags.PrincipalTags[claims.LogIndexTag]
	if m.JTI != want || c.ID != want || len(tag) != 1 || tag[0] != want || entry.JTI != want || want != auditlog.EntryID("host-a", m.Log.Index) {
		t.Fatalf("mint at %d: jti %q, claim %q, tag %v, entry jti %q; want %q", m.Log.Index, m.JTI, c.ID, tag, entry.JTI, want)
	}
}

// TestNamedLog: the first audit_resume names the log; Info then reports that
// log's verifier key (the manifest's key under the name origin/NAME), mints
// are logged under it with jti NAME/INDEX, a restarted enclave resumes it under that name only,
// and a resume naming another log is refused.
func TestNamedLog(t *testing.T) {
	p := policy.Default(testIssuer)
	p.AllowHostAssertedWallet = true
	newSvc := func() *Service {
		att, err := attester.NewSimulated(attester.SimulatedOptions{StateDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		svc, err := New(Config{Policy: p, Seed: testSeed, Attester: att})
		if err != nil {
			t.Fatal(err)
		}
		return svc
	}
	ctx := context.Background()
	svc := newSvc()
	before := svc.Info()
	m, err := manifest.Parse(before.Manifest)
	if err != nil {
		t.Fatal(err)
	}
	if before.CheckpointVerifierKey != m.CheckpointVerifierKey {
		t.Fatalf("before resume Info says %s, the manifest %s", before.CheckpointVerifierKey, m.CheckpointVerifierKey)
	}
	req := protocol.MintOIDCRequest{HostAssertedWallet: "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed"}
	if _, err := svc.MintOIDC(req); !errors.Is(err, protocol.ErrAuditLog) {
		t.Fatalf("mint before resume: %v", err)
	}
	if _, err := svc.Handle(ctx, protocol.OpAuditResume, resumeBody(t, protocol.AuditResumeRequest{Log: "host-a"})); err != nil {
		t.Fatal(err)
	}
	info := svc.Info()
	origin := "broker.example.com/audit/host-a"
	want, err := auditlog.LogVerifierKey(m.CheckpointVerifierKey, "host-a")
	if err != nil {
		t.Fatal(err)
	}
	if info.CheckpointVerifierKey != want {
		t.Fatalf("Info after resume: %s, want %s", info.CheckpointVerifierKey, want)
	}
	if name, err := auditlog.VerifierKeyLog(m.CheckpointVerifierKey, info.CheckpointVerifierKey); err != nil || name != "host-a" {
		t.Fatalf("the named key is not bound to the manifest's: %q %v", name, err)
	}
	if string(info.Manifest) != string(before.Manifest) {
		t.Fatal("the manifest changed at resume")
	}
	minted, err := svc.MintOIDC(req)
	if err != nil {
		t.Fatal(err)
	}
	entry := checkLogged(t, info.CheckpointVerifierKey, minted.Log) // checks the origin is the key's name
	checkNamedJTI(t, minted, entry, "host-a/0")
	if !strings.HasPrefix(string(minted.Log.Batch.Checkpoint), origin+"\n1\n") {
		t.Fatalf("checkpoint %q", minted.Log.Batch.Checkpoint)
	}
	for _, other := range []string{"", "host-b"} {
		_, err := svc.Handle(ctx, protocol.OpAuditResume, resumeBody(t, protocol.AuditResumeRequest{Log: other}))
		if !errors.Is(err, protocol.ErrAuditLog) || !strings.Contains(err.Error(), "one enclave keeps one log") {
			t.Fatalf("resume naming %q: %v", other, err)
		}
	}

	// A restarted enclave resumes the named log under its name only.
	stored := protocol.AuditResumeRequest{Checkpoint: minted.Log.Batch.Checkpoint, Hashes: minted.Log.Batch.Hashes}
	again := newSvc()
	if _, err := again.Handle(ctx, protocol.OpAuditResume, resumeBody(t, stored)); !errors.Is(err, protocol.ErrBadRequest) {
		t.Fatalf("the named log resumed as the default one: %v", err)
	}
	stored.Log = "host-a"
	out, err := again.Handle(ctx, protocol.OpAuditResume, resumeBody(t, stored))
	if err != nil || out.(protocol.AuditResumeResponse).Size != 1 {
		t.Fatalf("resume after restart: %+v %v", out, err)
	}
	if again.Info().CheckpointVerifierKey != want {
		t.Fatal("the restarted enclave reports another key")
	}
	m2, err := again.MintOIDC(req)
	if err != nil || m2.Log.Index != 1 {
		t.Fatalf("mint after restart: %+v %v", m2, err)
	}
	checkNamedJTI(t, m2, checkLogged(t, want, m2.Log), "host-a/1")
	// A host-asserted entry may name the JWT it used by its id in a named log.
	if a, err := again.AuditAppend(protocol.AuditAppendRequest{Entry: protocol.AuditHostEntry{Kind: "aws_creds", Outcome: "ok", Wallet: "unknown", JTI: "host-a/1"}, LogSize: 2}); err != nil ||
		checkLogged(t, want, a).JTI != "host-a/1" {
		t.Fatalf("host-asserted entry naming host-a/1: %+v %v", a, err)
	}

	for _, bad := range []string{"Host-A", "a/b", "-a", strings.Repeat("x", 64)} {
		if _, err := newSvc().Handle(ctx, protocol.OpAuditResume, resumeBody(t, protocol.AuditResumeRequest{Log: bad})); !errors.Is(err, protocol.ErrBadRequest) {
			t.Fatalf("resume naming %q: %v", bad, err)
		}
	}
}
