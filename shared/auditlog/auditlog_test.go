package auditlog

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

const wallet = "0x2c7ea6d19df0dcf1c91b351f975fb2827ff80e5f"

func mintEntry() Entry {
	return Entry{
		Version: Version, Time: 1767225600, Kind: KindOIDCJWT, Outcome: OutcomeOK, Wallet: wallet,
		SessionID: "9f86d081884c7d659a2feaa0c55ad015", Audience: "sts.amazonaws.com", ExpiresAt: 1767225900,
		Kid: "2Eio0Zb3zpxc4Q3WwOx4X6nRhdmGsOUtpXh2GfbZ6ek", JTI: "41",
		JWTSHA256: JWTHash("eyJhbGciOiJFUzI1NiJ9.e30.c2ln"), ChainID: 1,
	}
}

func stsEntry() Entry {
	return Entry{
		Version: Version, Time: 1767225601, Kind: KindAWSCreds, Outcome: OutcomeOK, Wallet: wallet,
		ExpiresAt: 1767229200, JTI: "41", HostAsserted: true, AccessKeyID: "ASIAEXAMPLE000000001",
		Detail: "web identity <role> & \"quoted\"",
	}
}

// TestGolden: the encodings are fixed byte for byte (they are what the leaf
// hashes cover) and decode back to the same entries.
func TestGolden(t *testing.T) {
	for _, tc := range []struct {
		file string
		e    Entry
	}{
		{"entry-oidc-jwt.json", mintEntry()},
		{"entry-aws-creds-host-asserted.json", stsEntry()},
	} {
		t.Run(tc.file, func(t *testing.T) {
			got, err := tc.e.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", tc.file)
			if *update {
				os.WriteFile(path, got, 0o644)
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("encoding changed:\ngot  %s\nwant %s", got, want)
			}
			back, err := Parse(want)
			if err != nil || !reflect.DeepEqual(back, tc.e) {
				t.Fatalf("Parse: %v\n%+v", err, back)
			}
		})
	}
}

// TestParseRefusesOtherEncodings: only the canonical bytes parse.
func TestParseRefusesOtherEncodings(t *testing.T) {
	good, _ := mintEntry().Marshal()
	s := string(good)
	for name, b := range map[string]string{
		"space":          strings.Replace(s, `"v":1,`, `"v": 1,`, 1),
		"reordered":      strings.Replace(s, `{"v":1,"time":1767225600,`, `{"time":1767225600,"v":1,`, 1),
		"duplicate key":  strings.Replace(s, `"v":1,`, `"v":1,"v":1,`, 1),
		"unknown key":    strings.Replace(s, `"v":1,`, `"v":1,"x":1,`, 1),
		"empty optional": strings.Replace(s, `"chain_id":1,`, `"chain_id":0,`, 1),
		"newline":        s + "\n",
		"version":        strings.Replace(s, `"v":1,`, `"v":2,`, 1),
		"upper wallet":   strings.Replace(s, wallet, strings.ToUpper(wallet[:2])+wallet[2:], 1),
		"jti not index":  strings.Replace(s, `"jti":"41"`, `"jti":"041"`, 1),
		"jti bad name":   strings.Replace(s, `"jti":"41"`, `"jti":"Host-A/41"`, 1),
		"jti no name":    strings.Replace(s, `"jti":"41"`, `"jti":"/41"`, 1),
		"escaped html":   strings.Replace(s, `sts.amazonaws.com`, `sts\u003c`, 1),
		"bad kind":       strings.Replace(s, `oidc_jwt`, `OIDC`, 1),
	} {
		if _, err := Parse([]byte(b)); err == nil {
			t.Errorf("%s: Parse accepted %s", name, b)
		}
	}
}

// FuzzParse: Parse never panics, and whatever it accepts re-encodes to the
// same bytes.
func FuzzParse(f *testing.F) {
	for _, e := range []Entry{mintEntry(), stsEntry()} {
		b, _ := e.Marshal()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Parse(b)
		if err != nil {
			return
		}
		again, err := e.Marshal()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("accepted %q, re-encodes to %q (%v)", b, again, err)
		}
	})
}

func TestCheckpoint(t *testing.T) {
	c := Checkpoint{Origin: "broker.example.com/audit", Tree: tlogTree(13)}
	text := c.Format()
	back, err := ParseCheckpoint(text)
	if err != nil || back != c {
		t.Fatalf("%q: %v %+v", text, err, back)
	}
	for _, bad := range []string{
		strings.Replace(text, "13", "013", 1),
		strings.Replace(text, "13", "-1", 1),
		text + "ext\n",
		strings.TrimSuffix(text, "\n"),
		strings.Replace(text, "broker.example.com/audit", "", 1),
		strings.Replace(text, "broker.example.com/audit", "a b", 1),
		strings.Replace(text, "=\n", "\n", 1),
	} {
		if _, err := ParseCheckpoint(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func FuzzParseCheckpoint(f *testing.F) {
	f.Add(Checkpoint{Origin: "a/b", Tree: tlogTree(3)}.Format())
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCheckpoint(s)
		if err == nil && c.Format() != s {
			t.Fatalf("accepted %q, formats as %q", s, c.Format())
		}
	})
}

func tlogTree(n int64) tlog.Tree {
	return tlog.Tree{N: n, Hash: tlog.RecordHash([]byte("root"))}
}
