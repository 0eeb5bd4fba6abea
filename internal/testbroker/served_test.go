package testbroker_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"filippo.io/torchwood"

	"github.com/agentkeys/broker/attest"
	"github.com/agentkeys/broker/host/client"
	"github.com/agentkeys/broker/host/tiles"
	"github.com/agentkeys/broker/host/witness"
	"github.com/agentkeys/broker/internal/testbroker"
	"github.com/agentkeys/broker/internal/witnesstest"
	"github.com/agentkeys/broker/shared/tlogproof"
)

func TestMain(m *testing.M) {
	code := m.Run()
	witnesstest.Cleanup()
	os.Exit(code)
}

func httpGet(t testing.TB, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func mintN(t testing.TB, b *testbroker.Broker, n int) []*client.JWT {
	t.Helper()
	c, sess := signIn(t, b)
	var out []*client.JWT
	for range n {
		j, err := c.MintJWT(context.Background(), sess.Token, "", 0)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, j)
	}
	return out
}

// verifierKey reads /v1/audit/verifier-key, as an auditor would.
func verifierKey(t testing.TB, b *testbroker.Broker) string {
	t.Helper()
	status, body := httpGet(t, b.URL+"/v1/audit/verifier-key")
	if status != 200 {
		t.Fatalf("verifier-key: %d %s", status, body)
	}
	info, _ := b.Enclave.Info()
	if k := strings.TrimSpace(string(body)); k != info.CheckpointVerifierKey {
		t.Fatalf("verifier-key %q, the enclave's is %q", k, info.CheckpointVerifierKey)
	}
	return strings.TrimSpace(string(body))
}

// TestAuditLogServed: the host serves its audit log under /v1/audit/: before
// any entry the checkpoint is 404; after mints, attest verifies the whole log
// over HTTP and the inclusion of every JWT (with the entry naming it), and
// /v1/audit/proof/{jti} proves the same entry as the mint's log_proof.
func TestAuditLogServed(t *testing.T) {
	b := testbroker.Start(t, testbroker.Options{})
	if status, body := httpGet(t, b.URL+"/v1/audit/checkpoint"); status != 404 {
		t.Fatalf("checkpoint of an empty log: %d %s", status, body)
	}
	key := verifierKey(t, b)
	jwts := mintN(t, b, 3)
	log, err := attest.NewHTTPAuditLog(b.URL, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range jwts {
		res := attest.VerifyAuditLog(context.Background(), log, attest.AuditOptions{Key: key, JWT: j.Token})
		if !res.OK() {
			t.Fatalf("verify --jwt: %+v", res.Checks)
		}
		if c := res.Find("jwt entry"); c == nil || c.Status != attest.StatusPass {
			t.Fatalf("the entry content is not checked: %+v", res.Checks)
		}
		mp, err := tlogproof.Parse([]byte(j.LogProof))
		if err != nil {
			t.Fatal(err)
		}
		status, body := httpGet(t, b.URL+"/v1/audit/proof/"+jwtClaims(t, j.Token).ID)
		if status != 200 {
			t.Fatalf("proof: %d %s", status, body)
		}
		sp, err := tlogproof.Parse(body)
		if err != nil {
			t.Fatal(err)
		}
		if sp.Index != mp.Index {
			t.Fatalf("served proof of entry %d, the mint's of %d", sp.Index, mp.Index)
		}
		for _, p := range []tlogproof.Proof{mp, sp} {
			if r := attest.VerifyAuditProofFromLog(context.Background(), p.Marshal(), log, attest.AuditOptions{Key: key, JWT: j.Token}); !r.OK() {
				t.Fatalf("proof %d: %+v", p.Index, r.Checks)
			}
		}
	}
	// A different route's metrics label, as the other routes have.
	if status, body := httpGet(t, b.URL+"/v1/audit/tile/entries/000.p/3"); status != 200 {
		t.Fatalf("bundle: %d %s", status, body)
	}
	if status, _ := httpGet(t, b.URL+"/v1/audit/tile/entries/000.p/4"); status != 404 {
		t.Fatalf("a bundle beyond the tree: %d", status)
	}
	_, metrics := httpGet(t, b.URL+"/metrics")
	for _, route := range []string{"audit_checkpoint", "audit_tile", "audit_proof", "audit_verifier_key"} {
		if !strings.Contains(string(metrics), `route="`+route+`"`) {
			t.Errorf("no metrics for route %s", route)
		}
	}
}

// readyWitnesses returns /readyz's status and its witnesses detail.
func readyWitnesses(t testing.TB, b *testbroker.Broker) (int, []witness.Status) {
	t.Helper()
	status, body := httpGet(t, b.URL+"/readyz")
	var r struct {
		Witnesses []witness.Status `json:"witnesses"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("readyz %s: %v", body, err)
	}
	return status, r.Witnesses
}

// TestWitnessed: with a real litewitness configured, the served checkpoint
// (and the proofs) carry its cosignature once the host has submitted it, and
// attest verifies it with the witness's key; /readyz shows lag 0.
func TestWitnessed(t *testing.T) {
	var lw *witnesstest.Witness
	b := testbroker.Start(t, testbroker.Options{Witnesses: func(origin, key string) []witness.Witness {
		lw = witnesstest.Start(t, "w.example/witness", origin, key)
		return []witness.Witness{{URL: lw.URL, VerifierKey: lw.VerifierKey}}
	}})
	key := verifierKey(t, b)
	jwts := mintN(t, b, 3)
	if err := b.Witnesses.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, cp := httpGet(t, b.URL+"/v1/audit/checkpoint")
	if !strings.Contains(string(cp), "\n— "+lw.Name+" ") {
		t.Fatalf("the served checkpoint carries no cosignature of %s:\n%s", lw.Name, cp)
	}
	log, err := attest.NewHTTPAuditLog(b.URL, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	opts := attest.AuditOptions{Key: key, Witnesses: []string{lw.VerifierKey}, JWT: jwts[2].Token}
	if res := attest.VerifyAuditLog(context.Background(), log, opts); !res.OK() {
		t.Fatalf("verify --witness: %+v", res.Checks)
	}
	_, proof := httpGet(t, b.URL+"/v1/audit/proof/"+jwtClaims(t, jwts[0].Token).ID)
	opts.JWT = jwts[0].Token
	if r := attest.VerifyAuditProofFromLog(context.Background(), proof, log, opts); !r.OK() {
		t.Fatalf("served proof with --witness: %+v", r.Checks)
	}
	status, ws := readyWitnesses(t, b)
	if status != 200 || len(ws) != 1 || ws[0].Name != lw.Name || ws[0].CosignedSize != 3 || ws[0].Lag != 0 {
		t.Fatalf("readyz %d witnesses %+v", status, ws)
	}
}

// TestWitnessDown: a witness that is down does not stop minting nor make the
// host unready; /readyz shows its lag, and the served checkpoint is the
// log's alone.
func TestWitnessDown(t *testing.T) {
	down := httptest.NewServer(http.NotFoundHandler())
	url := down.URL
	down.Close()
	wkey := witnessKey(t, "down.example/witness")
	b := testbroker.Start(t, testbroker.Options{Witnesses: func(string, string) []witness.Witness {
		return []witness.Witness{{URL: url, VerifierKey: wkey}}
	}})
	mintN(t, b, 2)
	if err := b.Witnesses.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	status, ws := readyWitnesses(t, b)
	if status != 200 || len(ws) != 1 || ws[0].CosignedSize != -1 || ws[0].Lag != 2 || ws[0].LastError == "" {
		t.Fatalf("readyz %d witnesses %+v", status, ws)
	}
	_, cp := httpGet(t, b.URL+"/v1/audit/checkpoint")
	if tree, err := tiles.ParseCheckpointSize(cp); err != nil || tree.N != 2 || strings.Count(string(cp), "\n— ") != 1 {
		t.Fatalf("served checkpoint %q (%v)", cp, err)
	}
	if r := attest.VerifyAuditLog(context.Background(), mustLog(t, b), attest.AuditOptions{Key: verifierKey(t, b), Witnesses: []string{wkey}}); r.OK() {
		t.Fatal("verify --witness passed without the witness's cosignature")
	}
	_, metrics := httpGet(t, b.URL+"/metrics")
	if !strings.Contains(string(metrics), `agentkeys_witness_lag_entries{witness="down.example/witness"} 2`) {
		t.Fatalf("no lag gauge of 2 in /metrics:\n%s", metrics)
	}
}

func mustLog(t testing.TB, b *testbroker.Broker) attest.AuditLog {
	l, err := attest.NewHTTPAuditLog(b.URL, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func witnessKey(t testing.TB, name string) string {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := torchwood.NewCosignatureSigner(name, priv)
	if err != nil {
		t.Fatal(err)
	}
	return s.Verifier().String()
}
