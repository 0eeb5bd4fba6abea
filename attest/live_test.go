package attest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/agentkeys/broker/internal/testbroker"
	"github.com/agentkeys/broker/shared/auditlog"
	"github.com/agentkeys/broker/shared/httpapi"
	"github.com/agentkeys/broker/shared/jwk"
)

// hostile is a host in front of a real broker that misbehaves as a compromised
// host could: it adds a key of its own to the JWKS, or replays an old
// attestation response. It sits in the verifier's HTTP client, so the issuer
// URL stays the broker's.
type hostile struct {
	addKey   bool
	replay   bool
	auditKey string // served as the audit log's verifier key
	mu       sync.Mutex
	recorded []byte
}

func (h *hostile) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	switch {
	case req.URL.Path == "/.well-known/jwks.json" && h.addKey:
		var set jwk.Set
		if err := json.Unmarshal(body, &set); err != nil {
			return nil, err
		}
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		k, _ := jwk.FromP256(&key.PublicKey)
		set.Keys = append(set.Keys, k)
		body, _ = json.Marshal(set)
	case req.URL.Path == httpapi.PathAuditVerifierKey && h.auditKey != "":
		body = []byte(h.auditKey + "\n")
	case req.URL.Path == "/.well-known/attestation" && h.replay:
		h.mu.Lock()
		if h.recorded == nil {
			h.recorded = bytes.Clone(body)
		}
		body = h.recorded
		h.mu.Unlock()
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Del("Content-Length")
	return resp, nil
}

func liveOpts(b *testbroker.Broker) DocumentOptions {
	roots := b.Attester.RootPool()
	return DocumentOptions{Roots: roots, MaxAge: 5 * time.Minute, MaxSkew: time.Minute}
}

func TestVerifyLive(t *testing.T) {
	b := testbroker.Start(t, testbroker.Options{})
	r := VerifyLive(context.Background(), b.URL, liveOpts(b), LiveOptions{})
	if !r.OK() {
		t.Fatalf("a live simulated broker fails: %+v", r.FirstFailure())
	}
	if c := r.Find("nonce"); c == nil || c.Status != StatusPass {
		t.Errorf("nonce: %+v", c)
	}
	if c := r.Find("audit key"); c == nil || c.Status != StatusPass || !strings.Contains(c.Detail, "the default log") {
		t.Errorf("audit key: %+v", c)
	}
	// A trailing slash on --issuer is the same issuer; another URL for the
	// same server is not.
	other := strings.Replace(b.URL, "127.0.0.1", "localhost", 1)
	ro := VerifyLive(context.Background(), other, liveOpts(b), LiveOptions{})
	if fc := ro.FirstFailure(); fc == nil || fc.Name != "issuer" || !strings.Contains(fc.Detail, "the --issuer names issuer") {
		t.Errorf("via localhost: %+v", fc)
	}
	if r := VerifyLive(context.Background(), b.URL+"/", liveOpts(b), LiveOptions{}); !r.OK() {
		t.Errorf("with a trailing slash: %+v", r.FirstFailure())
	}
}

func TestVerifyLiveHostile(t *testing.T) {
	b := testbroker.Start(t, testbroker.Options{})
	tests := []struct {
		name          string
		h             *hostile
		runs          int
		check, reason string
	}{
		{"host adds a key to the JWKS", &hostile{addKey: true}, 1, "jwks", "does not list"},
		{"host replays an attestation", &hostile{replay: true}, 2, "nonce", "not the nonce sent"},
		{"host serves its own audit key", &hostile{auditKey: otherAuditKey(t, b, "")}, 1, "audit key", "not a key of the attested enclave"},
		{"host serves its own key under a named log's name", &hostile{auditKey: otherAuditKey(t, b, "host-a")}, 1, "audit key", "not a key of the attested enclave"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r Report
			for range tt.runs {
				r = VerifyLive(context.Background(), b.URL, liveOpts(b), LiveOptions{Client: &http.Client{Transport: tt.h, Timeout: time.Minute}})
			}
			fc := r.FirstFailure()
			if fc == nil || fc.Name != tt.check || !strings.Contains(fc.Detail, tt.reason) {
				t.Fatalf("first failure %+v, want %s containing %q", fc, tt.check, tt.reason)
			}
		})
	}
}

func TestVerifyLiveBounded(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"issuer":"`+strings.Repeat("x", 4096)+`"}`)
	}))
	defer srv.Close()
	r := VerifyLive(context.Background(), srv.URL, DocumentOptions{}, LiveOptions{MaxBody: 1024})
	if fc := r.FirstFailure(); fc == nil || fc.Name != "discovery" || !strings.Contains(fc.Detail, "more than 1024 bytes") {
		t.Fatalf("%+v", fc)
	}
}

// otherAuditKey is a verifier key of another key under the name of b's log
// named name.
func otherAuditKey(t *testing.T, b *testbroker.Broker, name string) string {
	t.Helper()
	info, _ := b.Enclave.Info()
	v, err := note.NewVerifier(info.CheckpointVerifierKey)
	if err != nil {
		t.Fatal(err)
	}
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	vkey, err := note.NewEd25519VerifierKey(auditlog.LogOrigin(v.Name(), name), pub)
	if err != nil {
		t.Fatal(err)
	}
	return vkey
}

// TestVerifyLiveNamedLog: a host keeping a named log serves that log's key,
// which verify binds to the manifest.
func TestVerifyLiveNamedLog(t *testing.T) {
	b := testbroker.Start(t, testbroker.Options{AuditLogName: "host-a"})
	r := VerifyLive(context.Background(), b.URL, liveOpts(b), LiveOptions{})
	if !r.OK() {
		t.Fatalf("a broker keeping a named log fails: %+v", r.FirstFailure())
	}
	if c := r.Find("audit key"); c == nil || c.Status != StatusPass || !strings.Contains(c.Detail, `the log "host-a"`) {
		t.Errorf("audit key: %+v", c)
	}
}
