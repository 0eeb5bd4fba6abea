package seed

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadOrCreate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	s1, created, err := LoadOrCreate(dir, rand.Reader)
	if err != nil || !created || len(s1) != Size {
		t.Fatalf("first start: %v created=%v len=%d", err, created, len(s1))
	}
	fi, err := os.Stat(filepath.Join(dir, FileName))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("seed file mode: %v %v", fi.Mode(), err)
	}
	di, _ := os.Stat(dir)
	if di.Mode().Perm() != 0o700 {
		t.Fatalf("state dir mode %v", di.Mode())
	}
	s2, created, err := LoadOrCreate(dir, bytes.NewReader(make([]byte, 64)))
	if err != nil || created || !bytes.Equal(s1, s2) {
		t.Fatalf("second start: %v created=%v same=%v", err, created, bytes.Equal(s1, s2))
	}
}

func TestLoadRefuses(t *testing.T) {
	write := func(size int, mode os.FileMode) func(string) {
		return func(p string) {
			os.WriteFile(p, make([]byte, size), 0o600)
			os.Chmod(p, mode) // explicit: WriteFile's mode passes through the umask
		}
	}
	tests := []struct {
		name  string
		setup func(path string)
		want  string
	}{
		{"group readable", write(32, 0o640), "chmod 600"},
		{"world readable", write(32, 0o604), "too open"},
		{"short", write(31, 0o600), "31 bytes"},
		{"long", write(64, 0o600), "33 bytes"},
		{"directory", func(p string) { os.Mkdir(p, 0o700) }, "not a regular file"},
		{"symlink", func(p string) {
			write(32, 0o600)(p + ".real")
			os.Symlink(p+".real", p)
		}, "not a regular file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tt.setup(filepath.Join(dir, FileName))
			_, _, err := LoadOrCreate(dir, rand.Reader)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
	dir := t.TempDir()
	write(32, 0o644)(filepath.Join(dir, FileName))
	if _, _, err := LoadOrCreate(dir, rand.Reader); !errors.Is(err, ErrPermissions) {
		t.Fatalf("err = %v, want ErrPermissions", err)
	}
}

func TestRandomnessFailure(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := LoadOrCreate(dir, bytes.NewReader(make([]byte, 5))); err == nil {
		t.Fatal("short randomness accepted")
	}
	if _, err := os.Stat(filepath.Join(dir, FileName)); !os.IsNotExist(err) {
		t.Fatal("a seed file was left behind")
	}
}
