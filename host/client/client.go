package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/agentkeys/broker/shared/httpapi"
)

const (
	// MaxResponseSize bounds every response body the client reads.
	MaxResponseSize = 1 << 20
	// DefaultTimeout bounds each request made with the http.Client of [New].
	DefaultTimeout = 30 * time.Second
)

// Client talks to one broker.
type Client struct {
	// BaseURL is the broker's base URL, which is its OIDC issuer: scheme, host,
	// optional port and path, without a trailing slash. Sign-in messages name it.
	BaseURL string
	// HTTP is the client used for requests; nil means one with DefaultTimeout
	// that does not follow redirects.
	HTTP *http.Client
	// UserAgent, if not empty, is sent as the User-Agent header.
	UserAgent string
}

// New returns a Client for the broker at baseURL.
//
// The URL must be https, or http to a loopback address (local development): the
// session token travels in every request. It is normalised as the broker
// normalises its issuer (scheme and host lowercased, an explicit :443 dropped,
// no trailing slash), so that sign-in messages name the issuer exactly. It must
// not carry user info, a query or a fragment.
func New(baseURL string) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // do not repeat the URL, which could hold user info
		}
		return nil, fmt.Errorf("broker URL does not parse: %v", err)
	}
	if u.User != nil {
		return nil, errors.New("broker URL must not carry user info")
	}
	if u.Opaque != "" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(baseURL, "#") {
		return nil, fmt.Errorf("broker URL %q must be scheme://host[:port][/path], without a query or fragment", baseURL)
	}
	u.Scheme = strings.ToLower(u.Scheme)
	u.Host = strings.ToLower(u.Host)
	if u.Hostname() == "" {
		return nil, fmt.Errorf("broker URL %q has no host; want e.g. https://broker.example.com", baseURL)
	}
	switch u.Scheme {
	case "https":
		if u.Port() == "443" {
			u.Host = u.Hostname()
			if strings.Contains(u.Host, ":") {
				u.Host = "[" + u.Host + "]"
			}
		}
	case "http":
		if !isLoopback(u.Hostname()) {
			return nil, fmt.Errorf("broker URL %q must use https (http is allowed only to a loopback address)", baseURL)
		}
	default:
		return nil, fmt.Errorf("broker URL %q must start with https://", baseURL)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return &Client{
		BaseURL:   u.String(),
		HTTP:      &http.Client{Timeout: DefaultTimeout, CheckRedirect: noRedirects},
		UserAgent: "agentkeys-client",
	}, nil
}

// noRedirects stops the client at a redirect. Requests carry a bearer and a
// body meant for the broker; rather than replay them elsewhere, the client
// reports the redirect as an error.
func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

var defaultHTTP = &http.Client{Timeout: DefaultTimeout, CheckRedirect: noRedirects}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Error is an error answer from the broker.
//
// Kind and Message come from the broker's {"error": kind, "message": …} body.
// The kinds are "unauthorized" (401: the session is missing, invalid, expired
// or revoked, or a sign-in was rejected), "bad_request" (400, including requests
// outside policy, whose message gives the bounds), "not_found",
// "method_not_allowed", "payload_too_large", "audit_error" and "internal" (500),
// "upstream_error" (502), "enclave_unavailable" and "unavailable" (503). When
// the body is not the broker's JSON (a proxy's error page, say), Kind is empty
// and Message is a short, sanitised prefix of the body.
type Error struct {
	Status  int
	Kind    string
	Message string
}

func (e *Error) Error() string {
	kind := e.Kind
	if kind == "" {
		kind = strings.ToLower(http.StatusText(e.Status))
	}
	s := fmt.Sprintf("broker answered %d", e.Status)
	if kind != "" {
		s += " " + kind
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// errorFrom builds the Error for a non-2xx answer.
func errorFrom(resp *http.Response, body []byte) *Error {
	e := &Error{Status: resp.StatusCode}
	var v httpapi.Error
	if json.Unmarshal(body, &v) == nil && v.Error != "" {
		e.Kind, e.Message = sanitize(v.Error, 64), sanitize(v.Message, 500)
		return e
	}
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		e.Message = "the broker URL redirects"
		if loc := resp.Header.Get("Location"); loc != "" {
			e.Message += " to " + sanitize(loc, 200) + "; use the final address as the broker URL"
		}
		return e
	}
	e.Message = sanitize(string(body), 200)
	return e
}

// sanitize makes text from the network safe to print: no control or format
// characters (no terminal escapes, no bidi overrides), whitespace runs folded to
// one space, at most n runes.
func sanitize(s string, n int) string {
	var b strings.Builder
	space, count := false, 0
	for _, r := range s {
		if unicode.IsSpace(r) {
			space = true
			continue
		}
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			continue
		}
		if count == n {
			b.WriteString("…")
			break
		}
		if space && b.Len() > 0 {
			b.WriteByte(' ')
			count++
		}
		space = false
		b.WriteRune(r)
		count++
	}
	return b.String()
}

// do sends a request and decodes a 2xx JSON answer into out. bearer, if not
// empty, goes in the Authorization header (and nowhere else).
func (c *Client) do(ctx context.Context, method, path, bearer string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("failed to encode the request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.BaseURL+path, rd)
	if err != nil {
		return fmt.Errorf("failed to make the request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.UserAgent != "" {
		req.Header.Set("User-Agent", c.UserAgent)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	hc := c.HTTP
	if hc == nil {
		hc = defaultHTTP
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("failed to reach the broker: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseSize+1))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		// Whatever arrived, even cut short, is enough to explain the error.
		return errorFrom(resp, data)
	}
	if err != nil {
		return fmt.Errorf("failed to read the broker's answer: %w", err)
	}
	if len(data) > MaxResponseSize {
		return fmt.Errorf("the broker's answer to %s %s is larger than %d bytes", method, path, MaxResponseSize)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("the broker's answer to %s %s is not the expected JSON: %v", method, path, err)
	}
	return nil
}

// checkToken rejects a session token that cannot be a bearer, without quoting it.
func checkToken(token string) error {
	if token == "" {
		return errors.New("no session token; sign in first")
	}
	for i := 0; i < len(token); i++ {
		if token[i] <= ' ' || token[i] >= 0x7f {
			return errors.New("the session token is malformed (it holds spaces or control characters); sign in again")
		}
	}
	return nil
}
