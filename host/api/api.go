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
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentkeys/broker/host/audit"
	"github.com/agentkeys/broker/host/awscreds"
	"github.com/agentkeys/broker/host/metrics"
	"github.com/agentkeys/broker/host/ratelimit"
	"github.com/agentkeys/broker/host/revocation"
	"github.com/agentkeys/broker/shared/auditlog"
	"github.com/agentkeys/broker/shared/httpapi"
	"github.com/agentkeys/broker/shared/jwk"
	"github.com/agentkeys/broker/shared/manifest"
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
	// ClockOffset is the enclave's clock minus the host's, as last measured,
	// and false before the first measurement.
	ClockOffset() (time.Duration, bool)
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
	// TrustedProxies are the reverse proxies whose X-Forwarded-For names
	// the client (see ratelimit.ClientKey); empty, it is never believed.
	TrustedProxies []netip.Prefix
	// SignInLimit, if set, rate-limits the unauthenticated sign-in routes
	// (nonce and sign-in) per client.
	SignInLimit *ratelimit.Limiter
	// MintLimit, if set, rate-limits the bearer routes (mint-oidc-jwt,
	// mint-aws-creds, session/revoke) per client: 429 rate_limited, counted
	// in the audit store's aggregates rather than recorded one by one.
	MintLimit *ratelimit.Limiter
	// RefusalLimit, if set, is each client's budget of unauthenticated
	// refusals on the bearer routes (no verified session: no bearer, a
	// malformed, forged, expired or revoked one, a bad body). Within it they
	// are answered with their own error; past it with 429 rate_limited, and
	// counted (audit.Store.Count) rather than recorded one by one. Refusals
	// with no well-formed bearer are always counted.
	RefusalLimit *ratelimit.Limiter
	// WalletMintLimit, if set, rate-limits minting per wallet, once the
	// enclave has verified the session: 429 rate_limited, counted.
	WalletMintLimit *ratelimit.Limiter
	// MetricsElsewhere leaves /metrics off this handler: the host serves it on
	// a listener of its own (--metrics-listen), or, on a public listener
	// without --metrics-public, not at all.
	MetricsElsewhere bool
	// SessionDuration is the AWS credential lifetime asked for when a caller
	// gives none (BROKER_SESSION_DURATION_SECONDS); 0 leaves it to the enclave
	// policy. It must lie within the policy's aws_duration bounds: New checks
	// when the enclave's Info is known, every request checks again.
	SessionDuration time.Duration
	// PageLimit, if set, rate-limits the transparency page (GET /) per
	// client: 429 rate_limited, not counted (it reaches nothing).
	PageLimit *ratelimit.Limiter
	// ReadLimit, if set, rate-limits per client the public reads that cost
	// the store work: /readyz (which commits a heartbeat) and the audit
	// log's routes under /v1/audit/. 429 rate_limited, not counted.
	ReadLimit *ratelimit.Limiter
	// Witnesses, if set, cosign the audit log's checkpoints: /v1/audit/
	// serves the cosigned checkpoint, each mint nudges them, and /readyz
	// reports each one's cosigned size and lag (informative: a witness that
	// is down or behind never makes the host unready).
	Witnesses Witnesses
	// AuditLogName names the log Audit holds (--audit-log-name; "" is the
	// default log, see shared/auditlog): it is presented in every
	// audit_resume, and /v1/audit/verifier-key serves that log's key.
	AuditLogName string
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
	// checkpoint is the latest checkpoint as /v1/audit/checkpoint serves
	// it: cosigned, with witnesses.
	checkpoint func(ctx context.Context) ([]byte, error)
	// logBehind is set when the store may lack batches the enclave logged;
	// resumeMu serialises catching up (see catchUp).
	logBehind atomic.Bool
	resumeMu  sync.Mutex
}

// published is what the host serves from memory, derived from one snapshot of
// the enclave's Info.
type published struct {
	info      *protocol.InfoResponse // the snapshot this was derived from
	jwks      []byte
	etag      string
	discovery []byte
	mismatch  string // non-empty when the enclave's issuer is not ours
	page      *pageSnapshot
	// vkey is the checkpoint verifier key of the log this host keeps, from
	// the manifest's key (auditlog.LogVerifierKey); vkeyErr says why there
	// is none.
	vkey    string
	vkeyErr string
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
	if err := auditlog.CheckLogName(cfg.AuditLogName); err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.New(cfg.Enclave)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.JWKSMaxAge <= 0 {
		cfg.JWKSMaxAge = 300 * time.Second
	}
	a := &API{cfg: cfg, log: cfg.Logger, m: cfg.Metrics, mux: http.NewServeMux(), allowed: map[string]string{}}
	a.published.a = a
	a.route("GET /{$}", "page", a.pageLimited(a.page))
	a.route("GET /healthz", "healthz", a.healthz)
	a.route("GET /readyz", "readyz", a.readLimited(a.readyz))
	a.route("GET "+httpapi.PathDiscovery, "discovery", a.discovery)
	a.route("GET "+httpapi.PathJWKS, "jwks", a.jwks)
	a.route("GET "+httpapi.PathAttestation, "attestation", a.limited(a.issuing(a.attestation)))
	a.route("GET "+httpapi.PathManifest, "manifest", a.manifest)
	a.route("GET /v1/session/nonce", "session_nonce", a.limited(a.issuing(a.sessionNonce)))
	a.route("POST /v1/session", "session", a.limited(a.issuing(a.createSession)))
	a.route("POST /v1/session/revoke", "session_revoke", a.bearerLimited(audit.KindSessionRevoke, a.issuing(a.revokeSession)))
	a.route("POST /v1/mint-oidc-jwt", "mint_oidc_jwt", a.bearerLimited(audit.KindOIDCJWT, a.issuing(a.mintOIDCJWT)))
	a.route("POST /v1/mint-aws-creds", "mint_aws_creds", a.bearerLimited(audit.KindAWSCreds, a.issuing(a.mintAWSCreds)))
	a.mountAuditLog()
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
	if info, ok := cfg.Enclave.Info(); ok {
		if err := a.checkSessionDuration(info.Policy); err != nil {
			return nil, err
		}
	}
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
		if !a.cfg.SignInLimit.Allow(clientOf(r.Context())) {
			writeError(w, tooMany(a.cfg.SignInLimit, "too many sign-in requests from this client"))
			return
		}
		h(w, r)
	}
}

// readLimited applies the per-client limit of the public reads (ReadLimit).
func (a *API) readLimited(h http.HandlerFunc) http.HandlerFunc {
	if a.cfg.ReadLimit == nil {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if !a.cfg.ReadLimit.Allow(clientOf(r.Context())) {
			writeError(w, tooMany(a.cfg.ReadLimit, "too many reads from this client"))
			return
		}
		h(w, r)
	}
}

// bearerLimited applies the per-client limit of the bearer routes
// (MintLimit). A limited request reached nothing; it is counted in the audit
// store's aggregates, so that a flood writes a handful of records.
func (a *API) bearerLimited(kind string, h http.HandlerFunc) http.HandlerFunc {
	if a.cfg.MintLimit == nil {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		client := clientOf(r.Context())
		if !a.cfg.MintLimit.Allow(client) {
			e := tooMany(a.cfg.MintLimit, "too many requests from this client")
			a.count(audit.Record{Kind: kind, Outcome: audit.OutcomeRateLimited, Wallet: audit.WalletUnknown, Client: client, Detail: e.message})
			writeError(w, e)
			return
		}
		h(w, r)
	}
}

// tooMany is the 429 rate_limited answer of limiter l, with its Retry-After.
func tooMany(l *ratelimit.Limiter, what string) *httpError {
	secs := int64((l.RetryAfter() + time.Second - 1) / time.Second)
	e := errorf(http.StatusTooManyRequests, KindRateLimited, fmt.Sprintf("%s; retry in %d s", what, secs))
	e.outcome = audit.OutcomeRateLimited
	e.retryAfter = secs
	return e
}

// walletLimited applies the per-wallet limit of minting (WalletMintLimit)
// once the enclave has verified whose session it is. Its refusal is counted
// (see refuse), not recorded one by one.
func (a *API) walletLimited(wallet string) *httpError {
	if l := a.cfg.WalletMintLimit; l != nil && !l.Allow(wallet) {
		return tooMany(l, "too many credentials minted for this wallet")
	}
	return nil
}

type clientKeyCtx struct{}

// clientOf is the client address route stored in ctx ("" outside a route).
func clientOf(ctx context.Context) string {
	c, _ := ctx.Value(clientKeyCtx{}).(string)
	return c
}

func (a *API) route(pattern, name string, h http.HandlerFunc) {
	method, path, _ := strings.Cut(pattern, " ")
	a.allowed[strings.TrimSuffix(path, "{$}")] = method
	a.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		// Name the client once: the limits and the audit records use it.
		r = r.WithContext(context.WithValue(r.Context(), clientKeyCtx{}, ratelimit.ClientKey(r, a.cfg.TrustedProxies)))
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
	p.discovery, _ = json.Marshal(httpapi.NewDiscovery(a.cfg.Issuer))
	p.page = derivePage(info)
	p.vkey, p.vkeyErr = a.logVerifierKey(info)
	if p.vkeyErr != "" {
		a.log.Error("no audit log verifier key", "audit_log", a.cfg.AuditLogName, "err", p.vkeyErr)
	}
	return p
}

// logVerifierKey is the checkpoint verifier key of the log this host keeps:
// the manifest's key (the default log's) under that log's name, which is the
// key the enclave's Info names once resumed with it.
func (a *API) logVerifierKey(info *protocol.InfoResponse) (string, string) {
	m, err := manifest.Parse(info.Manifest)
	if err != nil {
		return "", fmt.Sprintf("the enclave's manifest does not parse: %v", err)
	}
	vkey, err := auditlog.LogVerifierKey(m.CheckpointVerifierKey, a.cfg.AuditLogName)
	if err != nil {
		return "", fmt.Sprintf("the manifest's checkpoint_verifier_key: %v", err)
	}
	if info.CheckpointVerifierKey != vkey {
		return "", fmt.Sprintf("the enclave reports the checkpoint key %s, not %s of the log this host keeps (--audit-log-name %q)", info.CheckpointVerifierKey, vkey, a.cfg.AuditLogName)
	}
	return vkey, ""
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
	status := map[string]any{"status": "ready", "enclave": "ok", "audit": "ok", "issuer": a.cfg.Issuer}
	var failed []string
	if !a.cfg.Enclave.Connected() {
		status["enclave"] = "unreachable"
		failed = append(failed, "enclave")
	}
	if p := a.published.Load(); p != nil && p.mismatch != "" {
		status["enclave"] = "issuer_mismatch"
		failed = append(failed, "enclave issuer")
	}
	if off, ok := a.cfg.Enclave.ClockOffset(); ok {
		// Informative, never a failure: the enclave keeps its own time.
		status["enclave_clock_offset_ms"] = strconv.FormatInt(off.Milliseconds(), 10)
	}
	if a.cfg.Witnesses != nil {
		// Informative, never a failure: minting goes on without witnesses.
		status["witnesses"] = a.cfg.Witnesses.Status()
	}
	if err := a.cfg.Audit.Ping(ctx); err != nil {
		status["audit"] = "failing"
		failed = append(failed, "audit store ("+auditProblem(err)+")")
		a.log.Warn("audit store not ready", "err", err)
	} else if e := a.catchUp(ctx); e != nil {
		// The store lacks batches the enclave logged and cannot fetch them.
		status["audit"] = "behind"
		failed = append(failed, "audit log (the store is missing entries the enclave logged)")
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

// auditProblem says what is wrong with the audit store, for /readyz, which
// anyone may read: what happened, but not the file's path.
func auditProblem(err error) string {
	switch {
	case errors.Is(err, audit.ErrFileReplaced):
		return audit.ErrFileReplaced.Error()
	case errors.Is(err, audit.ErrNotWritable):
		return audit.ErrNotWritable.Error()
	case errors.Is(err, audit.ErrLogGap):
		return audit.ErrLogGap.Error()
	case errors.Is(err, audit.ErrClosed):
		return "closed"
	}
	return "unavailable"
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
	if rec.Client == "" {
		rec.Client = clientOf(ctx)
	}
	// The record must be written even if the client has gone: detach from its
	// cancellation, but bound the wait.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	_, err := a.cfg.Audit.Append(ctx, rec)
	a.m.AuditWriteSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		a.m.AuditWriteErrors.Inc()
		a.log.Error("audit write failed; refusing the request", "kind", rec.Kind, "outcome", rec.Outcome, "err", err)
		a.afterAuditError(rec, err)
	}
	return err
}

var errAudit = errorf(http.StatusInternalServerError, KindAuditError, "the audit log could not be written, so nothing was issued; try again later")

// refuse records a refused attempt and answers with its error. If the record
// cannot be written the answer is audit_error: still a refusal.
//
// Refusals that anyone can cause at any rate are counted (audit.Store.Count)
// rather than recorded one by one: those before any bearer was read (see
// preAuth), those past the client's refusal budget (RefusalLimit, spent by
// every unauthenticated refusal, answered 429 once it is empty), and those
// of the per-wallet limit.
func (a *API) refuse(w http.ResponseWriter, r *http.Request, rec audit.Record, e *httpError) {
	rec.Outcome = e.auditOutcome()
	if rec.Detail != "" {
		rec.Detail += ": " + e.message // keep what the record was for
	} else {
		rec.Detail = e.message
	}
	rec.Client = clientOf(r.Context())
	counted := e.kind == KindRateLimited // the wallet limit: a flood of its own
	if unauthenticated(rec) {
		if l := a.cfg.RefusalLimit; l != nil && !l.Allow(rec.Client) {
			// Past the budget: answer 429, keep the outcome, and count.
			counted = true
			e = tooMany(l, "too many refused requests from this client (the last: "+truncate(e.message, 200)+")")
		}
		counted = counted || preAuth(rec)
	}
	// A record carrying an enclave log batch (a JWT the enclave signed and
	// the host then refused to release) is always recorded: the batch must
	// reach the store.
	counted = counted && rec.Batch == nil
	var err error
	if counted {
		err = a.count(rec)
	} else {
		a.logRefusal(r.Context(), &rec)
		err = a.record(r.Context(), rec)
	}
	if err != nil {
		e = errAudit
	}
	if rec.Kind == audit.KindOIDCJWT || rec.Kind == audit.KindAWSCreds {
		a.m.Mints.WithLabelValues(rec.Kind, rec.Outcome).Inc()
	}
	writeError(w, e)
}

// preAuth reports whether rec is the refusal of a bearer route before any
// bearer was read: anyone can cause it, at any rate, and it names no wallet
// and no token, so it is worth a count, not a record. A refusal that carries
// a bearer's hash or a wallet is recorded one by one.
func preAuth(rec audit.Record) bool {
	switch rec.Kind {
	case audit.KindOIDCJWT, audit.KindAWSCreds, audit.KindSessionRevoke:
		return rec.BearerSHA256 == "" && rec.Wallet == audit.WalletUnknown && !rec.HostAssertedWallet
	}
	return false
}

// unauthenticated reports whether rec is the refusal of a bearer route that no
// verified session stands behind, for a reason the client controls: these
// spend the client's refusal budget. A refusal the host caused (the enclave
// down, STS failing) does not.
func unauthenticated(rec audit.Record) bool {
	switch rec.Kind {
	case audit.KindOIDCJWT, audit.KindAWSCreds, audit.KindSessionRevoke:
	default:
		return false
	}
	if rec.Wallet != audit.WalletUnknown || rec.HostAssertedWallet {
		return false
	}
	switch rec.Outcome {
	case audit.OutcomeUnauthorized, audit.OutcomeRevoked, audit.OutcomeBadRequest, audit.OutcomePolicyRefused:
		return true
	}
	return preAuth(rec)
}

// count adds a refusal to the audit store's aggregates.
func (a *API) count(rec audit.Record) error {
	err := a.cfg.Audit.Count(rec)
	if err != nil {
		a.m.AuditWriteErrors.Inc()
		a.log.Error("audit count failed; refusing the request", "kind", rec.Kind, "outcome", rec.Outcome, "err", err)
	}
	return err
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

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
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
