package api_test

import (
	"context"
	"testing"

	"github.com/agentkeys/broker/internal/testbroker"
	"github.com/agentkeys/broker/shared/auditlog"
)

func entryOf(t *testing.T, b *testbroker.Broker, index int64) auditlog.Entry {
	t.Helper()
	raw, err := b.Audit.ReadEntries(context.Background(), index, index+1)
	if err != nil {
		t.Fatal(err)
	}
	e, err := auditlog.Parse(raw[0])
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestRefusalsInTheLog: a verified wallet's refusal is a host-asserted log
// entry; a JWT the enclave signed but the host withheld (a revoked session)
// is recorded with the JWT's own entry; a forged bearer's refusal stays out
// of the log.
func TestRefusalsInTheLog(t *testing.T) {
	b := testbroker.Start(t, testbroker.Options{})
	tok, wallet := signIn(t, b)

	if r := mint(t, b, "Bearer "+tok, `{"ttl_seconds":1}`); r.status != 400 {
		t.Fatalf("ttl 1: %d %s", r.status, r.body)
	}
	rec := lastRecord(t, b)
	if rec.Logged == nil {
		t.Fatalf("the policy refusal is not in the log: %+v", rec)
	}
	if e := entryOf(t, b, rec.Logged.Index); !e.HostAsserted || e.Outcome != "policy_refused" || e.Wallet != wallet || e.Kind != "oidc_jwt" {
		t.Fatalf("entry of the policy refusal: %+v", e)
	}

	if r := do(t, "POST", b.URL+"/v1/session/revoke", map[string]string{"Authorization": "Bearer " + tok}, nil); r.status != 200 {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	if r := mint(t, b, "Bearer "+tok, ""); r.status != 401 {
		t.Fatalf("mint after revoke: %d %s", r.status, r.body)
	}
	rec = lastRecord(t, b)
	if rec.Outcome != "revoked" || rec.Logged == nil {
		t.Fatalf("record of the withheld JWT: %+v", rec)
	}
	if e := entryOf(t, b, rec.Logged.Index); e.HostAsserted || e.Kind != "oidc_jwt" || e.JTI != auditlog.EntryID("", rec.Logged.Index) {
		t.Fatalf("entry of the withheld JWT: %+v", e)
	}

	size := b.Audit.LogSize()
	if r := mint(t, b, "Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", ""); r.status != 401 {
		t.Fatalf("forged bearer: %d", r.status)
	}
	if rec := lastRecord(t, b); rec.Logged != nil || b.Audit.LogSize() != size {
		t.Fatalf("a forged bearer's refusal reached the log: %+v", rec)
	}
	b.CheckLogWhole(t)
}
