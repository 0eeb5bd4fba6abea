package api

import (
	"bytes"
	"context"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/agentkeys/broker/shared/auditlog"
	"github.com/agentkeys/broker/shared/httpapi"
	"github.com/agentkeys/broker/shared/manifest"
	"github.com/agentkeys/broker/shared/protocol"
	"github.com/agentkeys/broker/shared/tlogproof"
)

// The transparency page: GET / on the API origin, a small HTML page that
// shows what the host publishes (the issuer, the mode, the keys, the PCRs,
// the latest checkpoint and its cosignatures, the log's size and the
// minting rate), links to the JSON each value comes from, and names the
// agentkeys-attest command that checks it.
//
// Everything on it is the host's word: the host is untrusted, and the page
// proves nothing. It is there so that a person sees at a glance what the
// host claims, and how to check the claim without trusting the host.
//
// It costs no enclave call: the snapshot part is derived once per enclave
// Info snapshot (with the JWKS, in derive), and the rest is read from
// memory (the store's tip, the witnesses' cosignatures, a counter). It is
// rate-limited per client ([Config.PageLimit]). It is 200 whenever it
// renders, the enclave reached or not (the page says which): it is for
// people; monitors read /readyz.

//go:embed templates/page.html
var pageFS embed.FS

var pageTemplate = template.Must(template.New("page.html").Funcs(template.FuncMap{"sh": shellWord}).ParseFS(pageFS, "templates/page.html"))

// shellWord quotes s for a POSIX shell unless it is plainly one word: the
// commands on the page carry values the host chose, and copying one must not
// run anything else.
func shellWord(s string) string {
	plain := s != ""
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("+/=:._-@,%", c)) {
			plain = false
			break
		}
	}
	if plain {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// pageSecurityHeaders are sent with the page: no script, no frame, no
// request of any kind except its own inline style.
var pageSecurityHeaders = map[string]string{
	"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
	"X-Content-Type-Options":  "nosniff",
	"Cache-Control":           "no-cache",
	"Referrer-Policy":         "no-referrer",
	"X-Frame-Options":         "DENY",
}

// pageWait bounds the reads a page load makes (memory and the store's tip).
const pageWait = 2 * time.Second

// pageSnapshot is what the page shows of one enclave Info snapshot, derived
// once with the other published documents.
type pageSnapshot struct {
	Mode            string
	IssuerOrigin    string // from the manifest; "" if it does not parse
	APIURL          string // the policy's api_url
	PolicyDigest    string
	VerifierKey     string // the checkpoints' note verifier key
	VerifierName    string // its name: the log's origin
	verifierHash    uint32
	ManifestSHA256  string
	ManifestProblem string // why the manifest does not parse, if it does not
	NeedsUnseal     bool
	Keys            []pageKey
	PCRs            []pagePCR
}

type pageKey struct {
	Kid, Alg, Label string
	Signs           bool
}

type pagePCR struct {
	Index int
	Hex   string
}

// derivePage is the page's view of info.
func derivePage(info *protocol.InfoResponse) *pageSnapshot {
	s := &pageSnapshot{
		Mode: info.Mode, APIURL: info.Policy.APIURL, PolicyDigest: info.PolicyDigest,
		VerifierKey: info.CheckpointVerifierKey, NeedsUnseal: info.Seed == protocol.SeedNeedsUnseal,
	}
	if v, err := note.NewVerifier(info.CheckpointVerifierKey); err == nil {
		s.VerifierName, s.verifierHash = v.Name(), v.KeyHash()
	}
	labels := map[string]string{}
	if len(info.Manifest) > 0 {
		s.ManifestSHA256 = manifest.DigestHex(info.Manifest)
		if m, err := manifest.Parse(info.Manifest); err != nil {
			s.ManifestProblem = err.Error()
		} else {
			s.IssuerOrigin = m.IssuerOrigin
			for _, k := range m.IssuerKeys {
				labels[k.Kid] = k.Label
			}
		}
	}
	for _, k := range info.IssuerKeys {
		s.Keys = append(s.Keys, pageKey{Kid: k.Kid, Alg: k.Alg, Label: labels[k.Kid], Signs: k.Kid == info.SigningKid})
	}
	for i, v := range info.PCRs {
		s.PCRs = append(s.PCRs, pagePCR{Index: i, Hex: hex.EncodeToString(v)})
	}
	slices.SortFunc(s.PCRs, func(a, b pagePCR) int { return a.Index - b.Index })
	return s
}

// pageData is one rendering of the page.
type pageData struct {
	Issuer    string
	APIURL    string
	Reached   bool // an Info snapshot is known
	Connected bool
	Mismatch  string
	*pageSnapshot

	LogSize         int64
	MintsLastMinute uint64

	Checkpoint        *pageCheckpoint
	CheckpointProblem string
	Witnesses         []pageWitness

	Paths map[string]string
}

type pageWitness struct {
	Name, URL, VerifierKey string
	CosignedSize, Lag      int64
	LastError              string
}

// pageCheckpoint is a checkpoint note as the page shows it.
type pageCheckpoint struct {
	Note       string // the whole signed note, as /v1/audit/checkpoint serves it
	Origin     string
	Size       int64
	RootHash   string // base64, as in the note
	Signatures []pageSignature
}

// pageSignature is one signature line of a checkpoint note.
type pageSignature struct {
	Name  string
	KeyID string // hex of the key hash the line starts with
	Role  string // "log", "witness" or "unknown"
	hash  uint32
}

// Signature roles.
const (
	roleLog     = "log"
	roleWitness = "witness"
	roleUnknown = "unknown"
)

// parseCheckpointNote splits a signed checkpoint note into its checkpoint
// and signature lines (with golang.org/x/mod/sumdb/note, knowing no key),
// without verifying anything: the page shows what the host serves.
func parseCheckpointNote(b []byte) (*pageCheckpoint, error) {
	_, err := note.Open(b, note.VerifierList())
	var unverified *note.UnverifiedNoteError
	if !errors.As(err, &unverified) {
		return nil, fmt.Errorf("not a signed note: %w", err)
	}
	n := unverified.Note
	c, err := auditlog.ParseCheckpoint(n.Text)
	if err != nil {
		return nil, err
	}
	cp := &pageCheckpoint{Note: string(b), Origin: c.Origin, Size: c.Tree.N, RootHash: c.Tree.Hash.String()}
	for _, s := range n.UnverifiedSigs {
		cp.Signatures = append(cp.Signatures, pageSignature{Name: s.Name, KeyID: fmt.Sprintf("%08x", s.Hash), Role: roleUnknown, hash: s.Hash})
	}
	return cp, nil
}

// witnessKey reports whether s is signed by the key of the witness it names.
func witnessKey(keys map[string]uint32, s pageSignature) bool {
	h, ok := keys[s.Name]
	return ok && h == s.hash
}

// pageLimited applies the page's per-client limit.
func (a *API) pageLimited(h http.HandlerFunc) http.HandlerFunc {
	if a.cfg.PageLimit == nil {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if !a.cfg.PageLimit.Allow(clientOf(r.Context())) {
			writeError(w, tooMany(a.cfg.PageLimit, "too many page loads from this client"))
			return
		}
		h(w, r)
	}
}

// page: GET / → the transparency page (see the comment at the top of this file).
func (a *API) page(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), pageWait)
	defer cancel()
	d := pageData{
		Issuer: a.cfg.Issuer, APIURL: a.cfg.Issuer, Connected: a.cfg.Enclave.Connected(),
		LogSize: a.cfg.Audit.LogSize(), MintsLastMinute: a.m.MintedLastMinute.Count(),
		Paths: map[string]string{
			"JWKS": httpapi.PathJWKS, "Discovery": httpapi.PathDiscovery, "Manifest": httpapi.PathManifest,
			"Attestation": httpapi.PathAttestation, "Checkpoint": httpapi.PathAuditCheckpoint, "VerifierKey": httpapi.PathAuditVerifierKey,
			"Readyz": "/readyz",
		},
	}
	if p := a.published.Load(); p != nil {
		d.Reached, d.Mismatch, d.pageSnapshot = true, p.mismatch, p.page
		if p.page.APIURL != "" {
			d.APIURL = p.page.APIURL
		}
	} else {
		d.pageSnapshot = &pageSnapshot{}
	}
	keys := map[string]uint32{} // witness name → key hash
	if a.cfg.Witnesses != nil {
		for _, s := range a.cfg.Witnesses.Status() {
			d.Witnesses = append(d.Witnesses, pageWitness{Name: s.Name, URL: s.URL, VerifierKey: s.VerifierKey,
				CosignedSize: s.CosignedSize, Lag: s.Lag, LastError: s.LastError})
			if v, err := tlogproof.NewCosignatureVerifier(s.VerifierKey); err == nil {
				keys[v.Name()] = v.KeyHash()
			}
		}
	}
	switch raw, err := a.checkpoint(ctx); {
	case err != nil:
		a.log.Warn("transparency page: no checkpoint", "err", err)
		d.CheckpointProblem = "the host could not read its latest checkpoint"
	case raw == nil:
		d.CheckpointProblem = "the log is empty: nothing has been minted yet"
	default:
		cp, err := parseCheckpointNote(raw)
		if err != nil {
			d.CheckpointProblem = "the stored checkpoint does not parse: " + err.Error()
			break
		}
		for i, s := range cp.Signatures {
			switch {
			case s.Name == d.VerifierName && s.hash == d.verifierHash:
				cp.Signatures[i].Role = roleLog
			case witnessKey(keys, s):
				cp.Signatures[i].Role = roleWitness
			}
		}
		d.Checkpoint = cp
	}
	var buf bytes.Buffer
	if err := pageTemplate.Execute(&buf, d); err != nil {
		a.log.Error("transparency page: failed to render", "err", err)
		writeError(w, errorf(http.StatusInternalServerError, KindInternal, "the page could not be rendered; see the host log"))
		return
	}
	for k, v := range pageSecurityHeaders {
		w.Header().Set(k, v)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(buf.Bytes())
	}
}
