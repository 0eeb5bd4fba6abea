package testbroker_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"

	"github.com/agentkeys/broker/host/audit"
	"github.com/agentkeys/broker/host/client"
	"github.com/agentkeys/broker/internal/testbroker"
	"github.com/agentkeys/broker/shared/auditlog"
	"github.com/agentkeys/broker/shared/claims"
	"github.com/agentkeys/broker/shared/tlogproof"
)

func signIn(t testing.TB, b *testbroker.Broker) (*client.Client, *client.Session) {
	t.Helper()
	c, err := client.New(b.URL)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := secp256k1.GeneratePrivateKey()
	sess, err := c.SignIn(context.Background(), key, client.SignInOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return c, sess
}

func jwtClaims(t testing.TB, jwt string) claims.OIDC {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(jwt, ".")[1])
	if err != nil {
		t.Fatal(err)
	}
	var c claims.OIDC
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// checkMint checks one minted JWT against its proof: jti = the
// agentkeys_log_index tag = the entry's jti = the entry id of the proof's
// index in the broker's log (the index in decimal in the default log,
// NAME/INDEX in the log named NAME), and the entry names the JWT.
func checkMint(t testing.TB, b *testbroker.Broker, j *client.JWT) (int64, []byte) {
	t.Helper()
	e := b.CheckProof(t, j.LogProof)
	p, _ := tlogproof.Parse([]byte(j.LogProof))
	c := jwtClaims(t, j.Token)
	want := auditlog.EntryID(b.AuditLogName(), p.Index)
	if b.AuditLogName() == "" && want != strconv.FormatInt(p.Index, 10) {
		t.Fatalf("the default log's entry id of %d is %q, not the index in decimal", p.Index, want)
	}
	if c.ID != want || len(c.Tags.PrincipalTags[claims.LogIndexTag]) != 1 || c.Tags.PrincipalTags[claims.LogIndexTag][0] != c.ID || e.JTI != c.ID {
		t.Fatalf("jti %q, tag %v, entry jti %q; want %q (log %q, proof index %d)", c.ID, c.Tags.PrincipalTags, e.JTI, want, b.AuditLogName(), p.Index)
	}
	if e.JWTSHA256 != auditlog.JWTHash(j.Token) || e.Wallet != j.Wallet || e.HostAsserted || e.Kind != auditlog.KindOIDCJWT {
		t.Fatalf("entry %+v does not name the JWT", e)
	}
	return p.Index, p.Checkpoint
}

// TestConcurrentMints: 64 clients mint at once through the whole broker with
// the SQLite store (group commit on both sides): every jti is a distinct
// index, every proof verifies, the tree has exactly one entry per mint, and
// every checkpoint handed out is consistent with the last.
func TestConcurrentMints(t *testing.T) {
	const clients, each = 64, 4
	store, err := audit.OpenSQLite(filepath.Join(t.TempDir(), "audit.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	b := testbroker.Start(t, testbroker.Options{Audit: store})
	c, sess := signIn(t, b)
	var mu sync.Mutex
	var jwts []*client.JWT
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for range each {
				j, err := c.MintJWT(context.Background(), sess.Token, "", 0)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				jwts = append(jwts, j)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	var idx []int64
	seen := map[string]bool{}
	for _, j := range jwts {
		i, cp := checkMint(t, b, j)
		idx = append(idx, i)
		if !seen[string(cp)] {
			seen[string(cp)] = true
			b.CheckConsistent(t, cp)
		}
	}
	sort.Slice(idx, func(i, j int) bool { return idx[i] < idx[j] })
	for i, x := range idx {
		if x != int64(i) {
			t.Fatalf("the indexes are not 0..%d: %v", clients*each-1, idx)
		}
	}
	if n := store.LogSize(); n != clients*each {
		t.Fatalf("the log holds %d entries, want %d", n, clients*each)
	}
	b.CheckLogWhole(t)
	t.Logf("%d mints, %d checkpoints, %d commits", len(jwts), len(seen), store.Stats().Commits)
}

// TestRestartContinuity: after the enclave restarts, the host presents its
// log and the indexes go on from there; the checkpoints before the restart
// are consistent with those after.
func TestRestartContinuity(t *testing.T) {
	b := testbroker.Start(t, testbroker.Options{})
	c, sess := signIn(t, b)
	var before []byte
	for i := range 3 {
		j, err := c.MintJWT(context.Background(), sess.Token, "", 0)
		if err != nil {
			t.Fatal(err)
		}
		if n, cp := checkMint(t, b, j); n != int64(i) {
			t.Fatalf("index %d, want %d", n, i)
		} else {
			before = cp
		}
	}
	b.StopEnclave()
	b.WaitDisconnected()
	b.StartEnclave()
	b.WaitConnected()
	for i := 3; i < 6; i++ {
		j, err := c.MintJWT(context.Background(), sess.Token, "", 0)
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := checkMint(t, b, j); n != int64(i) {
			t.Fatalf("after the restart: index %d, want %d", n, i)
		}
	}
	if n := b.CheckConsistent(t, before); n != 3 {
		t.Fatalf("checkpoint before the restart is of size %d", n)
	}
}

// TestStoreFailureKeepsLogWhole: the store fails after the enclave logged a
// mint: no JWT is returned, and once the store works again the log is whole
// (the lost batch fetched back from the enclave) and minting goes on. While
// the store cannot catch up, nothing more is minted.
func TestStoreFailureKeepsLogWhole(t *testing.T) {
	b := testbroker.Start(t, testbroker.Options{})
	c, sess := signIn(t, b)
	if _, err := c.MintJWT(context.Background(), sess.Token, "", 0); err != nil {
		t.Fatal(err)
	}
	b.Memory.SetFailure(errors.New("disk full"))
	for range 2 {
		j, err := c.MintJWT(context.Background(), sess.Token, "", 0)
		var ce *client.Error
		if j != nil || !errors.As(err, &ce) || ce.Kind != "audit_error" {
			t.Fatalf("mint with the store failing: %+v %v", j, err)
		}
	}
	b.Memory.SetFailure(nil)
	j, err := c.MintJWT(context.Background(), sess.Token, "", 0)
	if err != nil {
		t.Fatalf("mint after the store recovered: %v", err)
	}
	// The first refused mint was logged by the enclave (entry 1) and is
	// fetched back; the second was refused before the enclave, since the
	// store could not catch up.
	n, _ := checkMint(t, b, j)
	if n != 2 || b.Audit.LogSize() != 3 {
		t.Fatalf("index %d, log size %d: want 2 and 3", n, b.Audit.LogSize())
	}
	entries, err := b.Audit.ReadEntries(context.Background(), 0, 3)
	if err != nil {
		t.Fatal(err)
	}
	for i, raw := range entries {
		if e, err := auditlog.Parse(raw); err != nil || e.JTI != strconv.Itoa(i) {
			t.Fatalf("entry %d: %v %+v", i, err, e)
		}
	}
	b.CheckLogWhole(t)
}
