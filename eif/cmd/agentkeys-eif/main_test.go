package main

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentkeys/broker/eif"
	"github.com/agentkeys/broker/eif/build"
	"github.com/agentkeys/broker/eif/internal/fakeblobs"
)

func runCmd(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

// TestBuildCommand builds the real enclave binary (one go build from this checkout, with the
// local toolchain) and an image from synthetic blobs, then reads the image back.
func TestBuildCommand(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "agentkeys-enclave")
	if code, _, stderr := runCmd("binary", "--source", "../../..", "--go-toolchain", "local", "--out", bin); code != 0 {
		t.Fatalf("binary: exit %d\n%s", code, stderr)
	}
	blobs, pinFile := fakeblobs.Write(t)
	policy := filepath.Join(dir, "policy.json")
	if err := os.WriteFile(policy, []byte(`{"issuer": "https://broker.example.com"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out", "agentkeys.eif")
	args := []string{"build", "--blobs", blobs, "--blobs-pins", pinFile, "--policy", policy, "--enclave-binary", bin, "--out", out}
	if code, _, stderr := runCmd(args...); code != 0 {
		t.Fatalf("build: exit %d\n%s", code, stderr)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	im, err := eif.Parse(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := im.Measurements(); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := runCmd(args...); code != 0 {
		t.Fatalf("second build: exit %d\n%s", code, stderr)
	}
	if again, _ := os.ReadFile(out); !bytes.Equal(again, b) {
		t.Fatal("building twice gave different images")
	}

	code, stdout, stderr := runCmd("ls", out)
	if code != 0 {
		t.Fatalf("ls: exit %d\n%s", code, stderr)
	}
	for _, want := range []string{"ramdisk 1 (", "040755 0:0         0 - dev\n", " nsm.ko\n", "ramdisk 2 (", "100755 0:0 ", " rootfs/agentkeys-enclave\n", "100644 0:0 ", " rootfs/etc/agentkeys/policy.json\n", " cmd\n"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("ls output lacks %q:\n%s", want, stdout)
		}
	}

	// A binary not built by `agentkeys-eif binary` is refused.
	fake := filepath.Join(dir, "fake")
	if err := os.WriteFile(fake, []byte("not a binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	fakeArgs := append(append([]string{}, args[:8]...), fake, "--out", filepath.Join(dir, "x.eif"))
	if code, _, stderr := runCmd(fakeArgs...); code != 1 || !strings.Contains(stderr, "not a Go binary") {
		t.Errorf("fake binary: exit %d, %s", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "x.eif")); !os.IsNotExist(err) {
		t.Errorf("a refused build left an output file: %v", err)
	}
	// An aarch64 build of an x86_64 binary is refused (it has no aarch64 kernel pin first).
	if code, _, stderr := runCmd(append(args, "--arch", "aarch64")...); code != 1 || !strings.Contains(stderr, "Image has no SHA-384 pin") {
		t.Errorf("aarch64: exit %d, %s", code, stderr)
	}

	// A blob that differs from its pin is refused, with the blob and the pin file named.
	if err := os.WriteFile(filepath.Join(blobs, "nsm.ko"), []byte("tampered"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := runCmd(args...); code != 1 || !strings.Contains(stderr, "blob does not match its pin: nsm.ko") || !strings.Contains(stderr, pinFile) {
		t.Errorf("tampered nsm.ko: exit %d, %s", code, stderr)
	}
}

func TestPinsCommand(t *testing.T) {
	blobs, pinFile := fakeblobs.Write(t)
	code, stdout, stderr := runCmd("pins", "--blobs", blobs)
	if code != 0 {
		t.Fatalf("pins: exit %d\n%s", code, stderr)
	}
	got, err := build.ParsePins(strings.NewReader(stdout))
	if err != nil {
		t.Fatal(err)
	}
	want, err := build.LoadPins(pinFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Format(), want.Format()) {
		t.Errorf("pins printed\n%s\nwant\n%s", got.Format(), want.Format())
	}
	// git hash-object of the synthetic init.
	if !strings.Contains(stdout, "# init git blob ") {
		t.Errorf("no git blob id for init:\n%s", stdout)
	}
	if id := gitBlobID([]byte("hello\n")); hex.EncodeToString(id[:]) != "ce013625030ba8dba906f756967f9e9ca394464a" {
		t.Errorf("gitBlobID(hello) = %x, want git hash-object's ce013625…", id)
	}
	os.Remove(filepath.Join(blobs, "init"))
	if code, _, stderr := runCmd("pins", "--blobs", blobs); code != 1 || !strings.Contains(stderr, "failed to read blob init") {
		t.Errorf("missing init: exit %d, %s", code, stderr)
	}
}

func TestUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "usage"},
		{[]string{"frob"}, 2, "unknown command"},
		{[]string{"build", "--blobs", "x"}, 2, "is required"},
		{[]string{"build", "--nope"}, 2, "--nope: no such flag"},
		{[]string{"binary"}, 2, "--out is required"},
		{[]string{"binary", "--out", "x", "--arch", "mips"}, 2, "unknown architecture"},
		{[]string{"ls"}, 2, "exactly one"},
		{[]string{"pins", "extra"}, 2, "unexpected argument"},
		{[]string{"help"}, 0, ""},
	} {
		code, _, stderr := runCmd(tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("%q: exit %d, stderr %q; want %d and %q", tc.args, code, stderr, tc.code, tc.want)
		}
	}
	// Help goes to stdout, with the flags named with --.
	for _, cmd := range []string{"build", "binary", "pins", "ls"} {
		code, stdout, stderr := runCmd(cmd, "-h")
		if code != 0 || stderr != "" || !strings.Contains(stdout, "usage: agentkeys-eif "+cmd) || !strings.Contains(stdout, "  --") {
			t.Errorf("%s -h: exit %d, stdout %q, stderr %q", cmd, code, stdout, stderr)
		}
	}
}
