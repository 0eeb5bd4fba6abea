package client_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentkeys/broker/host/client"
)

// TestFilesAreReadStrictly: a wallet or session file with a key given twice,
// in another case or unknown is refused, naming the key but no value, where
// encoding/json would have taken the last key or filled the field anyway.
func TestFilesAreReadStrictly(t *testing.T) {
	const (
		key   = "0101010101010101010101010101010101010101010101010101010101010101"
		other = "0303030303030303030303030303030303030303030303030303030303030303"
	)
	dir := t.TempDir()
	write := func(content string) string {
		path := filepath.Join(dir, "f.json")
		os.Remove(path)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	for _, tt := range []struct{ content, want string }{
		{`{"private_key":"` + key + `","private_key":"` + other + `"}`, "private_key: key appears twice"},
		{`{"Private_Key":"` + key + `"}`, `want "private_key"`},
		{`{"private_key":"` + key + `","label":"x"}`, "label: unknown field"},
	} {
		_, _, err := client.LoadWalletFile(write(tt.content))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("wallet %s: %v, want %q", tt.content, err, tt.want)
		} else if strings.Contains(err.Error(), "0101") || strings.Contains(err.Error(), "0303") {
			t.Errorf("wallet: error %q quotes the key", err)
		}
	}
	const tok = "eyJhbGciOiJFUzI1NiJ9.eyJzaWQiOiJ4In0.c2ln"
	for _, tt := range []struct{ content, want string }{
		{`{"session":"` + tok + `","session":"eyJ.b.c","wallet":"0x1a642f0e3c3af545e7acbd38b07251b3990914f1","expiration":1}`, "session: key appears twice"},
		{`{"Session":"` + tok + `"}`, `want "session"`},
		{`{"session":"` + tok + `","token":"x"}`, "token: unknown field"},
	} {
		_, err := client.LoadSession(write(tt.content))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("session %s: %v, want %q", tt.content, err, tt.want)
		} else if strings.Contains(err.Error(), "eyJ") {
			t.Errorf("session: error %q quotes the token", err)
		}
	}
}

// TestRevokeSession: the first revocation reports Revoked, the second not;
// both succeed, and Revoke succeeds either way.
func TestRevokeSession(t *testing.T) {
	ctx := context.Background()
	_, c, s, address := signIn(t)
	r, err := c.RevokeSession(ctx, s.Token)
	if err != nil || !r.Revoked || r.Wallet != strings.ToLower(address) {
		t.Fatalf("first revoke: %+v, %v", r, err)
	}
	r, err = c.RevokeSession(ctx, s.Token)
	if err != nil || r.Revoked || r.Wallet != strings.ToLower(address) {
		t.Fatalf("second revoke: %+v, %v", r, err)
	}
	if err := c.Revoke(ctx, s.Token); !errors.Is(err, client.ErrAlreadyRevoked) {
		t.Fatalf("Revoke of a revoked session: %v, want ErrAlreadyRevoked", err)
	}
}
