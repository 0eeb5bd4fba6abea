package api_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"html"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"filippo.io/torchwood"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/agentkeys/broker/host/api"
	"github.com/agentkeys/broker/host/audit"
	"github.com/agentkeys/broker/host/metrics"
	"github.com/agentkeys/broker/host/ratelimit"
	"github.com/agentkeys/broker/host/revocation"
	"github.com/agentkeys/broker/host/witness"
	"github.com/agentkeys/broker/internal/testbroker"
	"github.com/agentkeys/broker/shared/auditlog"
	"github.com/agentkeys/broker/shared/jwk"
	"github.com/agentkeys/broker/shared/protocol"
)

// pageEnclave is an enclave client reduced to an Info snapshot and a
// connection state. Every call fails: the page must need none.
type pageEnclave struct {
	info      *protocol.InfoResponse
	connected bool
	calls     atomic.Int64
}

func (e *pageEnclave) Call(context.Context, protocol.Op, any, any) error {
	e.calls.Add(1)
	return protocol.Errorf(protocol.CodeUnavailable, "no enclave in this test")
}
func (e *pageEnclave) Info() (*protocol.InfoResponse, bool) { return e.info, e.info != nil }
func (e *pageEnclave) Connected() bool                      { return e.connected }
func (e *pageEnclave) ClockOffset() (time.Duration, bool)   { return 0, false }

// pageWitnesses serves a fixed cosigned checkpoint.
type pageWitnesses struct {
	checkpoint []byte
	status     []witness.Status
}

func (w *pageWitnesses) Checkpoint(context.Context) ([]byte, error) { return w.checkpoint, nil }
func (w *pageWitnesses) Notify()                                    {}
func (w *pageWitnesses) Status() []witness.Status                   { return w.status }

// realInfo is the Info snapshot of a real (simulated) enclave.
func realInfo(t *testing.T) (protocol.InfoResponse, string) {
	t.Helper()
	b := testbroker.Start(t, testbroker.Options{})
	info, ok := b.Enclave.Info()
	if !ok {
		t.Fatal("no Info")
	}
	return *info, b.URL
}

// signedCheckpoint is a checkpoint of size n signed by the log's key (from
// info) and cosigned by a witness, plus a signature by a key nobody named.
func signedCheckpoint(t *testing.T, logSigner note.Signer, n int64) ([]byte, witness.Status) {
	t.Helper()
	_, wpriv, _ := ed25519.GenerateKey(rand.Reader)
	cs, err := torchwood.NewCosignatureSigner("witness.example/w1", wpriv)
	if err != nil {
		t.Fatal(err)
	}
	skey, _, err := note.GenerateKey(rand.Reader, "stranger.example")
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	text := auditlog.Checkpoint{Origin: logSigner.Name(), Tree: tlog.Tree{N: n, Hash: tlog.Hash{1, 2, 3}}}.Format()
	msg, err := note.Sign(&note.Note{Text: text}, logSigner, cs, stranger)
	if err != nil {
		t.Fatal(err)
	}
	return msg, witness.Status{Name: cs.Name(), URL: "https://witness.example", VerifierKey: cs.Verifier().String(), CosignedSize: n}
}

func TestPage(t *testing.T) {
	info, issuer := realInfo(t)
	skey, vkey, err := note.GenerateKey(rand.Reader, "log.example/audit")
	if err != nil {
		t.Fatal(err)
	}
	logSigner, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	info.CheckpointVerifierKey = vkey
	cp, ws := signedCheckpoint(t, logSigner, 7)

	hostile := info
	hostile.IssuerKeys = []jwk.Key{{Kty: "EC", Crv: "P-256", Kid: `<script>alert("kid")</script>`, Alg: `"><img src=x onerror=alert(1)>`}}
	hostile.SigningKid = hostile.IssuerKeys[0].Kid
	hostile.Mode = "<b>nitro</b>"
	hostile.PolicyDigest = `'; DROP TABLE x; --`
	mismatched := info
	mismatched.Policy.Issuer = "https://other.example"

	kid := info.IssuerKeys[0].Kid
	tests := []struct {
		name      string
		info      *protocol.InfoResponse
		connected bool
		witnesses *pageWitnesses
		want      []string // in the page's text (entities decoded)
		wantRaw   []string // in the page's bytes
		wantNot   []string // not in the page's bytes
	}{
		{
			name: "before the enclave was reached", info: nil,
			want:    []string{`data-state="unreached"`, "has not reached the enclave", "the log is empty", "<td colspan=\"4\" class=\"muted\">none known"},
			wantNot: []string{`class="key"`, `class="pcr"`},
		},
		{
			name: "a snapshot", info: &info, connected: true,
			want: []string{
				`data-state="connected"`, `id="issuer">` + issuer + `<`, `id="mode">simulated<`, `id="issuer-origin">host<`,
				`id="policy-digest">` + info.PolicyDigest + `<`, `data-kid="` + kid + `"`, `data-label="oidc/issuer/v1" data-signs="true"`,
				`class="pcr" data-index="0"`, `id="verifier-key">` + vkey + `<`, "Simulated mode",
				`agentkeys-attest verify --issuer ` + issuer + ` --root simulated-root.pem`,
				`agentkeys-attest audit verify --log ` + issuer + ` --key ` + vkey + ` --since`,
			},
			wantNot: []string{"--api-url", `id="mismatch"`, `id="manifest-problem"`},
		},
		{
			name: "cosigned checkpoint", info: &info, connected: true, witnesses: &pageWitnesses{checkpoint: cp, status: []witness.Status{ws}},
			want: []string{
				`id="checkpoint-size" data-value="7"`, `id="checkpoint-origin">log.example/audit<`,
				`data-name="log.example/audit" data-key-id="`, `data-role="log"`,
				`data-name="witness.example/w1"`, `data-role="witness"`,
				`data-name="stranger.example"`, `data-role="unknown"`,
				`--witness ` + ws.VerifierKey + ` --since`, `data-verifier-key="` + ws.VerifierKey + `"`,
			},
		},
		{
			name: "disconnected", info: &info, connected: false,
			want: []string{`data-state="disconnected"`, "last snapshot", `data-kid="` + kid + `"`},
		},
		{
			name: "issuer mismatch", info: &mismatched, connected: true,
			want: []string{`id="mismatch"`, "https://other.example"},
		},
		{
			name: "hostile snapshot", info: &hostile, connected: true,
			wantRaw: []string{
				`&lt;script&gt;alert(&#34;kid&#34;)&lt;/script&gt;`, `&#34;&gt;&lt;img src=x onerror=alert(1)&gt;`,
				`&lt;b&gt;nitro&lt;/b&gt;`, `&#39;; DROP TABLE x; --`,
			},
			wantNot: []string{"<script", "<img", "<b>nitro"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			enc := &pageEnclave{info: tt.info, connected: tt.connected}
			m := metrics.New(enc)
			cfg := api.Config{Issuer: issuer, Enclave: enc, Audit: audit.NewMemory(), Revocations: revocation.NewMemory(), Metrics: m}
			if tt.witnesses != nil {
				cfg.Witnesses = tt.witnesses
			}
			a, err := api.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			m.Minted(audit.KindOIDCJWT)
			m.Minted(audit.KindAWSCreds)
			w := httptest.NewRecorder()
			a.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/", nil))
			body := w.Body.String()
			if w.Code != http.StatusOK {
				t.Fatalf("status %d: %s", w.Code, body)
			}
			checkPageHeaders(t, w.Header())
			if w.Header().Get("Content-Length") != strconv.Itoa(len(body)) {
				t.Errorf("Content-Length %q for %d bytes", w.Header().Get("Content-Length"), len(body))
			}
			text := html.UnescapeString(body)
			for _, s := range append(tt.want, `id="mints-per-minute" data-value="2"`, `id="log-size" data-value="0"`) {
				if !strings.Contains(text, s) {
					t.Errorf("page lacks %q", s)
				}
			}
			for _, s := range tt.wantRaw {
				if !strings.Contains(body, s) {
					t.Errorf("page lacks %q", s)
				}
			}
			for _, s := range tt.wantNot {
				if strings.Contains(body, s) {
					t.Errorf("page has %q", s)
				}
			}
			if strings.Contains(strings.ToLower(body), "<script") {
				t.Error("page has a script element")
			}
			if n := enc.calls.Load(); n != 0 {
				t.Errorf("the page made %d enclave calls", n)
			}
			if t.Failed() {
				t.Logf("page:\n%s", body)
			}
		})
	}
}

func checkPageHeaders(t *testing.T, h http.Header) {
	t.Helper()
	want := map[string]string{
		"Content-Type":           "text/html; charset=utf-8",
		"X-Content-Type-Options": "nosniff",
		"Cache-Control":          "no-cache",
		"Referrer-Policy":        "no-referrer",
	}
	for k, v := range want {
		if got := h.Get(k); got != v {
			t.Errorf("%s: %q, want %q", k, got, v)
		}
	}
	csp := h.Get("Content-Security-Policy")
	for _, d := range []string{"default-src 'none'", "style-src 'unsafe-inline'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, d) {
			t.Errorf("Content-Security-Policy %q lacks %q", csp, d)
		}
	}
	if strings.Contains(csp, "script-src") {
		t.Errorf("Content-Security-Policy %q allows scripts", csp)
	}
}

// TestPageRoutes: HEAD is GET without the body; only "/" is the page, other
// unknown paths stay 404 and other methods 405; the per-client limit answers
// 429 to one client and not to another.
func TestPageRoutes(t *testing.T) {
	info, issuer := realInfo(t)
	enc := &pageEnclave{info: &info, connected: true}
	a, err := api.New(api.Config{Issuer: issuer, Enclave: enc, Audit: audit.NewMemory(), Revocations: revocation.NewMemory(),
		PageLimit: ratelimit.New(0.001, 3, 100)})
	if err != nil {
		t.Fatal(err)
	}
	do := func(method, path, client string) *httptest.ResponseRecorder {
		t.Helper()
		r := httptest.NewRequest(method, path, nil)
		r.RemoteAddr = client + ":1234"
		w := httptest.NewRecorder()
		a.ServeHTTP(w, r)
		return w
	}
	get := do(http.MethodGet, "/", "192.0.2.1")
	head := do(http.MethodHead, "/", "192.0.2.1")
	if get.Code != 200 || head.Code != 200 || head.Body.Len() != 0 || head.Header().Get("Content-Length") != strconv.Itoa(get.Body.Len()) {
		t.Fatalf("GET %d (%d bytes), HEAD %d (%d bytes, Content-Length %q)", get.Code, get.Body.Len(), head.Code, head.Body.Len(), head.Header().Get("Content-Length"))
	}
	checkPageHeaders(t, head.Header())

	tests := []struct {
		method, path string
		status       int
		kind         string
	}{
		{http.MethodGet, "/index.html", 404, "not_found"},
		{http.MethodGet, "/nope/", 404, "not_found"},
		{http.MethodPost, "/", 405, "method_not_allowed"},
	}
	for _, tt := range tests {
		w := do(tt.method, tt.path, "192.0.2.50")
		if w.Code != tt.status || !strings.Contains(w.Body.String(), `"error":"`+tt.kind+`"`) {
			t.Errorf("%s %s: %d %s, want %d %s", tt.method, tt.path, w.Code, w.Body, tt.status, tt.kind)
		}
	}

	// The burst is 3: GET and HEAD took two.
	if w := do(http.MethodGet, "/", "192.0.2.1"); w.Code != 200 {
		t.Fatalf("third load: %d", w.Code)
	}
	w := do(http.MethodGet, "/", "192.0.2.1")
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") == "" || !strings.Contains(w.Body.String(), "rate_limited") {
		t.Fatalf("fourth load: %d %v %s", w.Code, w.Header(), w.Body)
	}
	if w := do(http.MethodGet, "/", "192.0.2.2"); w.Code != 200 {
		t.Fatalf("another client: %d", w.Code)
	}
	if n := enc.calls.Load(); n != 0 {
		t.Errorf("the page made %d enclave calls", n)
	}
}
