package siwe

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func baseMessage() *Message {
	return &Message{
		Domain:   "example.com",
		Address:  "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2",
		URI:      "https://example.com/login",
		Version:  "1",
		ChainID:  1,
		Nonce:    "32891756",
		IssuedAt: time.Date(2021, 9, 30, 16, 25, 24, 0, time.UTC),
	}
}

func equalMessages(a, b *Message) bool {
	return a.Scheme == b.Scheme && a.Domain == b.Domain && a.Address == b.Address &&
		a.Statement == b.Statement && a.URI == b.URI && a.Version == b.Version &&
		a.ChainID == b.ChainID && a.Nonce == b.Nonce && a.IssuedAt.Equal(b.IssuedAt) &&
		a.ExpirationTime.Equal(b.ExpirationTime) && a.NotBefore.Equal(b.NotBefore) &&
		a.RequestID == b.RequestID && slices.Equal(a.Resources, b.Resources)
}

// roundTripCases are valid messages, each a change to baseMessage. want, if
// set, is the exact rendering.
var roundTripCases = []struct {
	name string
	edit func(m *Message)
	want string
}{
	{name: "minimal", edit: func(m *Message) {}, want: "" +
		"example.com wants you to sign in with your Ethereum account:\n" +
		"0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2\n" +
		"\n" +
		"\n" +
		"URI: https://example.com/login\n" +
		"Version: 1\n" +
		"Chain ID: 1\n" +
		"Nonce: 32891756\n" +
		"Issued At: 2021-09-30T16:25:24Z"},
	{name: "statement", edit: func(m *Message) { m.Statement = "I accept the ExampleOrg Terms of Service: https://example.com/tos" }, want: "" +
		"example.com wants you to sign in with your Ethereum account:\n" +
		"0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2\n" +
		"\n" +
		"I accept the ExampleOrg Terms of Service: https://example.com/tos\n" +
		"\n" +
		"URI: https://example.com/login\n" +
		"Version: 1\n" +
		"Chain ID: 1\n" +
		"Nonce: 32891756\n" +
		"Issued At: 2021-09-30T16:25:24Z"},
	{name: "scheme", edit: func(m *Message) { m.Scheme = "https" }},
	{name: "scheme with plus", edit: func(m *Message) { m.Scheme = "chrome-extension+x.y" }},
	{name: "port", edit: func(m *Message) { m.Domain = "example.com:3388" }},
	{name: "empty port", edit: func(m *Message) { m.Domain = "example.com:" }},
	{name: "userinfo", edit: func(m *Message) { m.Domain = "user:pa%20ss@example.com:443" }},
	{name: "IPv4", edit: func(m *Message) { m.Domain = "127.0.0.1:8080" }},
	{name: "IPv6", edit: func(m *Message) { m.Scheme, m.Domain = "http", "[::1]:8080" }},
	{name: "IPvFuture", edit: func(m *Message) { m.Domain = "[v1.fe80::a+en1]" }},
	{name: "localhost", edit: func(m *Message) { m.Domain = "localhost" }},
	{name: "every statement character", edit: func(m *Message) {
		m.Statement = " :/?#[]@!$&'()*+,;= -._~ azAZ09 "
	}},
	{name: "lowercase address", edit: func(m *Message) { m.Address = strings.ToLower(m.Address) }},
	{name: "uppercase address", edit: func(m *Message) { m.Address = "0x" + strings.ToUpper(m.Address[2:]) }},
	{name: "URN URI", edit: func(m *Message) { m.URI = "urn:uuid:6ba7b810-9dad-11d1-80b4-00c04fd430c8" }},
	{name: "DID URI", edit: func(m *Message) { m.URI = "did:pkh:eip155:1:0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2" }},
	{name: "URI with empty path", edit: func(m *Message) { m.URI = "x:" }},
	{name: "URI with empty authority", edit: func(m *Message) { m.URI = "file:///etc/hosts" }},
	{name: "URI with query and fragment", edit: func(m *Message) { m.URI = "https://a.example/p/a%2Fth?q=1&r=/?#frag/?" }},
	{name: "chain ID 0", edit: func(m *Message) { m.ChainID = 0 }},
	{name: "chain ID max", edit: func(m *Message) { m.ChainID = 1<<64 - 1 }},
	{name: "long nonce", edit: func(m *Message) { m.Nonce = strings.Repeat("aZ9", 100) }},
	{name: "expiration", edit: func(m *Message) { m.ExpirationTime = m.IssuedAt.Add(time.Hour) }},
	{name: "not before", edit: func(m *Message) { m.NotBefore = m.IssuedAt.Add(-time.Hour) }},
	{name: "request ID", edit: func(m *Message) { m.RequestID = "req-1:a@b%20c!$&'()*+,;=" }},
	{name: "one resource", edit: func(m *Message) {
		m.Resources = []string{"ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/"}
	}},
	{name: "fractional seconds", edit: func(m *Message) {
		m.IssuedAt = m.IssuedAt.Add(123456789)
		m.ExpirationTime = m.IssuedAt.Add(time.Hour + 500*time.Millisecond)
	}},
	{name: "non-UTC location", edit: func(m *Message) { m.IssuedAt = m.IssuedAt.In(time.FixedZone("x", 5*3600+1800)) }},
	{name: "year 0 and 9999", edit: func(m *Message) {
		m.IssuedAt = time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC)
		m.ExpirationTime = time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)
	}},
	{name: "every field", edit: func(m *Message) {
		m.Scheme = "https"
		m.Domain = "login.example.com:8443"
		m.Statement = "Sign in."
		m.URI = "https://login.example.com:8443/siwe"
		m.ChainID = 8453
		m.Nonce = "Zx81kQ0pLm2vR7sT"
		m.ExpirationTime = m.IssuedAt.Add(5 * time.Minute)
		m.NotBefore = m.IssuedAt.Add(-5 * time.Second)
		m.RequestID = "req-7f3a"
		m.Resources = []string{"urn:a:b", "https://[2001:db8::1]:8080/a?b#c"}
	}, want: "" +
		"https://login.example.com:8443 wants you to sign in with your Ethereum account:\n" +
		"0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2\n" +
		"\n" +
		"Sign in.\n" +
		"\n" +
		"URI: https://login.example.com:8443/siwe\n" +
		"Version: 1\n" +
		"Chain ID: 8453\n" +
		"Nonce: Zx81kQ0pLm2vR7sT\n" +
		"Issued At: 2021-09-30T16:25:24Z\n" +
		"Expiration Time: 2021-09-30T16:30:24Z\n" +
		"Not Before: 2021-09-30T16:25:19Z\n" +
		"Request ID: req-7f3a\n" +
		"Resources:\n" +
		"- urn:a:b\n" +
		"- https://[2001:db8::1]:8080/a?b#c"},
}

func TestRoundTrip(t *testing.T) {
	for _, tc := range roundTripCases {
		t.Run(tc.name, func(t *testing.T) {
			m := baseMessage()
			tc.edit(m)
			if err := m.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			text := m.String()
			if tc.want != "" && text != tc.want {
				t.Fatalf("String:\n%s\nwant:\n%s", text, tc.want)
			}
			got, err := Parse(text)
			if err != nil {
				t.Fatalf("Parse(%q): %v", text, err)
			}
			if !equalMessages(got, m) {
				t.Fatalf("Parse(String()) = %+v, want %+v", got, m)
			}
			if got.String() != text {
				t.Fatalf("String(Parse(text)) = %q, want %q", got.String(), text)
			}
		})
	}
}

// TestTestdataMessages parses the messages in testdata/messages (the EIP's
// examples among them) and checks that they are canonical: String gives back
// the exact bytes.
func TestTestdataMessages(t *testing.T) {
	files, err := filepath.Glob("testdata/messages/*.txt")
	if err != nil || len(files) < 5 {
		t.Fatalf("testdata/messages: %v, %d files", err, len(files))
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		m, err := Parse(string(data))
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if m.String() != string(data) {
			t.Errorf("%s: String() =\n%s", f, m.String())
		}
	}
	m, err := Parse(readFile(t, "testdata/messages/eip-explicit-scheme.txt"))
	if err != nil {
		t.Fatal(err)
	}
	want := baseMessage()
	want.Scheme = "https"
	want.Statement = "I accept the ExampleOrg Terms of Service: https://example.com/tos"
	want.Resources = []string{
		"ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/",
		"https://example.com/my-web2-claim.json",
	}
	if !equalMessages(m, want) {
		t.Errorf("eip-explicit-scheme.txt = %+v, want %+v", m, want)
	}
}

func readFile(t testing.TB, name string) string {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// TestNonCanonicalTimes covers texts that parse but differ from their
// rendering: other RFC 3339 spellings of the same instant.
func TestNonCanonicalTimes(t *testing.T) {
	want := time.Date(2021, 9, 30, 16, 25, 24, 0, time.UTC)
	for _, s := range []string{
		"2021-09-30T16:25:24.000Z",
		"2021-09-30T16:25:24.000000000Z",
		"2021-09-30T18:25:24+02:00",
		"2021-09-30T11:55:24-04:30",
		"2021-09-30T16:25:24-00:00",
	} {
		text := strings.Replace(baseMessage().String(), "2021-09-30T16:25:24Z", s, 1)
		m, err := Parse(text)
		if err != nil {
			t.Errorf("%s: %v", s, err)
			continue
		}
		if !m.IssuedAt.Equal(want) || m.IssuedAt.Location() != time.UTC {
			t.Errorf("%s: IssuedAt = %v, want %v in UTC", s, m.IssuedAt, want)
		}
		if m.String() != baseMessage().String() {
			t.Errorf("%s: String() = %q", s, m.String())
		}
	}
}

// full is a canonical message with every field; the rejection cases edit it.
const full = "" +
	"example.com wants you to sign in with your Ethereum account:\n" + // 1
	"0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2\n" + // 2
	"\n" + // 3
	"I accept the ExampleOrg Terms of Service: https://example.com/tos\n" + // 4
	"\n" + // 5
	"URI: https://example.com/login\n" + // 6
	"Version: 1\n" + // 7
	"Chain ID: 1\n" + // 8
	"Nonce: 32891756\n" + // 9
	"Issued At: 2021-09-30T16:25:24Z\n" + // 10
	"Expiration Time: 2021-10-01T16:25:24Z\n" + // 11
	"Not Before: 2021-09-30T16:25:24Z\n" + // 12
	"Request ID: req-1\n" + // 13
	"Resources:\n" + // 14
	"- ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/\n" + // 15
	"- https://example.com/my-web2-claim.json" // 16

// minimal is the canonical message with no optional field.
var minimal = baseMessage().String()

func replace(s, old, new string) string {
	if !strings.Contains(s, old) {
		panic("test edit does not apply: " + old)
	}
	return strings.Replace(s, old, new, 1)
}

func withIssuedAt(s string) string {
	return replace(full, "Issued At: 2021-09-30T16:25:24Z", "Issued At: "+s)
}

// rejectCases are texts Parse must reject, with the error kind and a part of
// the message that says what was wrong.
var rejectCases = []struct {
	name, text string
	kind       error
	msg        string
}{
	{"empty", "", ErrMalformed, "line 1: expected \" wants you"},
	{"CRLF", strings.ReplaceAll(full, "\n", "\r\n"), ErrMalformed, "line 1: carriage return"},
	{"CR in a line", replace(full, "Nonce: 32891756", "Nonce: 32891756\r"), ErrMalformed, "line 9: carriage return"},
	{"trailing newline", full + "\n", ErrMalformed, "line 16: message ends with a newline"},
	{"trailing newline, minimal", minimal + "\n", ErrMalformed, "ends with a newline"},
	{"leading space", " " + full, ErrMalformed, "line 1: domain"},
	{"byte order mark", "\ufeff" + full, ErrMalformed, "line 1: domain"},
	{"oversize", replace(full, "Terms of Service", strings.Repeat("a", MaxMessageSize)), ErrMalformed, "more than the 8192 allowed"},
	{"header wording", replace(full, "sign in with your Ethereum account:", "sign in with your Ethereum account"), ErrMalformed, "line 1: expected"},
	{"header case", replace(full, "wants you", "Wants you"), ErrMalformed, "line 1:"},
	{"header only", "example.com wants you to sign in with your Ethereum account:", ErrMalformed, "line 2: expected the address, found the end"},
	{"empty domain", replace(full, "example.com wants", " wants"), ErrMalformed, "line 1: domain: no host"},
	{"domain with path", replace(full, "example.com wants", "example.com/x wants"), ErrMalformed, "line 1: domain"},
	{"domain with space", replace(full, "example.com wants", "evil.com example.com wants"), ErrMalformed, "line 1: domain"},
	{"domain bad port", replace(full, "example.com wants", "example.com:80a wants"), ErrMalformed, "line 1: domain: port"},
	{"domain two colons", replace(full, "example.com wants", "a:1:2 wants"), ErrMalformed, "line 1: domain: host"},
	{"domain two at signs", replace(full, "example.com wants", "a@b@example.com wants"), ErrMalformed, "line 1: domain"},
	{"domain unclosed IPv6", replace(full, "example.com wants", "[::1 wants"), ErrMalformed, "no closing"},
	{"domain IPv4 in brackets", replace(full, "example.com wants", "[127.0.0.1] wants"), ErrMalformed, "bad IPv6"},
	{"domain IPv6 zone", replace(full, "example.com wants", "[fe80::1%25en0] wants"), ErrMalformed, "zones"},
	{"domain bad userinfo", replace(full, "example.com wants", "u^x@example.com wants"), ErrMalformed, "line 1: domain: userinfo"},
	{"domain junk after IPv6", replace(full, "example.com wants", "[::1]x wants"), ErrMalformed, "after IP literal"},
	{"domain bad IPvFuture", replace(full, "example.com wants", "[v1.] wants"), ErrMalformed, "bad IPvFuture"},
	{"domain bad percent", replace(full, "example.com wants", "exa%2mple.com wants"), ErrMalformed, "percent-encoding"},
	{"empty scheme", replace(full, "example.com wants", "://example.com wants"), ErrMalformed, "line 1: scheme: empty"},
	{"bad scheme", replace(full, "example.com wants", "1https://example.com wants"), ErrMalformed, "line 1: scheme"},
	{"scheme with path", replace(full, "example.com wants", "https://example.com/ wants"), ErrMalformed, "line 1: domain"},
	{"address short", replace(full, "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2", "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc"), ErrMalformed, "line 2: address"},
	{"address no 0x", replace(full, "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2", "C02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2"), ErrMalformed, "line 2: address"},
	{"address not hex", replace(full, "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2", "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Ccg"), ErrMalformed, "line 2: address"},
	{"address bad checksum", replace(full, "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2", "0xc02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2"), ErrChecksum, "line 2: address: mixed-case"},
	{"address bad checksum is malformed", replace(full, "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2", "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756CC2"), ErrMalformed, "EIP-55"},
	{"no empty line after address", replace(full, "Cc2\n\n", "Cc2\n"), ErrMalformed, "line 3: expected an empty line after the address"},
	{"statement with LF", replace(full, "Terms of Service: ", "Terms of Service:\n"), ErrMalformed, "line 5: expected an empty line after the statement"},
	{"statement without empty line", replace(full, "/tos\n\n", "/tos\n"), ErrMalformed, "line 5: expected an empty line after the statement"},
	{"empty statement", replace(minimal, "\n\n\n", "\n\n\n\n"), ErrMalformed, "line 5: empty statement line"},
	{"statement non-ASCII", replace(full, "I accept", "I accépt"), ErrMalformed, "line 4: statement: character"},
	{"statement percent", replace(full, "I accept", "100% I accept"), ErrMalformed, "line 4: statement"},
	{"statement quote", replace(full, "I accept", `"I accept"`), ErrMalformed, "line 4: statement"},
	{"statement tab", replace(full, "I accept", "I\taccept"), ErrMalformed, "line 4: statement"},
	{"statement NUL", replace(full, "I accept", "I\x00accept"), ErrMalformed, "line 4: statement"},
	{"missing URI", replace(full, "URI: https://example.com/login\n", ""), ErrMalformed, `line 6: expected "URI: "`},
	{"missing URI, no statement", replace(minimal, "URI: https://example.com/login\n", ""), ErrMalformed, `line 5: expected "URI: "`},
	{"URI not absolute", replace(full, "URI: https://example.com/login", "URI: example.com/login"), ErrMalformed, "line 6: URI: \"example.com/login\" is not an absolute URI"},
	{"URI relative with colon", replace(full, "URI: https://example.com/login", "URI: /a:b"), ErrMalformed, "line 6: URI"},
	{"URI empty", replace(full, "URI: https://example.com/login", "URI: "), ErrMalformed, "line 6: URI: empty"},
	{"URI with space", replace(full, "URI: https://example.com/login", "URI: https://example.com/log in"), ErrMalformed, "line 6: URI: path"},
	{"URI trailing space", replace(full, "URI: https://example.com/login", "URI: https://example.com/login "), ErrMalformed, "line 6: URI"},
	{"URI bad authority", replace(full, "URI: https://example.com/login", "URI: https://exa mple.com/login"), ErrMalformed, "line 6: URI: authority"},
	{"URI bad query", replace(full, "URI: https://example.com/login", "URI: https://example.com/login?a=<b>"), ErrMalformed, "line 6: URI: query"},
	{"URI bad fragment", replace(full, "URI: https://example.com/login", "URI: https://example.com/login#a#b"), ErrMalformed, "line 6: URI: fragment"},
	{"missing Version", replace(full, "Version: 1\n", ""), ErrMalformed, `line 7: expected "Version: "`},
	{"version 2", replace(full, "Version: 1", "Version: 2"), ErrMalformed, `line 7: version: unsupported version "2"`},
	{"version 01", replace(full, "Version: 1", "Version: 01"), ErrMalformed, "line 7: version"},
	{"lowercase field name", replace(full, "Version: 1", "version: 1"), ErrMalformed, `line 7: expected "Version: "`},
	{"field without space", replace(full, "Version: 1", "Version:1"), ErrMalformed, `line 7: expected "Version: "`},
	{"chain ID empty", replace(full, "Chain ID: 1", "Chain ID: "), ErrMalformed, "line 8: chain ID: empty"},
	{"chain ID leading zero", replace(full, "Chain ID: 1", "Chain ID: 01"), ErrMalformed, "line 8: chain ID: leading zero"},
	{"chain ID negative", replace(full, "Chain ID: 1", "Chain ID: -1"), ErrMalformed, "line 8: chain ID"},
	{"chain ID hex", replace(full, "Chain ID: 1", "Chain ID: 0x1"), ErrMalformed, "line 8: chain ID"},
	{"chain ID overflow", replace(full, "Chain ID: 1", "Chain ID: 18446744073709551616"), ErrMalformed, "line 8: chain ID: \"18446744073709551616\" does not fit"},
	{"missing Nonce", replace(full, "Nonce: 32891756\n", ""), ErrMalformed, `line 9: expected "Nonce: "`},
	{"nonce short", replace(full, "Nonce: 32891756", "Nonce: 3289175"), ErrMalformed, "line 9: nonce: 7 characters, want at least 8"},
	{"nonce empty", replace(full, "Nonce: 32891756", "Nonce: "), ErrMalformed, "line 9: nonce"},
	{"nonce dash", replace(full, "Nonce: 32891756", "Nonce: 3289-1756"), ErrMalformed, "line 9: nonce: character \"-\""},
	{"nonce non-ASCII", replace(full, "Nonce: 32891756", "Nonce: 3289175é6"), ErrMalformed, "line 9: nonce"},
	{"nonce space", replace(full, "Nonce: 32891756", "Nonce: 32891756 "), ErrMalformed, "line 9: nonce"},
	{"missing Issued At", replace(minimal, "\nIssued At: 2021-09-30T16:25:24Z", ""), ErrMalformed, `line 9: expected "Issued At: ", found the end`},
	{"time with space", withIssuedAt("2021-09-30 16:25:24Z"), ErrMalformed, "line 10: issued-at: \"2021-09-30 16:25:24Z\" is not an RFC 3339"},
	{"time without zone", withIssuedAt("2021-09-30T16:25:24"), ErrMalformed, "line 10: issued-at"},
	{"time lowercase t", withIssuedAt("2021-09-30t16:25:24Z"), ErrMalformed, "line 10: issued-at"},
	{"time lowercase z", withIssuedAt("2021-09-30T16:25:24z"), ErrMalformed, "line 10: issued-at"},
	{"time month 13", withIssuedAt("2021-13-30T16:25:24Z"), ErrMalformed, "line 10: issued-at"},
	{"time February 29", withIssuedAt("2021-02-29T16:25:24Z"), ErrMalformed, "line 10: issued-at"},
	{"time hour 24", withIssuedAt("2021-09-30T24:00:00Z"), ErrMalformed, "line 10: issued-at"},
	{"time leap second", withIssuedAt("2016-12-31T23:59:60Z"), ErrMalformed, "line 10: issued-at"},
	{"time offset +24:00", withIssuedAt("2021-09-30T16:25:24+24:00"), ErrMalformed, "line 10: issued-at"},
	{"time offset minutes 60", withIssuedAt("2021-09-30T16:25:24+01:60"), ErrMalformed, "line 10: issued-at"},
	{"time offset without colon", withIssuedAt("2021-09-30T16:25:24+0100"), ErrMalformed, "line 10: issued-at"},
	{"time comma fraction", withIssuedAt("2021-09-30T16:25:24,5Z"), ErrMalformed, "line 10: issued-at"},
	{"time empty fraction", withIssuedAt("2021-09-30T16:25:24.Z"), ErrMalformed, "line 10: issued-at"},
	{"time ten fraction digits", withIssuedAt("2021-09-30T16:25:24.1234567891Z"), ErrMalformed, "line 10: issued-at"},
	{"time short year", withIssuedAt("21-09-30T16:25:24Z"), ErrMalformed, "line 10: issued-at"},
	{"time unix", withIssuedAt("1633019124"), ErrMalformed, "line 10: issued-at"},
	{"time zero", withIssuedAt("0001-01-01T00:00:00Z"), ErrMalformed, "line 10: issued-at: 0001-01-01T00:00:00Z is not allowed"},
	{"expiration zero", replace(full, "Expiration Time: 2021-10-01T16:25:24Z", "Expiration Time: 0001-01-01T00:00:00Z"), ErrMalformed, "line 11: expiration-time: 0001-01-01T00:00:00Z"},
	{"time before year 0 in UTC", withIssuedAt("0000-01-01T00:00:00+01:00"), ErrMalformed, "year -1"},
	{"time after year 9999 in UTC", withIssuedAt("9999-12-31T23:00:00-02:00"), ErrMalformed, "year 10000"},
	{"bad expiration", replace(full, "Expiration Time: 2021-10-01T16:25:24Z", "Expiration Time: tomorrow"), ErrMalformed, "line 11: expiration-time"},
	{"bad not-before", replace(full, "Not Before: 2021-09-30T16:25:24Z", "Not Before: 2021-09-30"), ErrMalformed, "line 12: not-before"},
	{"fields out of order", replace(full, "Expiration Time: 2021-10-01T16:25:24Z\nNot Before: 2021-09-30T16:25:24Z", "Not Before: 2021-09-30T16:25:24Z\nExpiration Time: 2021-10-01T16:25:24Z"), ErrMalformed, `line 12: field "Expiration Time:" is repeated or out of order`},
	{"required fields swapped", replace(full, "Version: 1\nChain ID: 1", "Chain ID: 1\nVersion: 1"), ErrMalformed, `line 7: expected "Version: "`},
	{"repeated nonce", replace(full, "Nonce: 32891756\n", "Nonce: 32891756\nNonce: 32891757\n"), ErrMalformed, `line 10: expected "Issued At: "`},
	{"repeated request ID", replace(full, "Request ID: req-1\n", "Request ID: req-1\nRequest ID: req-2\n"), ErrMalformed, `line 14: field "Request ID:" is repeated`},
	{"unknown line", replace(full, "Request ID: req-1\n", "Request ID: req-1\nFoo: bar\n"), ErrMalformed, `line 14: unexpected line "Foo: bar"`},
	{"unknown line at end", minimal + "\nFoo: bar", ErrMalformed, `line 10: unexpected line`},
	{"empty line at end", minimal + "\n\nx", ErrMalformed, `line 10: unexpected line ""`},
	{"long unknown line", minimal + "\n" + strings.Repeat("x", 4000), ErrMalformed, `line 10: unexpected line "xxxxxxxxxxxxxxxxxxxxxxxx"...`},
	{"request ID empty", replace(full, "Request ID: req-1", "Request ID: "), ErrMalformed, "line 13: request-id: empty"},
	{"request ID space", replace(full, "Request ID: req-1", "Request ID: req 1"), ErrMalformed, "line 13: request-id: character"},
	{"request ID slash", replace(full, "Request ID: req-1", "Request ID: req/1"), ErrMalformed, "line 13: request-id"},
	{"resources without items", replace(full, "\n- ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/\n- https://example.com/my-web2-claim.json", ""), ErrMalformed, `line 14: "Resources:" with no resources`},
	{"empty resource", replace(full, "- https://example.com/my-web2-claim.json", "- "), ErrMalformed, "line 16: resource: empty URI"},
	{"resource without space", replace(full, "- https://example.com/my-web2-claim.json", "-https://example.com/my-web2-claim.json"), ErrMalformed, `line 16: expected "- "`},
	{"resource dash only", replace(full, "- https://example.com/my-web2-claim.json", "-"), ErrMalformed, `line 16: expected "- "`},
	{"resource relative", replace(full, "- https://example.com/my-web2-claim.json", "- /my-web2-claim.json"), ErrMalformed, "line 16: resource"},
	{"resource two spaces", replace(full, "- https://example.com/my-web2-claim.json", "-  https://example.com/my-web2-claim.json"), ErrMalformed, "line 16: resource"},
	{"line after resources", full + "\nNonce: 12345678", ErrMalformed, `line 17: expected "- "`},
	{"Resources with trailing space", replace(full, "Resources:", "Resources: "), ErrMalformed, "line 14: field \"Resources:\""},
}

func TestParseRejects(t *testing.T) {
	if _, err := Parse(full); err != nil {
		t.Fatalf("the base of the rejection cases does not parse: %v", err)
	}
	for _, tc := range rejectCases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Parse(tc.text)
			if err == nil {
				t.Fatalf("Parse accepted %q as %+v", tc.text, m)
			}
			if m != nil {
				t.Errorf("Parse returned a message with an error")
			}
			if !errors.Is(err, tc.kind) || !errors.Is(err, ErrMalformed) {
				t.Errorf("error %q is not %v", err, tc.kind)
			}
			if !strings.HasPrefix(err.Error(), "siwe: ") || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not mention %q", err, tc.msg)
			}
			if len(err.Error()) > 160 {
				t.Errorf("error is %d bytes long: %q", len(err.Error()), err)
			}
		})
	}
}

func TestValidateRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(m *Message)
		msg  string
	}{
		{"statement with LF", func(m *Message) { m.Statement = "a\n\nURI: https://evil.example" }, "statement"},
		{"domain with LF", func(m *Message) { m.Domain = "evil.example wants you to sign in with your Ethereum account:\nx" }, "domain"},
		{"domain empty", func(m *Message) { m.Domain = "" }, "domain: no host"},
		{"bad scheme", func(m *Message) { m.Scheme = "ht tp" }, "scheme"},
		{"address empty", func(m *Message) { m.Address = "" }, "address"},
		{"URI empty", func(m *Message) { m.URI = "" }, "URI: empty"},
		{"version empty", func(m *Message) { m.Version = "" }, "version"},
		{"nonce short", func(m *Message) { m.Nonce = "abc" }, "nonce"},
		{"issued-at unset", func(m *Message) { m.IssuedAt = time.Time{} }, "issued-at: not set"},
		{"issued-at year 10000", func(m *Message) { m.IssuedAt = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }, "issued-at: year 10000"},
		{"expiration before year 0", func(m *Message) { m.ExpirationTime = time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC) }, "expiration-time"},
		{"not-before year 10000 in UTC", func(m *Message) {
			m.NotBefore = time.Date(9999, 12, 31, 23, 0, 0, 0, time.FixedZone("", -2*3600))
		}, "not-before"},
		{"request ID with LF", func(m *Message) { m.RequestID = "a\nb" }, "request-id"},
		{"empty resource", func(m *Message) { m.Resources = []string{"https://a.example", ""} }, "resource 1: empty URI"},
		{"oversize", func(m *Message) { m.Resources = []string{"x:" + strings.Repeat("a", MaxMessageSize)} }, "more than the 8192 allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := baseMessage()
			tc.edit(m)
			err := m.Validate()
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Validate = %v, want ErrMalformed mentioning %q", err, tc.msg)
			}
		})
	}
	m := baseMessage()
	m.Address = "0xc02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2"
	if err := m.Validate(); !errors.Is(err, ErrChecksum) {
		t.Fatalf("Validate with a bad checksum = %v, want ErrChecksum", err)
	}
}

func TestCheckTime(t *testing.T) {
	issued := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	m := baseMessage()
	m.IssuedAt = issued
	m.NotBefore = issued.Add(time.Minute)
	m.ExpirationTime = issued.Add(10 * time.Minute)
	skew := 30 * time.Second
	for _, tc := range []struct {
		name string
		now  time.Time
		skew time.Duration
		want error
	}{
		{"valid", issued.Add(5 * time.Minute), skew, nil},
		{"issued in future", issued.Add(-31 * time.Second), skew, ErrIssuedInFuture},
		{"issued in future within skew, not yet valid", issued.Add(-29 * time.Second), skew, ErrNotYetValid},
		{"not yet valid", issued.Add(29 * time.Second), skew, ErrNotYetValid},
		{"not before reached within skew", issued.Add(30 * time.Second), skew, nil},
		{"not before reached exactly", issued.Add(time.Minute), 0, nil},
		{"not before just missed", issued.Add(time.Minute - 1), 0, ErrNotYetValid},
		{"expired", issued.Add(11 * time.Minute), skew, ErrExpired},
		{"expiry within skew", issued.Add(10*time.Minute + 29*time.Second), skew, nil},
		{"expired at exactly the expiration time", issued.Add(10 * time.Minute), 0, ErrExpired},
		{"just before expiry", issued.Add(10*time.Minute - 1), 0, nil},
		{"negative skew is zero", issued.Add(10*time.Minute - 1), -time.Hour, nil},
		{"other time zone", issued.Add(5 * time.Minute).In(time.FixedZone("", -8*3600)), 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := m.CheckTime(tc.now, tc.skew)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("CheckTime = %v, want %v", err, tc.want)
			}
		})
	}
	// Without NotBefore and ExpirationTime only issued-at is checked.
	open := baseMessage()
	if err := open.CheckTime(open.IssuedAt.Add(100*365*24*time.Hour), 0); err != nil {
		t.Fatalf("CheckTime without expiration = %v", err)
	}
}

func BenchmarkParse(b *testing.B) {
	for b.Loop() {
		if _, err := Parse(full); err != nil {
			b.Fatal(err)
		}
	}
}

func TestSnippet(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", `""`},
		{"abc", `"abc"`},
		{strings.Repeat("a", 24), `"` + strings.Repeat("a", 24) + `"`},
		{strings.Repeat("a", 25), `"` + strings.Repeat("a", 24) + `"...`},
		{strings.Repeat("\xcb", 100), `"\xcb\xcb\xcb\xcb\xcb\xcb"...`},
		{"\x1b[2J", `"\x1b[2J"`},
	} {
		if got := snippet(tc.in); got != tc.want {
			t.Errorf("snippet(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}
