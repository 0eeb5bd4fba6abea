package client_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/agentkeys/broker/host/client"
	"github.com/agentkeys/broker/shared/siwe"
)

func mode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestWalletFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wallet.json")
	address, err := client.NewWalletFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && mode(t, path) != 0o600 {
		t.Errorf("wallet file mode = %04o, want 0600", mode(t, path))
	}
	key, got, err := client.LoadWalletFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != address || key == nil {
		t.Errorf("loaded address %q, want %q", got, address)
	}
	if cs, err := siwe.ChecksumAddress(address); err != nil || cs != address {
		t.Errorf("address %q is not checksummed", address)
	}

	// Never overwrite a key.
	before, _ := os.ReadFile(path)
	_, err = client.NewWalletFile(path)
	if !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Errorf("second NewWalletFile: got %v, want a refusal wrapping fs.ErrExist", err)
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Error("the wallet file changed")
	}
	// Not even through a dangling symlink.
	link := filepath.Join(t.TempDir(), "link.json")
	target := filepath.Join(t.TempDir(), "target.json")
	if err := os.Symlink(target, link); err == nil {
		if _, err := client.NewWalletFile(link); err == nil {
			t.Error("NewWalletFile followed a symlink")
		}
		if _, err := os.Stat(target); err == nil {
			t.Error("NewWalletFile wrote through a symlink")
		}
	}

	if _, err := client.NewWalletFile(filepath.Join(t.TempDir(), "missing", "wallet.json")); err == nil {
		t.Error("NewWalletFile created a directory")
	}
	_, _, err = client.LoadWalletFile(filepath.Join(t.TempDir(), "none.json"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing wallet file: got %v, want fs.ErrNotExist", err)
	}
}

func TestWalletFilePermissions(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no mode bits on Windows")
	}
	path := filepath.Join(t.TempDir(), "wallet.json")
	if _, err := client.NewWalletFile(path); err != nil {
		t.Fatal(err)
	}
	for _, m := range []fs.FileMode{0o640, 0o604, 0o660, 0o602, 0o644} {
		if err := os.Chmod(path, m); err != nil {
			t.Fatal(err)
		}
		_, _, err := client.LoadWalletFile(path)
		if err == nil || !strings.Contains(err.Error(), "chmod 600 "+path) {
			t.Errorf("mode %04o: got %v, want a refusal with a chmod hint", m, err)
		}
	}
	for _, m := range []fs.FileMode{0o600, 0o400} {
		os.Chmod(path, m)
		if _, _, err := client.LoadWalletFile(path); err != nil {
			t.Errorf("mode %04o: %v", m, err)
		}
	}
}

func TestWalletFileFormat(t *testing.T) {
	const (
		key     = "0101010101010101010101010101010101010101010101010101010101010101"
		address = "0x1a642f0E3c3aF545E7AcBD38b07251B3990914F1"
	)
	dir := t.TempDir()
	write := func(content string) string {
		path := filepath.Join(dir, "w.json")
		os.Remove(path)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	for _, ok := range []string{
		`{"address":"` + address + `","private_key":"` + key + `"}`,
		`{"address":"` + strings.ToLower(address) + `","private_key":"0x` + key + `"}`,
		`{"private_key":"` + key + `"}`,
	} {
		_, got, err := client.LoadWalletFile(write(ok))
		if err != nil || got != address {
			t.Errorf("%s: got %q, %v; want %s", ok, got, err, address)
		}
	}
	const secretish = "0202020202020202020202020202020202020202020202020202020202020g02"
	for _, bad := range []string{
		``,
		`{"address":"` + address + `"}`,
		`{"address":"0x0000000000000000000000000000000000000000","private_key":"` + key + `"}`,
		`{"private_key":"` + secretish + `"}`,
		`{"private_key":"` + key + `00"}`,
		`{"private_key":"` + strings.Repeat("0", 64) + `"}`,
		`{"private_key":"` + strings.Repeat("f", 64) + `"}`, // ≥ the group order
		`["` + key + `"]`,
	} {
		_, _, err := client.LoadWalletFile(write(bad))
		if err == nil {
			t.Errorf("%s: accepted", bad)
			continue
		}
		if strings.Contains(err.Error(), "0202") || strings.Contains(err.Error(), "0101") {
			t.Errorf("%s: error %q quotes the key", bad, err)
		}
	}
}

func TestSessionFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "session.json")
	s := &client.Session{Token: "eyJ.a.b", Wallet: "0x1a642f0e3c3af545e7acbd38b07251b3990914f1", Expiration: time.Unix(1767323045, 0)}
	if err := client.SaveSession(path, s); err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && mode(t, path) != 0o600 {
		t.Errorf("session file mode = %04o, want 0600", mode(t, path))
	}
	got, err := client.LoadSession(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.Token != s.Token || got.Wallet != s.Wallet || !got.Expiration.Equal(s.Expiration) {
		t.Errorf("round trip: got %+v, want %+v", got, s)
	}

	// Replacing it leaves no temporary file behind.
	s.Token = "eyJ.c.d"
	if err := client.SaveSession(path, s); err != nil {
		t.Fatal(err)
	}
	if got, _ := client.LoadSession(path); got == nil || got.Token != "eyJ.c.d" {
		t.Errorf("after replacing: got %+v", got)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the session file", len(entries))
	}

	if err := client.SaveSession(path, nil); err == nil {
		t.Error("saved a nil session")
	}
	if err := client.SaveSession(filepath.Join(dir, "missing", "s.json"), s); err == nil {
		t.Error("saved into a missing directory")
	}
	if _, err := client.LoadSession(filepath.Join(dir, "none.json")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing session file: got %v, want fs.ErrNotExist", err)
	}
	if runtime.GOOS != "windows" {
		os.Chmod(path, 0o644)
		if _, err := client.LoadSession(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("loose session file: got %v", err)
		}
	}
	for _, bad := range []string{`{}`, `{"session":"a b"}`, `nope`} {
		p := filepath.Join(dir, "bad.json")
		os.WriteFile(p, []byte(bad), 0o600)
		if _, err := client.LoadSession(p); err == nil {
			t.Errorf("%s: accepted", bad)
		}
		os.Remove(p)
	}
}
