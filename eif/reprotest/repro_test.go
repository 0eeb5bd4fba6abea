package reprotest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentkeys/broker/eif"
	"github.com/agentkeys/broker/eif/build"
	"github.com/agentkeys/broker/eif/internal/fakeblobs"
)

// need skips the test when a tool is missing, except in CI (CI=true), where it fails.
func need(t *testing.T, tool string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not installed", tool)
		}
		t.Skipf("%s is not installed", tool)
	}
}

func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	c := exec.Command("git", args...)
	c.Dir = dir
	out, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestTwoCheckouts is slow on purpose: it clones the repository at HEAD twice, into directories
// at different depths, and runs one go build of the enclave in each (module cache needed, no
// network: GOPROXY=off; `make test` fills the cache with go mod download). The second build's
// environment carries GOFLAGS and GOAMD64 values that would change the binary if GoBuild let
// them through. Both binaries, and the images built from them with the same synthetic blobs
// and policy, must be identical.
func TestTwoCheckouts(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: two clones and two go builds")
	}
	need(t, "git")
	need(t, "go")
	root := git(t, ".", "rev-parse", "--show-toplevel")
	head := git(t, ".", "rev-parse", "HEAD")
	if out := git(t, root, "status", "--porcelain", "--untracked-files=no"); out != "" {
		t.Logf("note: the working tree has uncommitted changes; the checkouts build HEAD %s", head)
	}

	tmp := t.TempDir()
	dirs := []string{filepath.Join(tmp, "a"), filepath.Join(tmp, "b", "somewhere", "deeper", "broker")}
	extraEnv := [][]string{nil, {"GOFLAGS=-gcflags=all=-N", "GOAMD64=v3", "CGO_ENABLED=1"}}
	blobsDir, pinFile := fakeblobs.Write(t)
	pins, err := build.LoadPins(pinFile)
	if err != nil {
		t.Fatal(err)
	}
	blobs, err := build.LoadBlobs(blobsDir, build.X86_64, pins, pinFile, build.DefaultMaxInputSize)
	if err != nil {
		t.Fatal(err)
	}
	policy := []byte(`{"issuer": "https://broker.example.com"}`)

	var bins, images [][]byte
	for i, dir := range dirs {
		git(t, tmp, "clone", "--quiet", "--shared", "--no-checkout", root, dir)
		git(t, dir, "checkout", "--quiet", "--detach", head)
		env := append(os.Environ(), "GOPROXY=off")
		env = append(env, extraEnv[i]...)
		out := filepath.Join(tmp, "bin", string(rune('a'+i)), "agentkeys-enclave")
		var stderr bytes.Buffer
		// Toolchain "local": the test checks path independence, not the toolchain pin, and must
		// not download a toolchain.
		g := build.GoBuild{SourceDir: dir, Arch: build.X86_64, Toolchain: "local", Env: env, Stderr: &stderr}
		if err := g.Run(t.Context(), out); err != nil {
			t.Fatalf("checkout %d: %v\n%s\n(hint: run go mod download first)", i, err, stderr.Bytes())
		}
		bin, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		var img bytes.Buffer
		if err := build.Build(&img, build.Inputs{Arch: build.X86_64, Blobs: blobs, EnclaveBinary: bin, Policy: policy}); err != nil {
			t.Fatal(err)
		}
		bins, images = append(bins, bin), append(images, img.Bytes())
	}
	if !bytes.Equal(bins[0], bins[1]) {
		t.Fatalf("the enclave binaries from %s and %s differ (%d and %d bytes)", dirs[0], dirs[1], len(bins[0]), len(bins[1]))
	}
	if !bytes.Equal(images[0], images[1]) {
		t.Fatal("the images differ although the binaries are the same")
	}
	im, err := eif.Parse(bytes.NewReader(images[0]), int64(len(images[0])))
	if err != nil {
		t.Fatal(err)
	}
	m, err := im.Measurements()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("binary %d bytes, image %d bytes, PCR0 %s", len(bins[0]), len(images[0]), m.PCR0)

	// The check that the binary was built this way refuses one linked with a build ID (a plain
	// `go build -trimpath`, which reuses the first build's cache: fast).
	plain := filepath.Join(tmp, "plain")
	c := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-o", plain, build.EnclavePackage)
	c.Dir = dirs[0]
	c.Env = append(os.Environ(), "GOPROXY=off", "CGO_ENABLED=0", "GOFLAGS=", "GOOS=linux", "GOARCH=amd64", "GOAMD64=v1")
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("plain go build: %v\n%s", err, out)
	}
	if err := build.CheckBinary(plain, build.X86_64); err == nil || !strings.Contains(err.Error(), "build ID") {
		t.Errorf("CheckBinary of a binary with a build ID: %v", err)
	}
	if err := build.CheckBinary(plain, build.AArch64); err == nil || !strings.Contains(err.Error(), "GOARCH") {
		t.Errorf("CheckBinary of an amd64 binary for aarch64: %v", err)
	}
}
