package testbroker_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"

	"github.com/agentkeys/broker/attest"
	"github.com/agentkeys/broker/host/audit"
	"github.com/agentkeys/broker/host/client"
	"github.com/agentkeys/broker/host/pgdb/pgtest"
	"github.com/agentkeys/broker/host/revocation"
	"github.com/agentkeys/broker/internal/testbroker"
	"github.com/agentkeys/broker/shared/auditlog"
	"github.com/agentkeys/broker/shared/httpapi"
	"github.com/agentkeys/broker/shared/manifest"
	"github.com/agentkeys/broker/shared/tlogproof"
)

// frontEnd is a load balancer in front of several hosts: it sends each
// request to the host pinned with pin, or, unpinned, to each in turn.
type frontEnd struct {
	*httptest.Server
	hosts  []*httputil.ReverseProxy
	pinned atomic.Int64 // -1: round robin
	next   atomic.Uint64
}

func newFrontEnd(t *testing.T) *frontEnd {
	f := &frontEnd{}
	f.pinned.Store(-1)
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := f.pinned.Load()
		if i < 0 {
			i = int64(f.next.Add(1) % uint64(len(f.hosts)))
		}
		f.hosts[i].ServeHTTP(w, r)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *frontEnd) add(t *testing.T, hostURL string) {
	u, err := url.Parse(hostURL)
	if err != nil {
		t.Fatal(err)
	}
	f.hosts = append(f.hosts, httputil.NewSingleHostReverseProxy(u))
}

// TestTwoHostsOneDatabase: two host+enclave pairs from one image (one
// policy, one seed) behind one issuer share one PostgreSQL database, each
// keeping its own log (host-a, host-b). Both serve the same JWKS and
// manifest; a session signed in through one mints through either; mints made
// concurrently through both land in the log of the host that made them, and
// the other host serves a proof of each that verifies; both logs verify
// whole from either host, and every checkpoint handed out is consistent with
// its log's latest (no fork); a session revoked through one host is refused
// by the other.
func TestTwoHostsOneDatabase(t *testing.T) {
	ctx := context.Background()
	db := pgtest.New(t)
	front := newFrontEnd(t)
	seed := make([]byte, 32)
	rand.Read(seed)
	names := []string{"host-a", "host-b"}
	var hosts []*testbroker.Broker
	for _, name := range names {
		store, err := audit.OpenPostgres(ctx, db.DSN, name)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { store.Close() })
		revs, err := revocation.OpenPostgres(ctx, db.DSN)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { revs.Close() })
		b := testbroker.Start(t, testbroker.Options{Issuer: front.URL, Seed: seed, Audit: store, Revocations: revs, AuditLogName: name})
		front.add(t, b.URL)
		hosts = append(hosts, b)
	}

	// One image: the same keys and manifest from both hosts.
	for _, path := range []string{httpapi.PathJWKS, httpapi.PathManifest} {
		_, a := httpGet(t, hosts[0].URL+path)
		_, b := httpGet(t, hosts[1].URL+path)
		if len(a) == 0 || !bytes.Equal(a, b) {
			t.Fatalf("%s differs between the hosts:\n%s\n%s", path, a, b)
		}
	}
	_, mb := httpGet(t, hosts[0].URL+httpapi.PathManifest)
	m, err := manifest.Parse(mb)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]string{} // log name → its verifier key
	for _, name := range names {
		if keys[name], err = auditlog.LogVerifierKey(m.CheckpointVerifierKey, name); err != nil {
			t.Fatal(err)
		}
	}

	// Sign-in is sticky (the nonce is the enclave's that issued it): one
	// session through each host.
	var sessions []*client.Session
	c, err := client.New(front.URL)
	if err != nil {
		t.Fatal(err)
	}
	for i := range hosts {
		front.pinned.Store(int64(i))
		key, _ := secp256k1.GeneratePrivateKey()
		s, err := c.SignIn(ctx, key, client.SignInOptions{})
		if err != nil {
			t.Fatalf("sign in through %s: %v", names[i], err)
		}
		sessions = append(sessions, s)
	}

	// Concurrent mints through both hosts, each session through either.
	front.pinned.Store(-1)
	const workers, each = 8, 12
	var (
		mu   sync.Mutex
		jwts []*client.JWT
		wg   sync.WaitGroup
		errs = make(chan error, workers)
	)
	for w := range workers {
		wg.Go(func() {
			s := sessions[w%len(sessions)]
			for range each {
				j, err := c.MintJWT(ctx, s.Token, "", 0)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				jwts = append(jwts, j)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("mint through the front end: %v", err)
	}

	// Each JWT is in the log of the host that minted it, and the other host
	// serves a proof of it.
	perLog := map[string]int{}
	last := map[string][]byte{}
	jtis := map[string]bool{} // RFC 7519 §4.1.7: one issuer's jtis never collide
	for _, j := range jwts {
		p, err := tlogproof.Parse([]byte(j.LogProof))
		if err != nil {
			t.Fatal(err)
		}
		origin, _, _ := strings.Cut(string(p.Checkpoint), "\n")
		owner := -1
		for i, name := range names {
			if origin == strings.TrimPrefix(front.URL, "http://")+"/audit/"+name {
				owner = i
			}
		}
		if owner < 0 {
			t.Fatalf("a proof under the checkpoint of %q, not of either host's log", origin)
		}
		name, other := names[owner], hosts[1-owner]
		// jti = tag = entry jti = NAME/INDEX, and no other JWT of the
		// issuer (from either host) has it.
		if n, _ := checkMint(t, hosts[owner], j); n != p.Index {
			t.Fatalf("checkMint gave index %d, the proof %d", n, p.Index)
		}
		jti := jwtClaims(t, j.Token).ID
		if jti != name+"/"+strconv.FormatInt(p.Index, 10) {
			t.Fatalf("%s's JWT has jti %q, want %s/%d", name, jti, name, p.Index)
		}
		if jtis[jti] {
			t.Fatalf("two JWTs of the issuer have jti %q", jti)
		}
		jtis[jti] = true
		perLog[name]++
		last[name] = p.Checkpoint
		hosts[owner].CheckConsistent(t, p.Checkpoint)

		log := logAt(t, other.URL+httpapi.AuditLogPath(name))
		opts := attest.AuditOptions{Key: keys[name], JWT: j.Token}
		if r := attest.VerifyAuditProofFromLog(ctx, []byte(j.LogProof), log, opts); !r.OK() {
			t.Fatalf("the mint's proof, with the entry %s serves: %+v", names[1-owner], r.Checks)
		}
		status, served := httpGet(t, other.URL+httpapi.AuditLogPath(name)+"proof/"+strconv.FormatInt(p.Index, 10))
		if status != http.StatusOK {
			t.Fatalf("%s serves no proof of %s's entry %d: %d %s", names[1-owner], name, p.Index, status, served)
		}
		if r := attest.VerifyAuditProofFromLog(ctx, served, log, opts); !r.OK() {
			t.Fatalf("the proof %s serves of %s's entry %d: %+v", names[1-owner], name, p.Index, r.Checks)
		}
	}
	if perLog[names[0]] == 0 || perLog[names[1]] == 0 {
		t.Fatalf("the front end did not spread the mints: %v", perLog)
	}
	t.Logf("mints per log: %v", perLog)

	// Both logs verify whole, read from either host, and each is one history.
	for _, name := range names {
		for i, h := range hosts {
			res := attest.VerifyAuditLog(ctx, logAt(t, h.URL+httpapi.AuditLogPath(name)), attest.AuditOptions{Key: keys[name], Since: last[name]})
			if !res.OK() {
				t.Fatalf("log %s read from %s: %+v", name, names[i], res.Checks)
			}
			if res.Tree.N < int64(perLog[name]) {
				t.Fatalf("log %s has %d entries, %d mints went to it", name, res.Tree.N, perLog[name])
			}
		}
		if res := attest.VerifyAuditLog(ctx, logAt(t, hosts[0].URL+httpapi.AuditLogPath(name)), attest.AuditOptions{Key: keys[names[0]]}); name != names[0] && res.OK() {
			t.Fatalf("log %s verified with %s's key", name, names[0])
		}
	}
	for _, h := range hosts {
		h.CheckLogWhole(t)
	}
	// verify --jwt refuses a JWT of one host's log against the other's,
	// naming both logs (the jti says which log it is of).
	for _, j := range jwts[:1] {
		p, _ := tlogproof.Parse([]byte(j.LogProof))
		name, _, _ := auditlog.ParseEntryID(jwtClaims(t, j.Token).ID)
		otherName := names[0]
		if name == names[0] {
			otherName = names[1]
		}
		res := attest.VerifyAuditLog(ctx, logAt(t, hosts[0].URL+httpapi.AuditLogPath(otherName)), attest.AuditOptions{ManifestKey: m.CheckpointVerifierKey, JWT: j.Token})
		f := res.FirstFailure()
		if f == nil || f.Name != "jwt log" || !strings.Contains(f.Detail, fmt.Sprintf("names entry %d of the log %q, but the log verified is the log %q", p.Index, name, otherName)) {
			t.Fatalf("%s's JWT verified against %s's log: %+v", name, otherName, res.Checks)
		}
	}

	// A session revoked through one host is refused by the other.
	front.pinned.Store(1)
	if err := c.Revoke(ctx, sessions[0].Token); err != nil {
		t.Fatal(err)
	}
	front.pinned.Store(0)
	_, err = c.MintJWT(ctx, sessions[0].Token, "", 0)
	var ae *client.Error
	if !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized || !strings.Contains(ae.Message, "revoked") {
		t.Fatalf("mint with a session revoked through the other host: %v", err)
	}
}

// logAt reads the log at base (a tlog-tiles prefix) over HTTP.
func logAt(t *testing.T, base string) attest.AuditLog {
	t.Helper()
	log, err := attest.NewHTTPAuditLog(base, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	return log
}
