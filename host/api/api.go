package api

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/agentkeys/broker/host/audit"
	"github.com/agentkeys/broker/host/awscreds"
	"github.com/agentkeys/broker/host/metrics"
	"github.com/agentkeys/broker/host/ratelimit"
	"github.com/agentkeys/broker/host/revocation"
	"github.com/agentkeys/broker/shared/jwk"
	"github.com/agentkeys/broker/shared/protocol"
)

// MaxBodySize caps every request body.
const MaxBodySize = 64 << 10

// Enclave is the host's view of the enclave connection (enclaveclient.Client).
type Enclave interface {
	Call(ctx context.Context, op protocol.Op, req, resp any) error
	// Info returns the enclave's Info snapshot (false before the first
	// connection). The host keeps no other copy of it: a snapshot is replaced
	// whole, never modified, so what the API derives from it is cached keyed
	// by its pointer.
	Info() (*protocol.InfoResponse, bool)
	Connected() bool
}

// Config configures the API.
type Config struct {
	// Issuer is the normalised issuer URL. It must equal the enclave policy's
	// issuer byte for byte; on a mismatch the host refuses to serve.
	Issuer      string
	Enclave     Enclave
	Audit       audit.Store
	Revocations revocation.Store
	Metrics     *metrics.Metrics
	Logger      *slog.Logger
	// DefaultTTLSeconds is the JWT TTL asked of the enclave when a caller gives
	// none (BROKER_OIDC_JWT_TTL_SECONDS); 0 leaves it to the enclave policy.
	DefaultTTLSeconds int64
	// SessionBackend, if set, validates opaque bearers with an existing
	// AgentKeys backend (compatibility mode; the enclave policy must allow
	// host-asserted wallets).
	SessionBackend *SessionBackend
	// JWKSMaxAge is the JWKS Cache-Control max-age (default 300 s).
	JWKSMaxAge time.Duration
	// AWS mints AWS credentials; nil leaves /v1/mint-aws-creds answering 503.
	AWS *awscreds.Broker
	// SignInLimit, if set, rate-limits the unauthenticated sign-in routes
	// (nonce and sign-in) per client; BehindProxy says whether the client is
	// named by the proxy's X-Forwarded-For.
	SignInLimit *ratelimit.Limiter
	BehindProxy bool
	// MetricsElsewhere leaves /metrics off this handler: the host serves it on
	// a listener of its own (--metrics-listen), or, on a public listener
	// without --metrics-public, not at all.
	MetricsElsewhere bool
	// SessionDuration is the default AWS credential lifetime
	// (BROKER_SESSION_DURATION_SECONDS, default 3600 s).
	SessionDuration time.Duration
}

// API is the host's HTTP handler.
type API struct {
	cfg Config
	log *slog.Logger
	m   *metrics.Metrics
	mux *http.ServeMux
	// allowed maps each route's path to its method, to answer 405 rather than
	// 404 for a known path with the wrong method.
	allowed map[string]string

	published publishedCache
}

// published is what the host serves from memory, derived from one snapshot of
// the enclave's Info.
type published struct {
	info      *protocol.InfoResponse // the snapshot this was derived from
	jwks      []byte
	etag      string
	discovery []byte
	mismatch  string // non-empty when the enclave's issuer is not ours
}

// publishedCache derives the published documents from the enclave client's
// Info snapshot, which stays their one source: Load rebuilds them whenever the
// snapshot is a new one (a reconnection), and otherwise returns the cached bytes.
type publishedCache struct {
	a *API
	p atomic.Pointer[published]
}

// Load returns the documents for the enclave's current Info, or nil before the
// enclave has been reached.
func (c *publishedCache) Load() *published {
	info, ok := c.a.cfg.Enclave.Info()
	if !ok {
		return nil
	}
	old := c.p.Load()
	if old != nil && old.info == info {
		return old
	}
	p := c.a.derive(info)
	// Concurrent loads may derive the same snapshot twice; one of them logs.
	if c.p.CompareAndSwap(old, p) && p.mismatch != "" {
		c.a.log.Error("issuer mismatch", "host_issuer", c.a.cfg.Issuer, "enclave_issuer", info.Policy.Issuer)
	}
	return p
}

// New returns the API. It reads the enclave's keys and policy from
// cfg.Enclave.Info on each request (served from a cache while the snapshot is
// unchanged).
func New(cfg Config) (*API, error) {
	if cfg.Issuer == "" || cfg.Enclave == nil || cfg.Audit == nil || cfg.Revocations == nil {
		return nil, errors.New("api: issuer, enclave, audit store and revocation store are required")
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.New(cfg.Enclave.Connected)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.SessionDuration <= 0 {
		cfg.SessionDuration = time.Hour
	}
	if cfg.JWKSMaxAge <= 0 {
		cfg.JWKSMaxAge = 300 * time.Second
	}
	a := &API{cfg: cfg, log: cfg.Logger, m: cfg.Metrics, mux: http.NewServeMux(), allowed: map[string]string{}}
	a.published.a = a
	a.route("GET /healthz", "healthz", a.healthz)
	a.route("GET /readyz", "readyz", a.readyz)
	a.route("GET /.well-known/openid-configuration", "discovery", a.discovery)
	a.route("GET /.well-known/jwks.json", "jwks", a.jwks)
	a.route("GET /.well-known/attestation", "attestation", a.limited(a.issuing(a.attestation)))
	a.route("GET /v1/session/nonce", "session_nonce", a.limited(a.issuing(a.sessionNonce)))
	a.route("POST /v1/session", "session", a.limited(a.issuing(a.createSession)))
	a.route("POST /v1/session/revoke", "session_revoke", a.issuing(a.revokeSession))
	a.route("POST /v1/mint-oidc-jwt", "mint_oidc_jwt", a.issuing(a.mintOIDCJWT))
	a.route("POST /v1/mint-aws-creds", "mint_aws_creds", a.issuing(a.mintAWSCreds))
	if !cfg.MetricsElsewhere {
		a.mux.Handle("GET /metrics", a.m.Handler())
		a.allowed["/metrics"] = "GET"
	}
	a.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if allow, ok := a.allowed[r.URL.Path]; ok {
			a.m.Requests.WithLabelValues("other", KindMethodNotAllowed).Inc()
			w.Header().Set("Allow", allow)
			writeError(w, errorf(http.StatusMethodNotAllowed, KindMethodNotAllowed, r.Method+" is not allowed on "+r.URL.Path+"; use "+allow))
			return
		}
		a.m.Requests.WithLabelValues("other", KindNotFound).Inc()
		writeError(w, errorf(http.StatusNotFound, KindNotFound, "no such route: "+r.Method+" "+truncate(r.URL.Path, 100)))
	})
	return a, nil
}

// ServeHTTP implements http.Handler.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

// statusWriter records the status and the error kind for metrics.
type statusWriter struct {
	http.ResponseWriter
	status int
	kind   string // set by writeError
}

// outcome is the metrics label: the error kind, or "ok".
func (s *statusWriter) outcome() string {
	if s.kind != "" {
		return s.kind
	}
	if s.status >= 400 {
		return "error"
	}
	return "ok"
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// issuing wraps the routes that sign in or mint: while the enclave's issuer
// differs from ours they refuse, as discovery and the JWKS do. A JWT whose iss
// no relying party can match is worse than none.
func (a *API) issuing(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if p := a.published.Load(); p != nil && p.mismatch != "" {
			writeError(w, errorf(http.StatusServiceUnavailable, KindUnavailable, p.mismatch))
			return
		}
		h(w, r)
	}
}

// limited applies the per-client sign-in rate limit. A limited request is not
// audited: it reached nothing, and recording it would let a flood fill the log.
func (a *API) limited(h http.HandlerFunc) http.HandlerFunc {
	if a.cfg.SignInLimit == nil {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if !a.cfg.SignInLimit.Allow(ratelimit.ClientKey(r, a.cfg.BehindProxy)) {
			w.Header().Set("Retry-After", "1")
			writeError(w, errorf(http.StatusTooManyRequests, KindRateLimited, "too many sign-in requests from this client; retry in a few seconds"))
			return
		}
		h(w, r)
	}
}

func (a *API) route(pattern, name string, h http.HandlerFunc) {
	method, path, _ := strings.Cut(pattern, " ")
	a.allowed[path] = method
	a.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		h(sw, r)
		a.m.RequestSeconds.WithLabelValues(name).Observe(time.Since(start).Seconds())
		a.m.Requests.WithLabelValues(name, sw.outcome()).Inc()
	})
}

// derive builds the JWKS and discovery documents from an Info snapshot, and
// records an issuer mismatch, which makes the host refuse to serve them: AWS
// compares iss byte for byte with the registered issuer, and a host that
// published one issuer while the enclave signed another would hand out JWTs
// that fail in confusing ways.
func (a *API) derive(info *protocol.InfoResponse) *published {
	p := &published{info: info}
	if info.Policy.Issuer != a.cfg.Issuer {
		p.mismatch = fmt.Sprintf("the host's issuer %q differs from the enclave policy's %q; set BROKER_OIDC_ISSUER to the policy's issuer", a.cfg.Issuer, info.Policy.Issuer)
	}
	p.jwks, _ = json.Marshal(jwk.Set{Keys: info.IssuerKeys})
	sum := sha256.Sum256(p.jwks)
	p.etag = `"` + base64.RawURLEncoding.EncodeToString(sum[:16]) + `"`
	p.discovery, _ = json.Marshal(map[string]any{
		"issuer":                                a.cfg.Issuer,
		"jwks_uri":                              a.cfg.Issuer + "/.well-known/jwks.json",
		"response_types_supported":              []string{"id_token"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"ES256"},
		"scopes_supported":                      []string{"openid"},
		"claims_supported": []string{"iss", "sub", "aud", "iat", "nbf", "exp", "jti",
			"agentkeys_user_wallet", "https://aws.amazon.com/tags"},
	})
	return p
}

func (a *API) current() (*published, *httpError) {
	p := a.published.Load()
	if p == nil {
		return nil, errorf(http.StatusServiceUnavailable, KindEnclaveUnavailable, "the enclave has not been reached yet; try again shortly")
	}
	if p.mismatch != "" {
		return nil, errorf(http.StatusServiceUnavailable, KindUnavailable, p.mismatch)
	}
	return p, nil
}

func (a *API) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, "ok")
}

func (a *API) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	status := map[string]string{"status": "ready", "enclave": "ok", "audit": "ok", "issuer": a.cfg.Issuer}
	var failed []string
	if !a.cfg.Enclave.Connected() {
		status["enclave"] = "unreachable"
		failed = append(failed, "enclave")
	}
	if p := a.published.Load(); p != nil && p.mismatch != "" {
		status["enclave"] = "issuer_mismatch"
		failed = append(failed, "enclave issuer")
	}
	if err := a.cfg.Audit.Ping(ctx); err != nil {
		status["audit"] = "failing"
		failed = append(failed, "audit store")
		a.log.Warn("audit store not ready", "err", err)
	}
	if len(failed) > 0 {
		status["status"] = "unavailable"
		status["error"] = KindUnavailable
		status["message"] = "not ready: " + strings.Join(failed, ", ")
		writeJSON(w, http.StatusServiceUnavailable, status)
		return
	}
	writeJSON(w, http.StatusOK, status)
}

func (a *API) discovery(w http.ResponseWriter, r *http.Request) {
	p, herr := a.current()
	if herr != nil {
		writeError(w, herr)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", fmt.Sprintf("public, max-age=%d", int(a.cfg.JWKSMaxAge.Seconds())))
	w.Write(p.discovery)
}

func (a *API) jwks(w http.ResponseWriter, r *http.Request) {
	p, herr := a.current()
	if herr != nil {
		writeError(w, herr)
		return
	}
	w.Header().Set("Cache-Control", fmt.Sprintf("public, max-age=%d", int(a.cfg.JWKSMaxAge.Seconds())))
	w.Header().Set("ETag", p.etag)
	if match := r.Header.Get("If-None-Match"); match != "" && etagMatches(match, p.etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(p.jwks)
}

func etagMatches(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimSpace(t)
		if t == "*" || strings.TrimPrefix(t, "W/") == etag {
			return true
		}
	}
	return false
}

// call is an instrumented enclave call.
func (a *API) call(ctx context.Context, op protocol.Op, req, resp any) error {
	start := time.Now()
	err := a.cfg.Enclave.Call(ctx, op, req, resp)
	outcome := "ok"
	if err != nil {
		outcome = string(protocol.CodeOf(err))
	}
	a.m.EnclaveRPCSeconds.WithLabelValues(string(op), outcome).Observe(time.Since(start).Seconds())
	return err
}

// record writes an audit record durably, measuring it. Its error means the
// caller must not receive a credential.
func (a *API) record(ctx context.Context, rec audit.Record) error {
	start := time.Now()
	// The record must be written even if the client has gone: detach from its
	// cancellation, but bound the wait.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	_, err := a.cfg.Audit.Append(ctx, rec)
	a.m.AuditWriteSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		a.m.AuditWriteErrors.Inc()
		a.log.Error("audit write failed; refusing the request", "kind", rec.Kind, "outcome", rec.Outcome, "err", err)
	}
	return err
}

var errAudit = errorf(http.StatusInternalServerError, KindAuditError, "the audit log could not be written, so nothing was issued; try again later")

// refuse records a refused attempt and answers with its error. If the record
// cannot be written the answer is audit_error: still a refusal.
func (a *API) refuse(w http.ResponseWriter, r *http.Request, rec audit.Record, e *httpError) {
	rec.Outcome = e.auditOutcome()
	if rec.Detail != "" {
		rec.Detail += ": " + e.message // keep what the record was for
	} else {
		rec.Detail = e.message
	}
	if err := a.record(r.Context(), rec); err != nil {
		e = errAudit
	}
	if rec.Kind == audit.KindOIDCJWT || rec.Kind == audit.KindAWSCreds {
		a.m.Mints.WithLabelValues(rec.Kind, rec.Outcome).Inc()
	}
	writeError(w, e)
}

// bearer extracts the bearer token: "Bearer" in any case, one or more spaces,
// then the token.
func bearer(r *http.Request) (string, *httpError) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", errorf(http.StatusUnauthorized, KindUnauthorized, "missing Authorization: Bearer header; sign in first (POST /v1/session)")
	}
	scheme, rest, ok := strings.Cut(h, " ")
	tok := strings.TrimLeft(rest, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" || strings.ContainsAny(tok, " \t") {
		return "", errorf(http.StatusUnauthorized, KindUnauthorized, "malformed Authorization header; want: Bearer TOKEN")
	}
	return tok, nil
}

// readJSON decodes a capped JSON body into v. An empty body is allowed when
// optional is true and leaves v untouched.
func readJSON(w http.ResponseWriter, r *http.Request, v any, optional bool) *httpError {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodySize))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return errorf(http.StatusRequestEntityTooLarge, KindTooLarge, fmt.Sprintf("request body is larger than %d bytes", MaxBodySize))
		}
		return errorf(http.StatusBadRequest, KindBadRequest, "failed to read the request body")
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		if optional {
			return nil
		}
		return errorf(http.StatusBadRequest, KindBadRequest, "request body is empty; want a JSON object")
	}
	if err := json.Unmarshal(body, v); err != nil {
		return errorf(http.StatusBadRequest, KindBadRequest, "request body is not valid JSON for this route: "+truncate(err.Error(), 200))
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// sessionIDOf reads the sid claim of a session token without verifying it. It
// is used only to refuse revoked sessions early; the enclave verifies the token,
// and the host checks the verified sid again before releasing anything.
func sessionIDOf(token string) string {
	parts := strings.Split(token, ".")
	if len(parts) != 3 || len(parts[1]) > 4096 {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var c struct {
		SID string `json:"sid"`
	}
	if json.Unmarshal(b, &c) != nil {
		return ""
	}
	return c.SID
}

// looksLikeJWT tells enclave session tokens from opaque backend bearers.
func looksLikeJWT(token string) bool {
	return strings.Count(token, ".") == 2 && sessionIDOf(token) != ""
}

func hexSignature(s string) ([]byte, error) {
	s = strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X")
	if len(s) != 130 {
		return nil, errors.New("signature must be 0x followed by 130 hex digits (65 bytes r||s||v)")
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, errors.New("signature is not hex")
	}
	return b, nil
}
