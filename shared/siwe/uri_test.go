package siwe

import (
	"errors"
	"testing"
)

func TestParseURI(t *testing.T) {
	tests := []struct {
		in   string
		want URI
	}{
		{"https://broker.example.com/v1/session", URI{Scheme: "https", HasAuthority: true, Host: "broker.example.com", Path: "/v1/session"}},
		{"https://Broker.Example.COM", URI{Scheme: "https", HasAuthority: true, Host: "Broker.Example.COM"}},
		// Nothing is decoded: a percent-encoded host stays encoded.
		{"https://broker%2eexample.com/", URI{Scheme: "https", HasAuthority: true, Host: "broker%2eexample.com", Path: "/"}},
		{"https://evil@broker.example.com:8443/a?b#c", URI{Scheme: "https", HasAuthority: true, Userinfo: "evil", HasUserinfo: true,
			Host: "broker.example.com", Port: "8443", HasPort: true, Path: "/a", Query: "b", HasQuery: true, Fragment: "c", HasFragment: true}},
		{"https://@broker.example.com:", URI{Scheme: "https", HasAuthority: true, HasUserinfo: true, Host: "broker.example.com", HasPort: true}},
		{"https://[::1]:80/x?", URI{Scheme: "https", HasAuthority: true, Host: "[::1]", Port: "80", HasPort: true, Path: "/x", HasQuery: true}},
		{"urn:ietf:rfc:3986", URI{Scheme: "urn", Path: "ietf:rfc:3986"}},
		{"file:///etc/hosts#", URI{Scheme: "file", HasAuthority: true, Path: "/etc/hosts", HasFragment: true}},
	}
	for _, tt := range tests {
		got, err := ParseURI(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseURI(%q) = %+v, %v\nwant %+v", tt.in, got, err, tt.want)
		}
		if s := uriString(got); s != tt.in {
			t.Errorf("ParseURI(%q).String() = %q", tt.in, s)
		}
	}
	for _, bad := range []string{"", "broker.example.com", "https://bro ker", "https://a%zz", "https://[::1", "https://h:8a", "1http://x", "https://h/\u00e9"} {
		if _, err := ParseURI(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseURI(%q): %v, want ErrMalformed", bad, err)
		}
	}
}

// uriString reassembles u; for a URI from ParseURI it is the text parsed.
func uriString(u URI) string {
	s := u.Scheme + ":"
	if u.HasAuthority {
		s += "//"
		if u.HasUserinfo {
			s += u.Userinfo + "@"
		}
		s += u.Host
		if u.HasPort {
			s += ":" + u.Port
		}
	}
	s += u.Path
	if u.HasQuery {
		s += "?" + u.Query
	}
	if u.HasFragment {
		s += "#" + u.Fragment
	}
	return s
}

// FuzzParseURI checks that ParseURI accepts exactly what the message parser
// accepts as a URI, and that its parts are the text, cut without changes.
func FuzzParseURI(f *testing.F) {
	for _, s := range []string{"https://broker.example.com/v1/session", "https://u:p@h:1/p?q#f", "urn:a", "https://[v1.x]/", "a://%41"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseURI(s)
		if (err == nil) != (checkURI(s) == nil) {
			t.Fatalf("ParseURI(%q) = %v, checkURI disagrees", s, err)
		}
		if err == nil && uriString(u) != s {
			t.Fatalf("ParseURI(%q) reassembles to %q", s, uriString(u))
		}
	})
}
