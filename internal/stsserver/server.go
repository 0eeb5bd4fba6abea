package stsserver

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	// apiVersion is the only STS API version.
	apiVersion = "2011-06-15"
	// xmlns is the namespace of every STS response document.
	xmlns = "https://sts.amazonaws.com/doc/2011-06-15/"
	// maxBody bounds a request body.
	maxBody = 64 << 10
	// defaultAccount is used when no role names an account.
	defaultAccount = "123456789012"
	// DefaultAudience is the audience AWS documents for web identity federation.
	DefaultAudience = "sts.amazonaws.com"
)

// Role is an IAM role of the account, with the parts of its trust policy the
// server evaluates.
type Role struct {
	// ARN is the role's ARN, arn:aws:iam::ACCOUNT:role/[PATH/]NAME.
	ARN string

	// ProviderIssuer is the URL of the IAM OIDC identity provider the role
	// trusts for AssumeRoleWithWebIdentity (the Federated principal). A token's
	// iss must equal it byte for byte, as at AWS. Empty: the role cannot be
	// assumed with a web identity.
	ProviderIssuer string
	// Audience is the client ID registered for the provider and required by the
	// trust policy's "<provider>:aud" condition. Default DefaultAudience.
	Audience string
	// RequireTag, if set, is a session tag key that must be present (the trust
	// policy's Null condition on aws:RequestTag/<key>), for both
	// AssumeRoleWithWebIdentity and AssumeRole. Compared ignoring case, as IAM
	// compares tag keys.
	RequireTag string
	// MaxSessionDuration bounds DurationSeconds: 1h (the default) to 12h.
	MaxSessionDuration time.Duration

	// TrustedPrincipals are the ARNs allowed to call AssumeRole on this role: IAM
	// user ARNs of Options.AccessKeys, or role ARNs (whose sessions may chain).
	// Empty: every configured access key may (not sessions of other roles).
	TrustedPrincipals []string
}

// AccessKey is a long-term access key the server accepts for SigV4-signed
// actions (AssumeRole, GetCallerIdentity).
type AccessKey struct {
	ID     string // e.g. AKIAIOSFODNN7EXAMPLE
	Secret string
	// ARN is the principal, default arn:aws:iam::ACCOUNT:user/stsserver.
	ARN string
	// UserID is what GetCallerIdentity answers, default AIDA… derived from ARN.
	UserID string
}

// Options configure a Server.
type Options struct {
	Roles      []Role
	AccessKeys []AccessKey

	// HTTPClient fetches the providers' discovery documents and JWKS; give it
	// the trust a test issuer needs (httptest.Server.Client()). Default: a
	// client with IDPTimeout.
	HTTPClient *http.Client
	// IDPTimeout bounds fetching discovery and JWKS for one call. Default 5s.
	IDPTimeout time.Duration
	// AllowHTTPIssuer lets ProviderIssuer and jwks_uri be http:// URLs. AWS
	// accepts only https.
	AllowHTTPIssuer bool
	// Now is the server's clock, for token and signature times and
	// expirations. Default time.Now.
	Now func() time.Time
}

// Credentials are temporary credentials the server issued.
type Credentials struct {
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string
	Expiration      time.Time

	Action         string // AssumeRoleWithWebIdentity or AssumeRole
	RoleARN        string
	AssumedRoleARN string // arn:aws:sts::ACCOUNT:assumed-role/NAME/SESSION
	AssumedRoleID  string // AROA…:SESSION
	SessionName    string
	SourceIdentity string

	// PrincipalTags are the session tags, key → value.
	PrincipalTags     map[string]string
	TransitiveTagKeys []string

	// Web identity sessions.
	Subject  string // sub
	Issuer   string // iss
	Audience string // the role's audience the token carried
	Provider string // the OIDC provider ARN

	// AssumeRole sessions: the ARN of the caller.
	Caller string
}

// Call is one request that named an action, as the server saw it.
type Call struct {
	Action    string
	RequestID string
	Time      time.Time

	RoleARN           string
	RoleSessionName   string
	DurationSeconds   int // as requested; 0 if absent or not a number
	SourceIdentity    string
	SessionTags       map[string]string // from the token's tags claim or Tags.member.N
	TransitiveTagKeys []string

	// Web identity: from the decoded token, filled even when verification
	// then failed (so tests can see what was sent).
	Subject string
	Issuer  string
	Claims  map[string]any

	// Signed actions: the access key and ARN of the authenticated caller.
	CallerAccessKeyID string
	Caller            string

	// AccessKeyID of the credentials issued, if any.
	AccessKeyID string

	// ErrorCode and ErrorMessage are the error answered, if any; Injected says
	// it came from FailNext.
	ErrorCode    string
	ErrorMessage string
	Injected     bool
}

// Server is a local STS endpoint. It is an http.Handler.
type Server struct {
	roles      map[string]*role // by ARN
	providers  map[string]*provider
	accessKeys map[string]AccessKey
	client     *http.Client
	idpTimeout time.Duration
	allowHTTP  bool
	now        func() time.Time

	mu       sync.Mutex
	calls    []Call
	failures []*failure
	issued   map[string]Credentials
}

type role struct {
	Role
	account string
	name    string // last path segment
	id      string // AROA…
}

// provider is an IAM OIDC identity provider, made of the roles that trust it.
type provider struct {
	issuer    string
	arnSuffix string // oidc-provider/HOST/PATH
	clientIDs map[string]bool
}

type failure struct {
	action, code, message string
	n                     int
}

// New returns a server for the given account description. It panics if the
// options are invalid (a test setup error), like httptest.NewServer does.
func New(opts Options) *Server {
	s, err := newServer(opts)
	if err != nil {
		panic("stsserver: " + err.Error())
	}
	return s
}

func newServer(opts Options) (*Server, error) {
	s := &Server{
		roles:      map[string]*role{},
		providers:  map[string]*provider{},
		accessKeys: map[string]AccessKey{},
		client:     opts.HTTPClient,
		idpTimeout: opts.IDPTimeout,
		allowHTTP:  opts.AllowHTTPIssuer,
		now:        opts.Now,
		issued:     map[string]Credentials{},
	}
	if s.idpTimeout <= 0 {
		s.idpTimeout = 5 * time.Second
	}
	if s.client == nil {
		s.client = &http.Client{Timeout: s.idpTimeout}
	}
	if s.now == nil {
		s.now = time.Now
	}
	account := defaultAccount
	for i, r := range opts.Roles {
		acct, name, err := parseRoleARN(r.ARN)
		if err != nil {
			return nil, fmt.Errorf("role %d: %w", i, err)
		}
		if i == 0 {
			account = acct
		}
		if _, dup := s.roles[r.ARN]; dup {
			return nil, fmt.Errorf("role %s listed twice", r.ARN)
		}
		if r.MaxSessionDuration == 0 {
			r.MaxSessionDuration = time.Hour
		}
		if r.MaxSessionDuration < time.Hour || r.MaxSessionDuration > 12*time.Hour || r.MaxSessionDuration%time.Second != 0 {
			return nil, fmt.Errorf("role %s: MaxSessionDuration %v is outside [1h, 12h]", r.ARN, r.MaxSessionDuration)
		}
		if r.Audience == "" {
			r.Audience = DefaultAudience
		}
		r.TrustedPrincipals = slices.Clone(r.TrustedPrincipals)
		s.roles[r.ARN] = &role{Role: r, account: acct, name: name, id: "AROA" + derivedID(r.ARN, 17)}
		if r.ProviderIssuer == "" {
			continue
		}
		suffix, err := s.checkIssuerURL(r.ProviderIssuer)
		if err != nil {
			return nil, fmt.Errorf("role %s: ProviderIssuer: %w", r.ARN, err)
		}
		p := s.providers[r.ProviderIssuer]
		if p == nil {
			p = &provider{issuer: r.ProviderIssuer, arnSuffix: "oidc-provider/" + suffix, clientIDs: map[string]bool{}}
			s.providers[r.ProviderIssuer] = p
		}
		p.clientIDs[r.Audience] = true
	}
	for i, k := range opts.AccessKeys {
		if k.ID == "" || k.Secret == "" {
			return nil, fmt.Errorf("access key %d: ID and Secret are required", i)
		}
		if _, dup := s.accessKeys[k.ID]; dup {
			return nil, fmt.Errorf("access key %s listed twice", k.ID)
		}
		if k.ARN == "" {
			k.ARN = "arn:aws:iam::" + account + ":user/stsserver"
		}
		if _, err := accountOf(k.ARN); err != nil {
			return nil, fmt.Errorf("access key %s: %w", k.ID, err)
		}
		if k.UserID == "" {
			k.UserID = "AIDA" + derivedID(k.ARN, 17)
		}
		s.accessKeys[k.ID] = k
	}
	return s, nil
}

// checkIssuerURL checks an issuer or JWKS URL and returns what IAM names the
// provider by: the URL without its scheme.
func (s *Server) checkIssuerURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && s.allowHTTP:
	default:
		return "", fmt.Errorf("%q is not an https URL (set AllowHTTPIssuer for http)", raw)
	}
	if u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("%q must be scheme://host[/path] only", raw)
	}
	return strings.TrimPrefix(raw, u.Scheme+"://"), nil
}

// parseRoleARN splits arn:aws:iam::ACCOUNT:role/[PATH/]NAME.
func parseRoleARN(arn string) (account, name string, err error) {
	parts := strings.SplitN(arn, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" || parts[1] == "" || parts[2] != "iam" || parts[3] != "" ||
		!isAccountID(parts[4]) || !strings.HasPrefix(parts[5], "role/") {
		return "", "", fmt.Errorf("%q is not a role ARN (arn:aws:iam::ACCOUNT:role/NAME)", arn)
	}
	resource := parts[5]
	name = resource[strings.LastIndexByte(resource, '/')+1:]
	if name == "" {
		return "", "", fmt.Errorf("%q has no role name", arn)
	}
	return parts[4], name, nil
}

func accountOf(arn string) (string, error) {
	parts := strings.SplitN(arn, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" || !isAccountID(parts[4]) {
		return "", fmt.Errorf("%q is not an ARN with an account", arn)
	}
	return parts[4], nil
}

func isAccountID(s string) bool {
	if len(s) != 12 {
		return false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// derivedID is a stable IAM-style unique ID suffix (uppercase base32).
func derivedID(seed string, n int) string {
	sum := sha256.Sum256([]byte(seed))
	return base32.StdEncoding.EncodeToString(sum[:])[:n]
}

// Handler returns the server as an http.Handler.
func (s *Server) Handler() http.Handler { return s }

// Start serves the server on a loopback httptest server until the test ends
// and returns its URL, for sts.Options.BaseEndpoint.
func (s *Server) Start(t testing.TB) string {
	t.Helper()
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return ts.URL
}

// FailNext makes the next n calls of action (or of any action, for "*") fail
// with the given STS error code and message, with the HTTP status STS uses for
// that code (see StatusFor). It replaces any failure pending for that action.
// Note that the SDK retries some codes (IDPCommunicationError, Throttling,
// InternalFailure, ServiceUnavailable) — up to three attempts by default.
func (s *Server) FailNext(action, code, message string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures = slices.DeleteFunc(s.failures, func(f *failure) bool { return f.action == action })
	if n > 0 {
		if message == "" {
			message = "stsserver: injected " + code
		}
		s.failures = append(s.failures, &failure{action: action, code: code, message: message, n: n})
	}
}

func (s *Server) takeFailure(action string) *stsError {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.failures {
		if (f.action == action || f.action == "*") && f.n > 0 {
			f.n--
			return newError(f.code, "%s", f.message)
		}
	}
	return nil
}

// Calls returns every request so far that named a supported action, in order,
// including those that failed. Treat Claims as read-only.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Call, len(s.calls))
	for i, c := range s.calls {
		c.SessionTags = maps.Clone(c.SessionTags)
		c.TransitiveTagKeys = slices.Clone(c.TransitiveTagKeys)
		out[i] = c
	}
	return out
}

// Issued looks up credentials the server issued by their access key ID.
func (s *Server) Issued(accessKeyID string) (Credentials, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.issued[accessKeyID]
	if ok {
		c.PrincipalTags = maps.Clone(c.PrincipalTags)
		c.TransitiveTagKeys = slices.Clone(c.TransitiveTagKeys)
	}
	return c, ok
}

func (s *Server) lookupIssued(accessKeyID string) (Credentials, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.issued[accessKeyID]
	return c, ok
}

func (s *Server) record(c Call) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, c)
}

// request is one STS request being answered.
type request struct {
	r      *http.Request
	body   []byte
	params url.Values
	now    time.Time
	call   *Call
}

type actionFunc func(*Server, *request) (any, *stsError)

var actions = map[string]actionFunc{
	"AssumeRoleWithWebIdentity": (*Server).assumeRoleWithWebIdentity,
	"AssumeRole":                (*Server).assumeRole,
	"GetCallerIdentity":         (*Server).getCallerIdentity,
}

// ServeHTTP answers one STS Query request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := s.now()
	requestID := newRequestID()
	w.Header().Set("x-amzn-RequestId", requestID)
	w.Header().Set("Date", now.UTC().Format(http.TimeFormat))

	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			writeError(w, requestID, newError("RequestEntityTooLarge", "The request body is larger than %d bytes", maxBody))
			return
		}
		writeError(w, requestID, newError("MalformedInput", "failed to read the request body: %v", err))
		return
	}
	if r.Method != http.MethodPost && r.Method != http.MethodGet {
		writeError(w, requestID, &stsError{Code: "MethodNotAllowed", Message: "Use POST or GET", Status: http.StatusMethodNotAllowed})
		return
	}
	params, err := parseParams(r, body)
	if err != nil {
		writeError(w, requestID, newError("MalformedQueryString", "%v", err))
		return
	}
	action := params.Get("Action")
	if action == "" {
		writeError(w, requestID, newError("MissingAction", "Missing Action"))
		return
	}
	fn, ok := actions[action]
	if version := params.Get("Version"); !ok || version != apiVersion {
		writeError(w, requestID, newError("InvalidAction", "Could not find operation %s for version %s", action, version))
		return
	}

	call := Call{
		Action:          action,
		RequestID:       requestID,
		Time:            now,
		RoleARN:         params.Get("RoleArn"),
		RoleSessionName: params.Get("RoleSessionName"),
		SourceIdentity:  params.Get("SourceIdentity"),
	}
	if d, err := parseInt(params.Get("DurationSeconds")); err == nil {
		call.DurationSeconds = d
	}
	var result any
	e := s.takeFailure(action)
	if e != nil {
		call.Injected = true
		if action == "AssumeRoleWithWebIdentity" {
			if tok, err := parseToken(params.Get("WebIdentityToken")); err == nil {
				call.noteToken(tok)
			}
		}
	} else {
		result, e = fn(s, &request{r: r, body: body, params: params, now: now, call: &call})
	}
	if e != nil {
		call.ErrorCode, call.ErrorMessage = e.Code, e.Message
		s.record(call)
		writeError(w, requestID, e)
		return
	}
	s.record(call)
	writeResult(w, requestID, action, result)
}

// parseParams reads the Query parameters from the URL and, for a form POST,
// the body (whose values come first).
func parseParams(r *http.Request, body []byte) (url.Values, error) {
	params := url.Values{}
	if r.Method == http.MethodPost && len(body) > 0 {
		mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if err != nil || mt != "application/x-www-form-urlencoded" {
			return nil, fmt.Errorf("unsupported Content-Type %q: use application/x-www-form-urlencoded", r.Header.Get("Content-Type"))
		}
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return nil, fmt.Errorf("malformed form body: %v", err)
		}
		params = form
	}
	query, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, fmt.Errorf("malformed query string: %v", err)
	}
	for k, vs := range query {
		params[k] = append(params[k], vs...)
	}
	return params, nil
}

func writeResult(w http.ResponseWriter, requestID, action string, result any) {
	doc := struct {
		XMLName   xml.Name
		Xmlns     string `xml:"xmlns,attr"`
		Result    any
		RequestID string `xml:"ResponseMetadata>RequestId"`
	}{XMLName: xml.Name{Local: action + "Response"}, Xmlns: xmlns, Result: result, RequestID: requestID}
	out, err := xml.Marshal(doc)
	if err != nil {
		writeError(w, requestID, newError("InternalFailure", "failed to encode the response: %v", err))
		return
	}
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(http.StatusOK)
	w.Write(out)
}

func writeError(w http.ResponseWriter, requestID string, e *stsError) {
	typ := "Sender"
	if e.Status >= 500 {
		typ = "Receiver"
	}
	doc := struct {
		XMLName   xml.Name `xml:"ErrorResponse"`
		Xmlns     string   `xml:"xmlns,attr"`
		Type      string   `xml:"Error>Type"`
		Code      string   `xml:"Error>Code"`
		Message   string   `xml:"Error>Message"`
		RequestID string   `xml:"RequestId"`
	}{Xmlns: xmlns, Type: typ, Code: e.Code, Message: e.Message, RequestID: requestID}
	out, _ := xml.Marshal(doc) // strings only: cannot fail
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(e.Status)
	w.Write(out)
}

// The result documents, field order as STS writes them.

type xmlCredentials struct {
	AccessKeyID     string `xml:"AccessKeyId"`
	SecretAccessKey string `xml:"SecretAccessKey"`
	SessionToken    string `xml:"SessionToken"`
	Expiration      string `xml:"Expiration"`
}

type xmlAssumedRoleUser struct {
	AssumedRoleID string `xml:"AssumedRoleId"`
	Arn           string `xml:"Arn"`
}

type webIdentityResult struct {
	XMLName                     xml.Name `xml:"AssumeRoleWithWebIdentityResult"`
	Credentials                 xmlCredentials
	SubjectFromWebIdentityToken string
	AssumedRoleUser             xmlAssumedRoleUser
	Provider                    string
	Audience                    string
	SourceIdentity              string `xml:",omitempty"`
}

type assumeRoleResult struct {
	XMLName         xml.Name `xml:"AssumeRoleResult"`
	SourceIdentity  string   `xml:",omitempty"`
	AssumedRoleUser xmlAssumedRoleUser
	Credentials     xmlCredentials
}

type callerIdentityResult struct {
	XMLName xml.Name `xml:"GetCallerIdentityResult"`
	Arn     string
	UserID  string `xml:"UserId"`
	Account string
}

// issue creates and remembers temporary credentials for a role session.
func (s *Server) issue(c Credentials, ro *role, now time.Time, d time.Duration) Credentials {
	c.AccessKeyID = "ASIA" + rand.Text()[:16]
	c.SecretAccessKey = randomBase64(30) // 40 characters, like AWS secrets
	c.SessionToken = randomBase64(300)
	c.Expiration = now.Add(d).UTC().Truncate(time.Second)
	c.RoleARN = ro.ARN
	c.AssumedRoleARN = "arn:aws:sts::" + ro.account + ":assumed-role/" + ro.name + "/" + c.SessionName
	c.AssumedRoleID = ro.id + ":" + c.SessionName
	s.mu.Lock()
	s.issued[c.AccessKeyID] = c
	s.mu.Unlock()
	return c
}

func (c Credentials) xml() xmlCredentials {
	return xmlCredentials{
		AccessKeyID:     c.AccessKeyID,
		SecretAccessKey: c.SecretAccessKey,
		SessionToken:    c.SessionToken,
		Expiration:      c.Expiration.UTC().Format(time.RFC3339),
	}
}

func randomBase64(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

func newRequestID() string {
	b := make([]byte, 16)
	rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
