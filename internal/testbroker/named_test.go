package testbroker_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/agentkeys/broker/attest"
	"github.com/agentkeys/broker/host/witness"
	"github.com/agentkeys/broker/internal/testbroker"
	"github.com/agentkeys/broker/internal/witnesstest"
	"github.com/agentkeys/broker/shared/auditlog"
	"github.com/agentkeys/broker/shared/manifest"
	"github.com/agentkeys/broker/shared/protocol"
)

// TestNamedLog: a host keeping the log named host-a mints under it: the
// proofs verify with that log's key (the manifest's key under the name
// ISSUER/audit/host-a, which /v1/audit/verifier-key serves) and not with the
// manifest's own, the witness cosigns the named origin, the log goes on
// across an enclave restart, and the enclave refuses to be resumed as another
// log.
func TestNamedLog(t *testing.T) {
	var lw *witnesstest.Witness
	var witnessOrigin string
	b := testbroker.Start(t, testbroker.Options{AuditLogName: "host-a", Witnesses: func(origin, key string) []witness.Witness {
		witnessOrigin = origin
		lw = witnesstest.Start(t, "w.example/witness", origin, key)
		return []witness.Witness{{URL: lw.URL, VerifierKey: lw.VerifierKey}}
	}})
	info, _ := b.Enclave.Info()
	m, err := manifest.Parse(info.Manifest)
	if err != nil {
		t.Fatal(err)
	}
	origin := strings.TrimPrefix(b.URL, "http://") + "/audit/host-a"
	if witnessOrigin != origin {
		t.Fatalf("the witness was given origin %q, want %q", witnessOrigin, origin)
	}
	key := verifierKey(t, b) // also checks it is the enclave Info's
	if want, err := auditlog.LogVerifierKey(m.CheckpointVerifierKey, "host-a"); err != nil || key != want {
		t.Fatalf("verifier-key %s, want %s (%v)", key, want, err)
	}
	if name, err := auditlog.VerifierKeyLog(m.CheckpointVerifierKey, key); err != nil || name != "host-a" {
		t.Fatalf("the served key is not bound to the manifest: %q %v", name, err)
	}

	jwts := mintN(t, b, 3)
	for i, j := range jwts {
		if n, cp := checkMint(t, b, j); n != int64(i) || !strings.HasPrefix(string(cp), origin+"\n") {
			t.Fatalf("mint %d: index %d, checkpoint %q", i, n, cp)
		}
	}
	if err := b.Witnesses.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	log, err := attest.NewHTTPAuditLog(b.URL, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	opts := attest.AuditOptions{Key: key, Witnesses: []string{lw.VerifierKey}, JWT: jwts[2].Token}
	if res := attest.VerifyAuditLog(context.Background(), log, opts); !res.OK() {
		t.Fatalf("verify the named log: %+v", res.Checks)
	}
	opts.Key = m.CheckpointVerifierKey
	if res := attest.VerifyAuditLog(context.Background(), log, opts); res.OK() {
		t.Fatal("the default log's key verified the named log")
	}

	// The enclave restarts: the host resumes it as host-a and the log goes on.
	_, before := checkMint(t, b, jwts[2])
	b.StopEnclave()
	b.WaitDisconnected()
	b.StartEnclave()
	b.WaitConnected()
	for i, j := range mintN(t, b, 2) {
		if n, _ := checkMint(t, b, j); n != int64(3+i) {
			t.Fatalf("after the restart: index %d, want %d", n, 3+i)
		}
	}
	if n := b.CheckConsistent(t, before); n != 3 {
		t.Fatalf("checkpoint before the restart is of size %d", n)
	}
	b.CheckLogWhole(t)

	// Another host (or this one misconfigured) naming another log is refused.
	req, err := b.Audit.ResumeRequest(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, other := range []string{"", "host-b"} {
		req.Log = other
		var resp protocol.AuditResumeResponse
		if err := b.Enclave.Call(context.Background(), protocol.OpAuditResume, req, &resp); !errors.Is(err, protocol.ErrAuditLog) {
			t.Fatalf("resume as %q: %v", other, err)
		}
	}
}
