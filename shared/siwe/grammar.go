package siwe

import (
	"net/netip"
	"strings"
	"time"
)

// This file holds the character-level grammar of EIP-4361 and of the parts of
// RFC 3986 (URI, authority, scheme) and RFC 3339 (date-time) that it uses.
// Each check returns an *invalidError whose message names the first problem.

func isAlpha(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
func isDigit(c byte) bool { return '0' <= c && c <= '9' }
func isHex(c byte) bool   { return isDigit(c) || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' }

// RFC 3986 section 2.
func isUnreserved(c byte) bool {
	return isAlpha(c) || isDigit(c) || c == '-' || c == '.' || c == '_' || c == '~'
}
func isSubDelim(c byte) bool  { return strings.IndexByte("!$&'()*+,;=", c) >= 0 }
func isGenDelim(c byte) bool  { return strings.IndexByte(":/?#[]@", c) >= 0 }
func isReserved(c byte) bool  { return isGenDelim(c) || isSubDelim(c) }
func isPchar(c byte) bool     { return isUnreserved(c) || isSubDelim(c) || c == ':' || c == '@' }
func isUserinfo(c byte) bool  { return isUnreserved(c) || isSubDelim(c) || c == ':' }
func isRegName(c byte) bool   { return isUnreserved(c) || isSubDelim(c) }
func isPathChar(c byte) bool  { return isPchar(c) || c == '/' }
func isQueryChar(c byte) bool { return isPchar(c) || c == '/' || c == '?' }

// checkChars reports the first byte of s that is neither allowed nor, if pct,
// part of a well-formed percent-encoding ("%" HEXDIG HEXDIG).
func checkChars(s string, allowed func(byte) bool, pct bool) *invalidError {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if allowed(c) {
			continue
		}
		if pct && c == '%' {
			if i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
				i += 2
				continue
			}
			return malformed("bad percent-encoding at byte %d", i)
		}
		return malformed("character %s at byte %d is not allowed", snippet(s[i:i+1]), i)
	}
	return nil
}

// checkScheme checks an RFC 3986 scheme: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ).
func checkScheme(s string) *invalidError {
	if s == "" {
		return malformed("empty scheme")
	}
	if !isAlpha(s[0]) {
		return malformed("scheme %s does not start with a letter", snippet(s))
	}
	return checkChars(s, func(c byte) bool {
		return isAlpha(c) || isDigit(c) || c == '+' || c == '-' || c == '.'
	}, false)
}

// checkAuthority checks an RFC 3986 authority: [ userinfo "@" ] host [ ":" port ].
// The domain of a message must name a host; the authority of a URI may not
// (as in "file:///etc/hosts").
func checkAuthority(a string, requireHost bool) *invalidError {
	_, err := splitAuthority(a, requireHost)
	return err
}

// splitAuthority checks an authority and splits it, as written, into the
// fields of u that describe it.
func splitAuthority(a string, requireHost bool) (u URI, _ *invalidError) {
	hostport := a
	if i := strings.IndexByte(a, '@'); i >= 0 {
		if err := checkChars(a[:i], isUserinfo, true); err != nil {
			return u, malformed("userinfo: %s", err.msg)
		}
		u.Userinfo, u.HasUserinfo = a[:i], true
		hostport = a[i+1:]
	}
	host, port, hasPort := hostport, "", false
	if strings.HasPrefix(hostport, "[") {
		end := strings.IndexByte(hostport, ']')
		if end < 0 {
			return u, malformed("IP literal has no closing ']'")
		}
		if err := checkIPLiteral(hostport[1:end]); err != nil {
			return u, err
		}
		host = hostport[:end+1]
		rest := hostport[end+1:]
		if rest != "" {
			if rest[0] != ':' {
				return u, malformed("unexpected %s after IP literal", snippet(rest))
			}
			port, hasPort = rest[1:], true
		}
	} else {
		if i := strings.LastIndexByte(hostport, ':'); i >= 0 {
			host, port, hasPort = hostport[:i], hostport[i+1:], true
		}
		if err := checkChars(host, isRegName, true); err != nil {
			return u, malformed("host: %s", err.msg)
		}
	}
	if hasPort {
		if err := checkChars(port, isDigit, false); err != nil {
			return u, malformed("port: %s", err.msg)
		}
	}
	if requireHost && host == "" {
		return u, malformed("no host")
	}
	u.Host, u.Port, u.HasPort = host, port, hasPort
	return u, nil
}

// checkIPLiteral checks what is inside the brackets of an RFC 3986
// IP-literal: an IPv6 address (without a zone) or an IPvFuture.
func checkIPLiteral(s string) *invalidError {
	if len(s) > 0 && (s[0] == 'v' || s[0] == 'V') {
		// IPvFuture = "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" )
		dot := strings.IndexByte(s, '.')
		if dot < 2 || dot == len(s)-1 || checkChars(s[1:dot], isHex, false) != nil ||
			checkChars(s[dot+1:], isUserinfo, false) != nil {
			return malformed("bad IPvFuture literal")
		}
		return nil
	}
	if strings.IndexByte(s, '%') >= 0 {
		return malformed("IPv6 zones are not allowed")
	}
	addr, err := netip.ParseAddr(s)
	if err != nil || !addr.Is6() {
		return malformed("bad IPv6 literal")
	}
	return nil
}

// checkURI checks an absolute RFC 3986 URI:
// scheme ":" hier-part [ "?" query ] [ "#" fragment ].
func checkURI(s string) *invalidError {
	_, err := splitURI(s)
	return err
}

// URI is an absolute RFC 3986 URI split into its parts exactly as written:
// nothing is percent-decoded, case-folded or resolved. Compare these parts,
// not those of net/url, when the question is whether a signed message names
// a given origin: net/url decodes "%2e" in a host and keeps userinfo apart,
// so "https://evil@broker%2eexample.com" would look like broker.example.com.
type URI struct {
	Scheme string
	// HasAuthority is set when the URI has "//" authority after the scheme.
	HasAuthority bool
	// Userinfo is what precedes "@" in the authority; HasUserinfo tells an
	// empty userinfo from none.
	Userinfo    string
	HasUserinfo bool
	// Host is the reg-name, IPv4 address or "[IP-literal]" as written.
	Host string
	// Port is the port's digits as written; HasPort tells "host:" from "host".
	Port    string
	HasPort bool
	// Path, Query and Fragment are as written; HasQuery and HasFragment tell
	// an empty query or fragment from none.
	Path        string
	Query       string
	HasQuery    bool
	Fragment    string
	HasFragment bool
}

// ParseURI checks that s is an absolute RFC 3986 URI, as [Parse] requires of a
// message's URI and resources, and returns its parts as written. Errors wrap
// ErrMalformed.
func ParseURI(s string) (URI, error) {
	u, err := splitURI(s)
	if err != nil {
		return URI{}, err
	}
	return u, nil
}

func splitURI(s string) (URI, *invalidError) {
	var u URI
	if s == "" {
		return u, malformed("empty URI")
	}
	colon := strings.IndexByte(s, ':')
	if colon < 0 {
		return u, malformed("%s is not an absolute URI", snippet(s))
	}
	if err := checkScheme(s[:colon]); err != nil {
		return u, malformed("not an absolute URI: %s", err.msg)
	}
	scheme, rest := s[:colon], s[colon+1:]
	var fragment, query string
	var hasFragment, hasQuery bool
	if i := strings.IndexByte(rest, '#'); i >= 0 {
		if err := checkChars(rest[i+1:], isQueryChar, true); err != nil {
			return u, malformed("fragment: %s", err.msg)
		}
		fragment, hasFragment = rest[i+1:], true
		rest = rest[:i]
	}
	if i := strings.IndexByte(rest, '?'); i >= 0 {
		if err := checkChars(rest[i+1:], isQueryChar, true); err != nil {
			return u, malformed("query: %s", err.msg)
		}
		query, hasQuery = rest[i+1:], true
		rest = rest[:i]
	}
	path := rest
	if strings.HasPrefix(rest, "//") {
		// "//" authority path-abempty
		auth := rest[2:]
		path = ""
		if i := strings.IndexByte(auth, '/'); i >= 0 {
			auth, path = auth[:i], auth[i:]
		}
		a, err := splitAuthority(auth, false)
		if err != nil {
			return URI{}, malformed("authority: %s", err.msg)
		}
		u = a
		u.HasAuthority = true
	}
	// Without an authority the path cannot start with "//" (that was taken
	// as an authority above), so path-absolute, path-rootless and path-empty
	// all reduce to this.
	if err := checkChars(path, isPathChar, true); err != nil {
		return URI{}, malformed("path: %s", err.msg)
	}
	u.Scheme, u.Path = scheme, path
	u.Query, u.HasQuery, u.Fragment, u.HasFragment = query, hasQuery, fragment, hasFragment
	return u, nil
}

// rfc3339Shape is the fixed-width start of an RFC 3339 date-time; '0' stands
// for a digit.
const rfc3339Shape = "0000-00-00T00:00:00"

// parseTime parses an RFC 3339 date-time strictly:
// YYYY-MM-DD "T" hh:mm:ss [ "." 1*9DIGIT ] ( "Z" / ("+" / "-") hh:mm ).
// The Go parser alone is too lenient for hostile input: it also accepts a
// comma before the fraction, offsets such as +24:00, and more than nine
// fractional digits (which it drops). It returns the time in UTC.
func parseTime(s string) (time.Time, *invalidError) {
	bad := func() (time.Time, *invalidError) {
		return time.Time{}, malformed("%s is not an RFC 3339 date-time", snippet(s))
	}
	if len(s) <= len(rfc3339Shape) {
		return bad()
	}
	for i := 0; i < len(rfc3339Shape); i++ {
		if rfc3339Shape[i] == '0' && !isDigit(s[i]) || rfc3339Shape[i] != '0' && s[i] != rfc3339Shape[i] {
			return bad()
		}
	}
	rest := s[len(rfc3339Shape):]
	if rest[0] == '.' {
		n := 1
		for n < len(rest) && isDigit(rest[n]) {
			n++
		}
		if n == 1 || n > 10 {
			return bad()
		}
		rest = rest[n:]
	}
	switch {
	case rest == "Z":
	case len(rest) == 6 && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':' &&
		isDigit(rest[1]) && isDigit(rest[2]) && isDigit(rest[4]) && isDigit(rest[5]):
		if rest[1:3] > "23" || rest[4:6] > "59" {
			return bad()
		}
	default:
		return bad()
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		// Out-of-range month, day, hour, minute or second (including
		// leap seconds, which Go does not represent).
		return bad()
	}
	t = t.UTC()
	if err := checkTimeRange(t); err != nil {
		return time.Time{}, err
	}
	return t, nil
}

// checkTimeRange rejects times that the canonical rendering cannot carry:
// the zero time means "absent" in a Message, and RFC 3339 has four-digit
// years.
func checkTimeRange(t time.Time) *invalidError {
	if t.IsZero() {
		return malformed("0001-01-01T00:00:00Z is not allowed")
	}
	if y := t.UTC().Year(); y < 0 || y > 9999 {
		return malformed("year %d (in UTC) is outside 0000-9999", y)
	}
	return nil
}

// formatTime renders t in UTC as RFC 3339, with second precision unless t has
// a fractional second, which is then kept so that the rendering round-trips.
func formatTime(t time.Time) string {
	t = t.UTC()
	if t.Nanosecond() == 0 {
		return t.Format(time.RFC3339)
	}
	return t.Format(time.RFC3339Nano)
}
