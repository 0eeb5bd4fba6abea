package client

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"

	"github.com/agentkeys/broker/shared/siwe"
)

// The session and wallet files are read from disk, where another program (or
// another user, through a shared directory) may have written anything. These
// fuzz the two readers: they must never panic, must never quote a private key
// in an error, and what they accept must survive a save and load unchanged.

func writeFuzzFile(t *testing.T, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "f.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func FuzzLoadSession(f *testing.F) {
	f.Add([]byte(`{"session":"a.b.c","wallet":"0x1a642f0e3c3af545e7acbd38b07251b3990914f1","expiration":1767400000}`))
	f.Add([]byte(`{"session":"opaque-bearer","wallet":"","expiration":0}`))
	f.Add([]byte(`{"session":"has space","expiration":1}`))
	f.Add([]byte(`{"session":"","wallet":"x"}`))
	f.Add([]byte(`{"session":"t","expiration":-9223372036854775808}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"session":"t\u0000x"}`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, data []byte) {
		path := writeFuzzFile(t, data)
		s, err := LoadSession(path)
		if err != nil {
			if s != nil {
				t.Fatalf("a session and an error: %+v, %v", s, err)
			}
			return
		}
		if checkToken(s.Token) != nil {
			t.Fatalf("accepted a malformed token %q", s.Token)
		}
		// What was accepted saves and loads back the same.
		out := filepath.Join(t.TempDir(), "s.json")
		if err := SaveSession(out, s); err != nil {
			t.Fatalf("failed to save an accepted session: %v", err)
		}
		s2, err := LoadSession(out)
		if err != nil {
			t.Fatalf("failed to load a saved session: %v", err)
		}
		if s2.Token != s.Token || s2.Wallet != s.Wallet || !s2.Expiration.Equal(s.Expiration) {
			t.Fatalf("round trip: %+v, want %+v", s2, s)
		}
	})
}

func FuzzLoadWalletFile(f *testing.F) {
	key := secp256k1.PrivKeyFromBytes([]byte(strings.Repeat("\x01", 32)))
	addr, err := siwe.ChecksumAddress(siwe.AddressOf(key.PubKey()))
	if err != nil {
		f.Fatal(err)
	}
	priv := hex.EncodeToString(key.Serialize())
	good, _ := json.Marshal(walletFile{Address: addr, PrivateKey: priv})
	f.Add(good)
	f.Add([]byte(`{"private_key":"0x` + priv + `"}`))
	f.Add([]byte(`{"address":"0x0000000000000000000000000000000000000000","private_key":"` + priv + `"}`))
	f.Add([]byte(`{"private_key":"` + strings.Repeat("f", 64) + `"}`))
	f.Add([]byte(`{"private_key":"` + strings.Repeat("0", 64) + `"}`))
	f.Add([]byte(`{"private_key":"zz` + priv[2:] + `"}`))
	f.Add([]byte(`{"address":"` + strings.Repeat("\u202e", 50) + `","private_key":"` + priv + `"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		path := writeFuzzFile(t, data)
		k, address, err := LoadWalletFile(path)
		if err != nil {
			if k != nil {
				t.Fatalf("a key and an error: %v", err)
			}
			// An error never quotes the key, whatever the file holds.
			var w walletFile
			if json.Unmarshal(data, &w) == nil {
				hexKey := strings.TrimPrefix(strings.TrimPrefix(w.PrivateKey, "0x"), "0X")
				if len(hexKey) >= 8 && strings.Contains(strings.ToLower(err.Error()), strings.ToLower(hexKey)) {
					t.Fatalf("the error quotes the private key: %v", err)
				}
			}
			return
		}
		defer k.Zero()
		want, err := siwe.ChecksumAddress(siwe.AddressOf(k.PubKey()))
		if err != nil || address != want {
			t.Fatalf("address %q, want the key's %q (%v)", address, want, err)
		}
	})
}
