package stsserver

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

const (
	sigV4Algorithm = "AWS4-HMAC-SHA256"
	amzDateFormat  = "20060102T150405Z"
	// maxSigningSkew is how far the signing time may be from the server's clock.
	maxSigningSkew = 5 * time.Minute
)

// principal is an authenticated caller.
type principal struct {
	accessKeyID string
	arn         string // IAM user ARN, or assumed-role ARN for a session
	userID      string
	account     string
	session     *Credentials // nil for a long-term key
}

// authorization is a parsed SigV4 Authorization header.
type authorization struct {
	accessKeyID, date, region, service, terminator string
	signedHeaders                                  []string
	signature                                      string
}

// parseAuthorization parses
// "AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request, SignedHeaders=a;b, Signature=hex".
func parseAuthorization(h string) (authorization, *stsError) {
	var a authorization
	alg, rest, ok := strings.Cut(h, " ")
	if !ok || alg != sigV4Algorithm {
		return a, newError("IncompleteSignature", "Unsupported AWS 'algorithm': '%s'", alg)
	}
	var credential, signedHeaders string
	var haveCred, haveHeaders, haveSig bool
	for part := range strings.SplitSeq(rest, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return a, newError("IncompleteSignature", "Authorization header requires each component to be of the form key=value, not '%s'", part)
		}
		switch k {
		case "Credential":
			credential, haveCred = v, true
		case "SignedHeaders":
			signedHeaders, haveHeaders = v, true
		case "Signature":
			a.signature, haveSig = v, true
		default:
			return a, newError("IncompleteSignature", "Authorization header has an unknown component '%s'", k)
		}
	}
	switch {
	case !haveCred:
		return a, newError("IncompleteSignature", "Authorization header requires 'Credential' parameter.")
	case !haveHeaders:
		return a, newError("IncompleteSignature", "Authorization header requires 'SignedHeaders' parameter.")
	case !haveSig:
		return a, newError("IncompleteSignature", "Authorization header requires 'Signature' parameter.")
	}
	scope := strings.Split(credential, "/")
	if len(scope) != 5 || scope[0] == "" {
		return a, newError("IncompleteSignature", "Credential should have 5 slash-separated parts: 'AKID/DATE/REGION/SERVICE/aws4_request', not '%s'", credential)
	}
	a.accessKeyID, a.date, a.region, a.service, a.terminator = scope[0], scope[1], scope[2], scope[3], scope[4]
	a.signedHeaders = strings.Split(signedHeaders, ";")
	if signedHeaders == "" || !slices.IsSorted(a.signedHeaders) || slices.Contains(a.signedHeaders, "") {
		return a, newError("IncompleteSignature", "SignedHeaders must be a sorted, semicolon-separated list of lowercase header names, not '%s'", signedHeaders)
	}
	for _, name := range a.signedHeaders {
		if name != strings.ToLower(name) {
			return a, newError("IncompleteSignature", "SignedHeaders must be lowercase, not '%s'", name)
		}
	}
	if len(a.signature) != 64 {
		return a, newError("IncompleteSignature", "Signature must be 64 hexadecimal characters")
	}
	return a, nil
}

// authenticate checks a SigV4-signed request: the key must be known (a
// configured access key, or live temporary credentials this server issued with
// their session token) and the signature must be the one its secret gives.
func (s *Server) authenticate(req *request) (*principal, *stsError) {
	r := req.r
	h := r.Header.Get("Authorization")
	if h == "" {
		if req.params.Has("X-Amz-Signature") {
			return nil, newError("IncompleteSignature", "stsserver does not support presigned (query string) requests")
		}
		return nil, newError("MissingAuthenticationToken", msgMissingAuth)
	}
	a, e := parseAuthorization(h)
	if e != nil {
		return nil, e
	}

	// The key.
	var p *principal
	var secret string
	token := r.Header.Get("X-Amz-Security-Token")
	if k, ok := s.accessKeys[a.accessKeyID]; ok {
		if token != "" {
			return nil, newError("InvalidClientTokenId", msgInvalidToken)
		}
		acct, _ := accountOf(k.ARN)
		p, secret = &principal{accessKeyID: k.ID, arn: k.ARN, userID: k.UserID, account: acct}, k.Secret
	} else if cr, ok := s.lookupIssued(a.accessKeyID); ok {
		if subtle.ConstantTimeCompare([]byte(token), []byte(cr.SessionToken)) != 1 {
			return nil, newError("InvalidClientTokenId", msgInvalidToken)
		}
		if !req.now.Before(cr.Expiration) {
			return nil, newError("ExpiredToken", msgExpiredToken)
		}
		acct, _ := accountOf(cr.RoleARN)
		p, secret = &principal{accessKeyID: cr.AccessKeyID, arn: cr.AssumedRoleARN, userID: cr.AssumedRoleID, account: acct, session: &cr}, cr.SecretAccessKey
	} else {
		return nil, newError("InvalidClientTokenId", msgInvalidToken)
	}

	// The scope and the time.
	if a.service != "sts" {
		return nil, newError("SignatureDoesNotMatch", "Credential should be scoped to correct service: 'sts'. ")
	}
	if a.terminator != "aws4_request" {
		return nil, newError("SignatureDoesNotMatch", "Credential should be scoped with a valid terminator: 'aws4_request', not '%s'. ", a.terminator)
	}
	if a.region == "" {
		return nil, newError("SignatureDoesNotMatch", "Credential should be scoped to a valid region. ")
	}
	if !slices.Contains(a.signedHeaders, "host") {
		return nil, newError("IncompleteSignature", "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.")
	}
	amzDate := r.Header.Get("X-Amz-Date")
	var signedAt time.Time
	var err error
	if amzDate != "" {
		signedAt, err = time.Parse(amzDateFormat, amzDate)
	} else if d := r.Header.Get("Date"); d != "" {
		signedAt, err = http.ParseTime(d)
		amzDate = signedAt.UTC().Format(amzDateFormat)
	} else {
		return nil, newError("IncompleteSignature", "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")
	}
	if err != nil {
		return nil, newError("IncompleteSignature", "Date must be in ISO-8601 'basic format'. Got '%s'.", amzDate)
	}
	if day := signedAt.UTC().Format("20060102"); a.date != day {
		return nil, newError("SignatureDoesNotMatch", "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '%s' != '%s', from '%s'.", a.date, day, amzDate)
	}
	nowS := req.now.UTC().Format(amzDateFormat)
	if signedAt.Before(req.now.Add(-maxSigningSkew)) {
		return nil, newError("SignatureDoesNotMatch", "Signature expired: %s is now earlier than %s (%s - 5 min.)", amzDate, req.now.Add(-maxSigningSkew).UTC().Format(amzDateFormat), nowS)
	}
	if signedAt.After(req.now.Add(maxSigningSkew)) {
		return nil, newError("SignatureDoesNotMatch", "Signature not yet current: %s is still later than %s (%s + 5 min.)", amzDate, req.now.Add(maxSigningSkew).UTC().Format(amzDateFormat), nowS)
	}

	// The signature.
	scope := a.date + "/" + a.region + "/" + a.service + "/" + a.terminator
	canonical := canonicalRequest(r, req.body, a.signedHeaders)
	sum := sha256.Sum256([]byte(canonical))
	stringToSign := sigV4Algorithm + "\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(sum[:])
	key := hmacSHA256([]byte("AWS4"+secret), a.date)
	for _, part := range []string{a.region, a.service, a.terminator} {
		key = hmacSHA256(key, part)
	}
	want := hex.EncodeToString(hmacSHA256(key, stringToSign))
	if subtle.ConstantTimeCompare([]byte(want), []byte(strings.ToLower(a.signature))) != 1 {
		return nil, newError("SignatureDoesNotMatch", msgSignatureMismatch)
	}
	return p, nil
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}

// canonicalRequest builds the SigV4 canonical request of r as the client must
// have built it.
func canonicalRequest(r *http.Request, body []byte, signedHeaders []string) string {
	var b strings.Builder
	b.WriteString(r.Method)
	b.WriteByte('\n')
	// Non-S3 services double-encode: the escaped path, escaped again.
	path := r.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	b.WriteString(uriEncode(path, false))
	b.WriteByte('\n')
	b.WriteString(canonicalQuery(r.URL.RawQuery))
	b.WriteByte('\n')
	for _, name := range signedHeaders {
		b.WriteString(name)
		b.WriteByte(':')
		b.WriteString(canonicalHeaderValue(r, name))
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	b.WriteString(strings.Join(signedHeaders, ";"))
	b.WriteByte('\n')
	sum := sha256.Sum256(body)
	b.WriteString(hex.EncodeToString(sum[:]))
	return b.String()
}

func canonicalHeaderValue(r *http.Request, name string) string {
	var values []string
	switch name {
	case "host":
		values = []string{r.Host}
	case "content-length":
		values = slices.Clone(r.Header.Values("Content-Length"))
		if len(values) == 0 && r.ContentLength > 0 {
			values = []string{strconv.FormatInt(r.ContentLength, 10)}
		}
	default:
		values = slices.Clone(r.Header.Values(name))
	}
	for i, v := range values {
		values[i] = strings.TrimSpace(collapseSpaces(v))
	}
	return strings.Join(values, ",")
}

// collapseSpaces replaces each run of spaces with one space.
func collapseSpaces(s string) string {
	if !strings.Contains(s, "  ") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == ' ' && i > 0 && s[i-1] == ' ' {
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// canonicalQuery sorts and re-encodes the query parameters.
func canonicalQuery(raw string) string {
	if raw == "" {
		return ""
	}
	q, _ := url.ParseQuery(raw) // already parsed successfully by parseParams
	type kv struct{ k, v string }
	var params []kv
	for k, vs := range q {
		for _, v := range vs {
			params = append(params, kv{uriEncode(k, true), uriEncode(v, true)})
		}
	}
	slices.SortFunc(params, func(a, b kv) int {
		if c := strings.Compare(a.k, b.k); c != 0 {
			return c
		}
		return strings.Compare(a.v, b.v)
	})
	var b strings.Builder
	for i, p := range params {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(p.k + "=" + p.v)
	}
	return b.String()
}

// uriEncode percent-encodes every byte outside the RFC 3986 unreserved set,
// with uppercase hex; '/' too if encodeSlash.
func uriEncode(s string, encodeSlash bool) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' ||
			c == '-' || c == '.' || c == '_' || c == '~' || (c == '/' && !encodeSlash) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&15])
	}
	return b.String()
}
