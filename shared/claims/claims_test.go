package claims

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

const wallet = "0x2c7ea6d19df0dcf1c91b351f975fb2827ff80e5f"

func fixed(hostAsserted bool) OIDC {
	return OIDC{
		Issuer:             "https://broker.example.com",
		Subject:            SubjectPrefix + wallet,
		Audience:           "sts.amazonaws.com",
		IssuedAt:           1767225600,
		NotBefore:          1767225540,
		ExpiresAt:          1767225900,
		ID:                 "41",
		Wallet:             wallet,
		Tags:               MintTags(wallet, "41"),
		HostAssertedWallet: hostAsserted,
	}
}

// TestGolden encodes a fixed claim set and compares it byte for byte with the
// golden file: the exact claims, their order and their spelling are what AWS
// STS and every relying party read.
func TestGolden(t *testing.T) {
	for _, tc := range []struct {
		file string
		c    OIDC
	}{
		{"oidc.json", fixed(false)},
		{"oidc-host-asserted.json", fixed(true)},
	} {
		t.Run(tc.file, func(t *testing.T) {
			got, err := json.Marshal(tc.c)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", tc.file)
			if *update {
				if err := os.WriteFile(path, append(got, '\n'), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			want = bytes.TrimSuffix(want, []byte("\n"))
			if !bytes.Equal(got, want) {
				t.Fatalf("encoding changed:\ngot  %s\nwant %s", got, want)
			}
			// The golden bytes decode, strictly, back to the same claims.
			var back OIDC
			dec := json.NewDecoder(bytes.NewReader(want))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&back); err != nil || !reflect.DeepEqual(back, tc.c) {
				t.Fatalf("decode: %v\n%+v", err, back)
			}
		})
	}
}

// TestNames checks that the struct tags spell the exported claim names.
func TestNames(t *testing.T) {
	b, _ := json.Marshal(fixed(true))
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	want := []string{"aud", "exp", "iat", "iss", "jti", "nbf", "sub", Wallet, AWSTags, HostAssertedWallet}
	slices.Sort(want)
	if !slices.Equal(keys, want) {
		t.Fatalf("claims %v, want %v", keys, want)
	}
	var tags map[string]any
	json.Unmarshal(m[AWSTags], &tags)
	pt, _ := tags["principal_tags"].(map[string]any)
	if len(pt) != 2 || pt[WalletTag] == nil || fmt.Sprint(pt[LogIndexTag]) != "[41]" {
		t.Fatalf("tags = %v", tags)
	}
	if tk := fmt.Sprint(tags["transitive_tag_keys"]); tk != "["+WalletTag+" "+LogIndexTag+"]" {
		t.Fatalf("transitive_tag_keys = %v", tk)
	}
}

func TestIsCompactJWS(t *testing.T) {
	for s, want := range map[string]bool{
		"a.b.c":                true,
		"eyJh-_.eyJz.c2ln":     true,
		"":                     false,
		"a.b":                  false,
		"a.b.c.d":              false,
		"a..c":                 false,
		"a.b.c=":               false,
		"a.b.c\n":              false,
		"a.b.\x1b[31m":         false,
		"a b.c.d":              false,
		"opaque-backend-token": false,
	} {
		if got := IsCompactJWS(s); got != want {
			t.Errorf("IsCompactJWS(%q) = %v", s, got)
		}
	}
}
