package attest

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/agentkeys/broker/shared/httpapi"
	"github.com/agentkeys/broker/shared/jwk"
	"github.com/agentkeys/broker/shared/manifest"
)

// Offline is what an auditor holds without asking the issuer anything.
type Offline struct {
	Document []byte   // the COSE_Sign1 bytes (see DecodeDocumentFile)
	Manifest []byte   // the key manifest bytes; nil checks the document alone
	JWKS     *jwk.Set // optional: a saved JWKS to compare with the manifest
	JWT      string   // optional: a token whose signature and iss to check
}

// VerifyOffline verifies a saved document and, unless in.Manifest is nil, the
// manifest it binds, the JWKS and the JWT if given. With a nil manifest it
// checks the document alone (format, signature, chain, time, PCRs), which is
// all a document of an enclave other than agentkeys can show.
func VerifyOffline(in Offline, opts DocumentOptions) Report {
	d, r := VerifyDocument(in.Document, opts)
	if in.Manifest == nil {
		return r
	}
	r.Merge(bindings(d, in.Manifest, in.JWKS, in.JWT, nil, nil))
	return r
}

// bindings checks what the document's user_data binds: the manifest, then the
// JWKS, the JWT and the issuer named by sources against it, and, live (seen
// not nil), the TLS key the issuer URL was served with and the audit log's
// verifier key the API serves.
func bindings(d *Document, manifestBytes []byte, set *jwk.Set, token string, sources []IssuerSource, seen *issuerTLS) Report {
	m, r := VerifyManifest(d, manifestBytes)
	if m == nil {
		return r
	}
	if set != nil {
		r.Checks = append(r.Checks, CheckJWKS(m, *set))
	} else {
		r.skip("jwks", "no JWKS given: the keys relying parties fetch were not compared with the manifest")
	}
	if token != "" {
		iss, c := CheckJWT(m, token)
		r.Checks = append(r.Checks, c)
		if c.Status == StatusPass {
			sources = append(sources, IssuerSource{Name: "JWT iss", Issuer: iss})
		}
	}
	r.Checks = append(r.Checks, CheckIssuer(m, sources...))
	if seen != nil {
		r.Checks = append(r.Checks, CheckIssuerTLSKey(m, seen.leaf))
		r.Checks = append(r.Checks, CheckAuditKey(m, seen.auditKey, seen.auditKeyErr))
	}
	return r
}

// issuerTLS is what a client saw live: at the issuer URL, and the audit log's
// verifier key at the API.
type issuerTLS struct {
	leaf        *x509.Certificate // nil over plain HTTP
	auditKey    string            // GET PathAuditVerifierKey
	auditKeyErr error
}

// LiveOptions configure VerifyLive.
type LiveOptions struct {
	// Client makes the requests (default: a client with a 10 s timeout).
	Client *http.Client
	// MaxBody bounds each response body (default 1 MiB).
	MaxBody int64
	// NonceSize is the nonce's size in bytes, 8 to 64 (default 32).
	NonceSize int
	// JWT, if set, is a token the issuer signed, to check as in Offline.
	JWT string
	// APIURL is where the attestation document is fetched: the API origin
	// (the policy's api_url), which differs from the issuer when the
	// enclave serves the issuer origin. Default: the issuer.
	APIURL string
}

// Discovery is the part of an OpenID discovery document verify reads.
type Discovery struct {
	Issuer  string `json:"issuer"`
	JWKSURI string `json:"jwks_uri"`
}

// VerifyLive verifies a running issuer as a relying party sees it: it fetches
// the discovery document and the JWKS it names, then an attestation document
// for a fresh random nonce with its manifest (from lo.APIURL), and checks them
// all, including that the certificate served at the issuer URL carries the
// TLS key the manifest names (issuer_origin enclave). opts.Nonce is replaced
// by the nonce sent.
func VerifyLive(ctx context.Context, issuer string, opts DocumentOptions, lo LiveOptions) Report {
	var r Report
	lo.defaults()
	base := strings.TrimRight(issuer, "/")

	var disc Discovery
	b, _, leaf, err := fetch(ctx, lo, base+httpapi.PathDiscovery)
	if err == nil {
		if err = json.Unmarshal(b, &disc); err != nil {
			err = fmt.Errorf("%s/.well-known/openid-configuration did not send the expected JSON: %w", base, err)
		}
	}
	if err != nil {
		r.fail("discovery", "%v", err)
		return r
	}
	r.pass("discovery", "issuer %s, jwks_uri %s", disc.Issuer, disc.JWKSURI)

	var set jwk.Set
	if err := getJSON(ctx, lo, disc.JWKSURI, &set); err != nil {
		r.fail("jwks fetch", "%v", err)
		return r
	}
	r.pass("jwks fetch", "%d keys from %s", len(set.Keys), disc.JWKSURI)

	api := strings.TrimRight(lo.APIURL, "/")
	if api == "" {
		api = base
	}
	d, body, ar := fetchAttestation(ctx, api, opts, lo)
	r.Merge(ar)
	if body == nil {
		return r
	}
	seen := &issuerTLS{leaf: leaf}
	kb, _, err := get(ctx, lo, api+httpapi.PathAuditVerifierKey)
	seen.auditKey, seen.auditKeyErr = strings.TrimSpace(string(kb)), err
	r.Merge(bindings(d, body.Manifest, &set, lo.JWT, []IssuerSource{
		{Name: "--issuer", Issuer: base},
		{Name: "discovery", Issuer: disc.Issuer},
	}, seen))
	return r
}

func (lo *LiveOptions) defaults() {
	if lo.Client == nil {
		lo.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if lo.MaxBody <= 0 {
		lo.MaxBody = 1 << 20
	}
	if lo.NonceSize == 0 {
		lo.NonceSize = 32
	}
}

// fetchAttestation fetches and verifies a document for a fresh nonce from
// base/.well-known/attestation. body is nil if the fetch failed.
func fetchAttestation(ctx context.Context, base string, opts DocumentOptions, lo LiveOptions) (*Document, *httpapi.Attestation, Report) {
	var r Report
	nonce := make([]byte, lo.NonceSize)
	if _, err := rand.Read(nonce); err != nil {
		r.fail("attestation fetch", "failed to draw a nonce: %v", err)
		return nil, nil, r
	}
	var body httpapi.Attestation
	if err := getJSON(ctx, lo, base+httpapi.PathAttestation+"?format=json&nonce="+hex.EncodeToString(nonce), &body); err != nil {
		r.fail("attestation fetch", "%v", err)
		return nil, nil, r
	}
	r.pass("attestation fetch", "%d-byte document and %d-byte manifest for nonce %x", len(body.Document), len(body.Manifest), nonce)
	opts.Nonce = nonce
	d, dr := VerifyDocument(body.Document, opts)
	r.Merge(dr)
	return d, &body, r
}

// FetchManifest fetches an attestation document for a fresh nonce from
// base/.well-known/attestation, verifies it (opts.Nonce is replaced by the
// nonce sent) and the manifest it binds, and returns the manifest if every
// check passed.
func FetchManifest(ctx context.Context, base string, opts DocumentOptions, lo LiveOptions) (*manifest.Manifest, Report) {
	lo.defaults()
	d, body, r := fetchAttestation(ctx, strings.TrimRight(base, "/"), opts, lo)
	if body == nil {
		return nil, r
	}
	m, mr := VerifyManifest(d, body.Manifest)
	r.Merge(mr)
	if !r.OK() {
		return nil, r
	}
	return m, r
}

func getJSON(ctx context.Context, lo LiveOptions, rawURL string, v any) error {
	b, _, err := get(ctx, lo, rawURL)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s did not send the expected JSON: %w", rawURL, err)
	}
	return nil
}

// get fetches a URL with a bounded body and wants 200 OK.
func get(ctx context.Context, lo LiveOptions, rawURL string) ([]byte, http.Header, error) {
	b, h, _, err := fetch(ctx, lo, rawURL)
	return b, h, err
}

// fetch is get that also returns the leaf certificate the server presented
// (nil over plain HTTP).
func fetch(ctx context.Context, lo LiveOptions, rawURL string) ([]byte, http.Header, *x509.Certificate, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, nil, nil, fmt.Errorf("%q is not an http(s) URL", rawURL)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("failed to build the request for %s: %w", rawURL, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := lo.Client.Do(req)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("failed to fetch %s: %w", rawURL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, lo.MaxBody+1))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("failed to read %s: %w", rawURL, err)
	}
	if int64(len(b)) > lo.MaxBody {
		return nil, nil, nil, fmt.Errorf("%s sent more than %d bytes", rawURL, lo.MaxBody)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, nil, fmt.Errorf("%s answered %s: %.200s", rawURL, resp.Status, b)
	}
	var leaf *x509.Certificate
	if resp.TLS != nil && len(resp.TLS.PeerCertificates) > 0 {
		leaf = resp.TLS.PeerCertificates[0]
	}
	return b, resp.Header, leaf, nil
}
