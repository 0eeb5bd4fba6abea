package api_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/hf/nitrite"

	"github.com/agentkeys/broker/host/witness"
	"github.com/agentkeys/broker/internal/testbroker"
	"github.com/agentkeys/broker/internal/witnesstest"
	"github.com/agentkeys/broker/shared/auditlog"
	"github.com/agentkeys/broker/shared/httpapi"
	"github.com/agentkeys/broker/shared/jwk"
	"github.com/agentkeys/broker/shared/manifest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	witnesstest.Cleanup() // the litewitness binaries TestPageInChromium built
	os.Exit(code)
}

// browserTimeout bounds everything the browser test does with Chromium.
const browserTimeout = 90 * time.Second

// chromium finds a Chromium or Chrome binary, skipping the test without one
// unless CI is set.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no chromium, chromium-browser or google-chrome on PATH (CI is set; .ci/run installs the Debian chromium package)")
	}
	t.Skip("no chromium, chromium-browser or google-chrome on PATH")
	return ""
}

// shownPage is what the page shows, read from the browser's DOM.
type shownPage struct {
	Scripts        int    `json:"scripts"`
	Issuer         string `json:"issuer"`
	Mode           string `json:"mode"`
	IssuerOrigin   string `json:"issuerOrigin"`
	PolicyDigest   string `json:"policyDigest"`
	ManifestSHA256 string `json:"manifestSHA256"`
	VerifierKey    string `json:"verifierKey"`
	LogSize        string `json:"logSize"`
	Mints          string `json:"mints"`
	State          string `json:"state"`
	Note           string `json:"note"`
	CPOrigin       string `json:"cpOrigin"`
	CPSize         string `json:"cpSize"`
	CPRoot         string `json:"cpRoot"`
	AuditCommand   string `json:"auditCommand"`
	Keys           []struct {
		Kid, Alg, Label, Signs string
	} `json:"keys"`
	PCRs []struct {
		Index, Value string
	} `json:"pcrs"`
	Signatures []struct {
		Name, Role string
	} `json:"signatures"`
	Witnesses []struct {
		Name, VerifierKey string
	} `json:"witnesses"`
}

// readPage collects the shown values: the text of the cells a person reads.
const readPage = `(() => {
	const text = id => { const e = document.getElementById(id); return e ? e.textContent : null; };
	const rows = (sel, f) => Array.from(document.querySelectorAll(sel)).map(f);
	const cell = (e, i) => e.querySelectorAll('td')[i].textContent;
	return {
		scripts: document.scripts.length,
		issuer: text('issuer'), mode: text('mode'), issuerOrigin: text('issuer-origin'),
		policyDigest: text('policy-digest'), manifestSHA256: text('manifest-sha256'), verifierKey: text('verifier-key'),
		logSize: document.getElementById('log-size').dataset.value, mints: document.getElementById('mints-per-minute').dataset.value,
		state: document.getElementById('enclave-state').dataset.state,
		note: text('checkpoint-note'), cpOrigin: text('checkpoint-origin'), cpSize: text('checkpoint-size'), cpRoot: text('checkpoint-root'),
		auditCommand: text('cmd-audit'),
		keys: rows('tr.key', e => ({Kid: cell(e, 0), Alg: cell(e, 1), Label: cell(e, 2), Signs: e.dataset.signs})),
		pcrs: rows('tr.pcr', e => ({Index: cell(e, 0), Value: cell(e, 1)})),
		signatures: rows('tr.signature', e => ({Name: cell(e, 0), Role: e.dataset.role})),
		witnesses: rows('tr.witness', e => ({Name: cell(e, 0), VerifierKey: cell(e, 1)})),
	};
})()`

// TestPageInChromium loads the transparency page of an in-process broker
// with a real witness in headless Chromium, and checks what it shows against
// the JSON endpoints: the JWKS, the manifest, a fresh attestation document's
// PCRs, and the cosigned checkpoint; and the log size and minting rate after
// three mints. It saves a screenshot in the test's temporary directory.
func TestPageInChromium(t *testing.T) {
	browser := chromium(t)
	var wit *witnesstest.Witness
	b := testbroker.Start(t, testbroker.Options{
		Witnesses: func(origin, vkey string) []witness.Witness {
			wit = witnesstest.Start(t, "witness.example/page", origin, vkey)
			return []witness.Witness{{URL: wit.URL, VerifierKey: wit.VerifierKey}}
		},
	})

	ctx, cancel := context.WithTimeout(context.Background(), browserTimeout)
	defer cancel()
	// CI runs as root, where Chromium's sandbox cannot start.
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser), chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1100, 900))
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc() // stops the browser and waits for its process
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	if err := chromedp.Do(bctx); err != nil { // start the browser before minting
		t.Fatalf("failed to start %s: %v", browser, err)
	}

	tok, _ := signIn(t, b)
	firstMint := time.Now()
	for i := range 3 {
		if r := mint(t, b, "Bearer "+tok, ""); r.status != 200 {
			t.Fatalf("mint %d: %d %s", i, r.status, r.body)
		}
	}
	size := b.Audit.LogSize()
	for deadline := time.Now().Add(browserTimeout); ; {
		if st := b.Witnesses.Status(); st[0].CosignedSize == size {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the witness did not cosign size %d: %+v", size, b.Witnesses.Status())
		}
		b.Witnesses.Notify()
		time.Sleep(20 * time.Millisecond)
	}

	if err := chromedp.Do(bctx, chromedp.Navigate(b.URL+"/"), chromedp.WaitReady(chromedp.ID("cmd-audit"))); err != nil {
		t.Fatalf("loading the page in Chromium: %v", err)
	}
	shown, err := chromedp.Run(bctx, chromedp.Evaluate[shownPage](readPage))
	if err != nil {
		t.Fatalf("reading the page in Chromium: %v", err)
	}
	shot, err := chromedp.Run(bctx, chromedp.FullScreenshot(100)) // 100: PNG
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	png := filepath.Join(t.TempDir(), "page.png")
	if err := os.WriteFile(png, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(shot, []byte("\x89PNG\r\n\x1a\n")) {
		t.Errorf("the screenshot is not a PNG")
	}
	t.Logf("screenshot: %s (%d bytes)", png, len(shot))

	// What the JSON endpoints say.
	var set jwk.Set
	if r := do(t, "GET", b.URL+httpapi.PathJWKS, nil, nil); r.status != 200 || json.Unmarshal(r.body, &set) != nil {
		t.Fatalf("jwks: %d %s", r.status, r.body)
	}
	mr := do(t, "GET", b.URL+httpapi.PathManifest, nil, nil)
	m, err := manifest.Parse(mr.body)
	if mr.status != 200 || err != nil {
		t.Fatalf("manifest: %d %v", mr.status, err)
	}
	nonce := make([]byte, 16)
	rand.Read(nonce)
	var att httpapi.Attestation
	if r := do(t, "GET", b.URL+httpapi.PathAttestation+"?format=json&nonce="+hex.EncodeToString(nonce), nil, nil); r.status != 200 || json.Unmarshal(r.body, &att) != nil {
		t.Fatalf("attestation: %d %s", r.status, r.body)
	}
	doc, err := nitrite.Verify(att.Document, nitrite.VerifyOptions{Roots: b.Attester.RootPool()})
	if err != nil {
		t.Fatalf("attestation document: %v", err)
	}
	cpr := do(t, "GET", b.URL+"/v1/audit/checkpoint", nil, nil)
	if cpr.status != 200 {
		t.Fatalf("checkpoint: %d %s", cpr.status, cpr.body)
	}
	text, sigs, _ := strings.Cut(string(cpr.body), "\n\n")
	cp, err := auditlog.ParseCheckpoint(text + "\n")
	if err != nil {
		t.Fatalf("checkpoint %q: %v", cpr.body, err)
	}

	// The page against them.
	sum := sha256.Sum256(mr.body)
	for _, c := range []struct{ what, shown, want string }{
		{"enclave state", shown.State, "connected"},
		{"issuer", shown.Issuer, m.Issuer},
		{"mode", shown.Mode, m.Mode},
		{"issuer origin", shown.IssuerOrigin, m.IssuerOrigin},
		{"policy digest", shown.PolicyDigest, m.PolicyDigest},
		{"manifest sha256", shown.ManifestSHA256, hex.EncodeToString(sum[:])},
		{"verifier key", shown.VerifierKey, m.CheckpointVerifierKey},
		{"checkpoint note", shown.Note, string(cpr.body)},
		{"checkpoint origin", shown.CPOrigin, cp.Origin},
		{"checkpoint size", shown.CPSize, strconv.FormatInt(cp.Tree.N, 10)},
		{"checkpoint root", shown.CPRoot, cp.Tree.Hash.String()},
		{"log size", shown.LogSize, strconv.FormatInt(size, 10)},
	} {
		if c.shown != c.want {
			t.Errorf("%s: the page shows %q, the JSON says %q", c.what, c.shown, c.want)
		}
	}
	if shown.Scripts != 0 {
		t.Errorf("the page has %d scripts", shown.Scripts)
	}
	if cp.Tree.N != size || size < 3 {
		t.Errorf("checkpoint size %d, log size %d, after 3 mints", cp.Tree.N, size)
	}
	mints, _ := strconv.Atoi(shown.Mints)
	if time.Since(firstMint) < 50*time.Second && mints != 3 || mints > 3 {
		t.Errorf("mints per minute: %q, want 3", shown.Mints)
	}

	var keys []string
	for _, k := range shown.Keys {
		keys = append(keys, k.Kid+" "+k.Alg+" "+k.Label+" "+k.Signs)
	}
	var want []string
	for _, k := range set.Keys {
		i := slices.IndexFunc(m.IssuerKeys, func(mk manifest.IssuerKey) bool { return mk.Kid == k.Kid })
		if i < 0 {
			t.Fatalf("JWKS key %s is not in the manifest", k.Kid)
		}
		want = append(want, k.Kid+" "+k.Alg+" "+m.IssuerKeys[i].Label+" "+strconv.FormatBool(m.IssuerKeys[i].Signs))
	}
	if !slices.Equal(keys, want) || len(keys) == 0 {
		t.Errorf("keys: the page shows %q, the JWKS and manifest say %q", keys, want)
	}

	var pcrs []string
	for _, p := range shown.PCRs {
		pcrs = append(pcrs, p.Index+"="+p.Value)
	}
	var wantPCRs []string
	for i := range uint(len(doc.Document.PCRs)) {
		v, ok := doc.Document.PCRs[i]
		if !ok {
			t.Fatalf("the document has no PCR%d: %v", i, doc.Document.PCRs)
		}
		wantPCRs = append(wantPCRs, strconv.Itoa(int(i))+"="+hex.EncodeToString(v))
	}
	if !slices.Equal(pcrs, wantPCRs) || len(pcrs) == 0 {
		t.Errorf("PCRs: the page shows %q, the attestation document %q", pcrs, wantPCRs)
	}

	var shownSigs, wantSigs []string
	for _, s := range shown.Signatures {
		shownSigs = append(shownSigs, s.Name+" "+s.Role)
	}
	logName, _, _ := strings.Cut(m.CheckpointVerifierKey, "+")
	for line := range strings.Lines(sigs) {
		name, _, _ := strings.Cut(strings.TrimPrefix(line, "— "), " ")
		role := map[string]string{logName: "log", wit.Name: "witness"}[name]
		wantSigs = append(wantSigs, name+" "+role)
	}
	if !slices.Equal(shownSigs, wantSigs) || !slices.Contains(wantSigs, wit.Name+" witness") {
		t.Errorf("signatures: the page shows %q, the checkpoint has %q", shownSigs, wantSigs)
	}
	if len(shown.Witnesses) != 1 || shown.Witnesses[0].Name != wit.Name || shown.Witnesses[0].VerifierKey != wit.VerifierKey {
		t.Errorf("witnesses: the page shows %+v, want %s %s", shown.Witnesses, wit.Name, wit.VerifierKey)
	}
	if !strings.Contains(shown.AuditCommand, "--key "+m.CheckpointVerifierKey+" --witness "+wit.VerifierKey) {
		t.Errorf("audit command: %q", shown.AuditCommand)
	}
}
