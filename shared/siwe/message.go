package siwe

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// MaxMessageSize is the largest message, in bytes, that Parse accepts.
const MaxMessageSize = 8 << 10

// Message is an EIP-4361 Sign-In with Ethereum message. Empty strings, zero
// times and an empty Resources slice stand for absent optional fields.
type Message struct {
	// Scheme is the optional URI scheme of the requesting origin, such as
	// "https". When set, the first line reads "https://domain wants you…".
	Scheme string
	// Domain is the RFC 3986 authority (host and optional port) that asks
	// for the sign-in.
	Domain string
	// Address is the signing account: "0x" and 40 hex digits, EIP-55
	// checksummed if it mixes cases.
	Address string
	// Statement is an optional human-readable line: letters, digits, space
	// and the RFC 3986 reserved and unreserved characters.
	Statement string
	// URI is the absolute RFC 3986 URI of the resource the sign-in is for.
	URI string
	// Version must be "1".
	Version string
	// ChainID is the EIP-155 chain the session is bound to.
	ChainID uint64
	// Nonce is at least 8 ASCII letters or digits, chosen by the relying
	// party to prevent replay.
	Nonce string
	// IssuedAt is when the message was made. It is required.
	IssuedAt time.Time
	// ExpirationTime and NotBefore bound the message's validity; zero
	// means absent.
	ExpirationTime, NotBefore time.Time
	// RequestID is an optional identifier of the request (RFC 3986 pchars).
	RequestID string
	// Resources are optional absolute URIs.
	Resources []string
}

// The fixed parts of a message.
const (
	headerSuffix     = " wants you to sign in with your Ethereum account:"
	prefixURI        = "URI: "
	prefixVersion    = "Version: "
	prefixChainID    = "Chain ID: "
	prefixNonce      = "Nonce: "
	prefixIssuedAt   = "Issued At: "
	prefixExpiration = "Expiration Time: "
	prefixNotBefore  = "Not Before: "
	prefixRequestID  = "Request ID: "
	lineResources    = "Resources:"
	prefixResource   = "- "
)

// String renders m as the text to sign. The rendering is only meaningful for
// a message that passes Validate: fields are not escaped, so an invalid field
// (one holding a newline, say) would change the layout.
func (m *Message) String() string {
	var b strings.Builder
	if m.Scheme != "" {
		b.WriteString(m.Scheme)
		b.WriteString("://")
	}
	b.WriteString(m.Domain)
	b.WriteString(headerSuffix + "\n")
	b.WriteString(m.Address)
	b.WriteString("\n\n")
	if m.Statement != "" {
		b.WriteString(m.Statement)
		b.WriteString("\n")
	}
	b.WriteString("\n")
	b.WriteString(prefixURI + m.URI + "\n")
	b.WriteString(prefixVersion + m.Version + "\n")
	b.WriteString(prefixChainID + strconv.FormatUint(m.ChainID, 10) + "\n")
	b.WriteString(prefixNonce + m.Nonce + "\n")
	b.WriteString(prefixIssuedAt + formatTime(m.IssuedAt))
	if !m.ExpirationTime.IsZero() {
		b.WriteString("\n" + prefixExpiration + formatTime(m.ExpirationTime))
	}
	if !m.NotBefore.IsZero() {
		b.WriteString("\n" + prefixNotBefore + formatTime(m.NotBefore))
	}
	if m.RequestID != "" {
		b.WriteString("\n" + prefixRequestID + m.RequestID)
	}
	if len(m.Resources) > 0 {
		b.WriteString("\n" + lineResources)
		for _, r := range m.Resources {
			b.WriteString("\n" + prefixResource + r)
		}
	}
	return b.String()
}

// Validate reports whether every field of m is one that Parse would accept,
// and so whether m.String() is a well-formed message that parses back to m.
// Call it before signing a message you built.
func (m *Message) Validate() error {
	if m.Scheme != "" {
		if err := checkScheme(m.Scheme); err != nil {
			return inField("scheme", err)
		}
	}
	if err := checkAuthority(m.Domain, true); err != nil {
		return inField("domain", err)
	}
	if err := checkAddress(m.Address); err != nil {
		return inField("address", err)
	}
	if m.Statement != "" {
		if err := checkStatement(m.Statement); err != nil {
			return inField("statement", err)
		}
	}
	if err := checkURI(m.URI); err != nil {
		return inField("URI", err)
	}
	if err := checkVersion(m.Version); err != nil {
		return inField("version", err)
	}
	if err := checkNonce(m.Nonce); err != nil {
		return inField("nonce", err)
	}
	if m.IssuedAt.IsZero() {
		return malformed("issued-at: not set")
	}
	if err := checkTimeRange(m.IssuedAt); err != nil {
		return inField("issued-at", err)
	}
	if !m.ExpirationTime.IsZero() {
		if err := checkTimeRange(m.ExpirationTime); err != nil {
			return inField("expiration-time", err)
		}
	}
	if !m.NotBefore.IsZero() {
		if err := checkTimeRange(m.NotBefore); err != nil {
			return inField("not-before", err)
		}
	}
	if m.RequestID != "" {
		if err := checkChars(m.RequestID, isPchar, true); err != nil {
			return inField("request-id", err)
		}
	}
	for i, r := range m.Resources {
		if err := checkURI(r); err != nil {
			return inField(fmt.Sprintf("resource %d", i), err)
		}
	}
	if n := len(m.String()); n > MaxMessageSize {
		return malformed("message is %d bytes, more than the %d allowed", n, MaxMessageSize)
	}
	return nil
}

// Parse parses an EIP-4361 message. It is strict: LF line endings only, no
// trailing newline, the fields in the order of the EIP and no others, RFC 3339
// times, absolute URIs and an EIP-55-valid address. Errors wrap ErrMalformed
// (and ErrChecksum for a bad address checksum) and name the offending line.
//
// To verify a signed message, use VerifyText, which also checks the signature
// over text itself.
func Parse(text string) (*Message, error) {
	if len(text) > MaxMessageSize {
		return nil, malformed("message is %d bytes, more than the %d allowed", len(text), MaxMessageSize)
	}
	if i := strings.IndexByte(text, '\r'); i >= 0 {
		line := 1 + strings.Count(text[:i], "\n")
		return nil, atLine(line, "", malformed("carriage return: lines must end with LF alone"))
	}
	p := &parser{lines: strings.Split(text, "\n")}
	if last := len(p.lines) - 1; last > 0 && p.lines[last] == "" {
		return nil, atLine(last, "", malformed("message ends with a newline"))
	}
	return p.message()
}

// parser walks the lines of a message in order.
type parser struct {
	lines []string
	next  int // index of the next line; its line number is next+1
}

// line consumes and returns the next line, which the caller expects to exist.
func (p *parser) line(what string) (string, int, *invalidError) {
	if p.next >= len(p.lines) {
		return "", 0, atLine(p.next+1, "", malformed("expected %s, found the end of the message", what))
	}
	p.next++
	return p.lines[p.next-1], p.next, nil
}

// field consumes the next line, which must start with prefix, and returns
// the rest of it.
func (p *parser) field(prefix string) (string, int, *invalidError) {
	s, n, err := p.line(strconv.Quote(prefix))
	if err != nil {
		return "", 0, err
	}
	if !strings.HasPrefix(s, prefix) {
		return "", 0, atLine(n, "", malformed("expected %q", prefix))
	}
	return s[len(prefix):], n, nil
}

// optional consumes the next line if it starts with prefix.
func (p *parser) optional(prefix string) (string, int, bool) {
	if p.next < len(p.lines) && strings.HasPrefix(p.lines[p.next], prefix) {
		p.next++
		return p.lines[p.next-1][len(prefix):], p.next, true
	}
	return "", 0, false
}

func (p *parser) message() (*Message, error) {
	m := new(Message)

	// Line 1: [ scheme "://" ] domain " wants you to sign in with your Ethereum account:"
	header, n, err := p.line("the header")
	if err != nil {
		return nil, err
	}
	origin, ok := strings.CutSuffix(header, headerSuffix)
	if !ok {
		return nil, atLine(n, "", malformed("expected %q at the end of the line", headerSuffix))
	}
	// An authority never contains '/', so "://" can only end a scheme.
	if scheme, domain, ok := strings.Cut(origin, "://"); ok {
		if err := checkScheme(scheme); err != nil {
			return nil, atLine(n, "scheme", err)
		}
		m.Scheme, origin = scheme, domain
	}
	if err := checkAuthority(origin, true); err != nil {
		return nil, atLine(n, "domain", err)
	}
	m.Domain = origin

	// Line 2: address.
	if m.Address, n, err = p.line("the address"); err != nil {
		return nil, err
	}
	if err := checkAddress(m.Address); err != nil {
		return nil, atLine(n, "address", err)
	}

	// An empty line, then either an empty line, or the statement and an
	// empty line.
	if err := p.empty("after the address"); err != nil {
		return nil, err
	}
	s, n, err := p.line("an empty line or the statement")
	if err != nil {
		return nil, err
	}
	if s != "" {
		if err := checkStatement(s); err != nil {
			return nil, atLine(n, "statement", err)
		}
		m.Statement = s
		if err := p.empty("after the statement"); err != nil {
			return nil, err
		}
	} else if p.next < len(p.lines) && p.lines[p.next] == "" {
		// [ statement LF ] with an empty statement: the ABNF allows it,
		// but Message cannot tell it from no statement.
		return nil, atLine(p.next+1, "", malformed("empty statement line (omit the line instead)"))
	}

	uri, n, err := p.field(prefixURI)
	if err != nil {
		return nil, err
	}
	if err := checkURI(uri); err != nil {
		return nil, atLine(n, "URI", err)
	}
	m.URI = uri

	if m.Version, n, err = p.field(prefixVersion); err != nil {
		return nil, err
	}
	if err := checkVersion(m.Version); err != nil {
		return nil, atLine(n, "version", err)
	}

	chain, n, err := p.field(prefixChainID)
	if err != nil {
		return nil, err
	}
	if m.ChainID, err = parseChainID(chain); err != nil {
		return nil, atLine(n, "chain ID", err)
	}

	if m.Nonce, n, err = p.field(prefixNonce); err != nil {
		return nil, err
	}
	if err := checkNonce(m.Nonce); err != nil {
		return nil, atLine(n, "nonce", err)
	}

	issued, n, err := p.field(prefixIssuedAt)
	if err != nil {
		return nil, err
	}
	if m.IssuedAt, err = parseTime(issued); err != nil {
		return nil, atLine(n, "issued-at", err)
	}

	if v, n, ok := p.optional(prefixExpiration); ok {
		if m.ExpirationTime, err = parseTime(v); err != nil {
			return nil, atLine(n, "expiration-time", err)
		}
	}
	if v, n, ok := p.optional(prefixNotBefore); ok {
		if m.NotBefore, err = parseTime(v); err != nil {
			return nil, atLine(n, "not-before", err)
		}
	}
	if v, n, ok := p.optional(prefixRequestID); ok {
		if v == "" {
			// *pchar allows it, but Message cannot tell it from absent.
			return nil, atLine(n, "request-id", malformed("empty (omit the line instead)"))
		}
		if err := checkChars(v, isPchar, true); err != nil {
			return nil, atLine(n, "request-id", err)
		}
		m.RequestID = v
	}
	if p.next < len(p.lines) && p.lines[p.next] == lineResources {
		p.next++
		for p.next < len(p.lines) {
			r, n, err := p.field(prefixResource)
			if err != nil {
				return nil, err
			}
			if err := checkURI(r); err != nil {
				return nil, atLine(n, "resource", err)
			}
			m.Resources = append(m.Resources, r)
		}
		if len(m.Resources) == 0 {
			// *( LF resource ) allows it, but Message cannot tell it
			// from absent.
			return nil, atLine(p.next, "", malformed("%q with no resources (omit the line instead)", lineResources))
		}
	}

	if p.next < len(p.lines) {
		return nil, p.unexpected()
	}
	return m, nil
}

// empty consumes the next line, which must be empty.
func (p *parser) empty(where string) *invalidError {
	s, n, err := p.line("an empty line " + where)
	if err != nil {
		return err
	}
	if s != "" {
		return atLine(n, "", malformed("expected an empty line %s", where))
	}
	return nil
}

// unexpected describes the line at p.next, which no rule accepts.
func (p *parser) unexpected() *invalidError {
	s, n := p.lines[p.next], p.next+1
	for _, known := range []string{
		prefixURI, prefixVersion, prefixChainID, prefixNonce, prefixIssuedAt,
		prefixExpiration, prefixNotBefore, prefixRequestID, lineResources,
	} {
		if strings.HasPrefix(s, known) {
			return atLine(n, "", malformed("field %q is repeated or out of order", strings.TrimSuffix(known, " ")))
		}
	}
	return atLine(n, "", malformed("unexpected line %s", snippet(s)))
}

// checkStatement checks statement = *( reserved / unreserved / " " ).
func checkStatement(s string) *invalidError {
	return checkChars(s, func(c byte) bool { return isReserved(c) || isUnreserved(c) || c == ' ' }, false)
}

func checkVersion(v string) *invalidError {
	if v != "1" {
		return malformed("unsupported version %s, want \"1\"", snippet(v))
	}
	return nil
}

// checkNonce checks nonce = 8*( ALPHA / DIGIT ).
func checkNonce(s string) *invalidError {
	if err := checkChars(s, func(c byte) bool { return isAlpha(c) || isDigit(c) }, false); err != nil {
		return err
	}
	if len(s) < 8 {
		return malformed("%d characters, want at least 8", len(s))
	}
	return nil
}

// parseChainID parses chain-id = 1*DIGIT as a uint64, rejecting leading
// zeros so that each chain has one spelling.
func parseChainID(s string) (uint64, *invalidError) {
	if s == "" {
		return 0, malformed("empty")
	}
	if err := checkChars(s, isDigit, false); err != nil {
		return 0, err
	}
	if len(s) > 1 && s[0] == '0' {
		return 0, malformed("leading zero in %s", snippet(s))
	}
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, malformed("%s does not fit in 64 bits", snippet(s))
	}
	return id, nil
}

// CheckTime checks m's times against now, allowing for clocks that disagree
// by up to skew (a negative skew counts as zero): the message must not be
// issued after now+skew, must not have expired by now-skew, and its
// not-before time must be reached by now+skew. The errors wrap
// ErrIssuedInFuture, ErrExpired and ErrNotYetValid.
func (m *Message) CheckTime(now time.Time, skew time.Duration) error {
	skew = max(skew, 0)
	if m.IssuedAt.After(now.Add(skew)) {
		return fmt.Errorf("%w: issued at %s, now is %s", ErrIssuedInFuture, formatTime(m.IssuedAt), formatTime(now))
	}
	if !m.ExpirationTime.IsZero() && !now.Add(-skew).Before(m.ExpirationTime) {
		return fmt.Errorf("%w: expired at %s, now is %s", ErrExpired, formatTime(m.ExpirationTime), formatTime(now))
	}
	if !m.NotBefore.IsZero() && now.Add(skew).Before(m.NotBefore) {
		return fmt.Errorf("%w: valid from %s, now is %s", ErrNotYetValid, formatTime(m.NotBefore), formatTime(now))
	}
	return nil
}
