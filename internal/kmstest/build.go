package kmstest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// localKMSModule is built from the module cache; its version is the one in
// go.mod (kept there by tools.go).
const localKMSModule = "github.com/nsmithuk/local-kms"

// built is the local-kms binary of this test process. mu is held from looking
// the binary up to starting it, so that Cleanup cannot remove it in between.
var built struct {
	mu  sync.Mutex
	dir string // temporary directory holding the binary
	bin string
	err error // a failed build is not retried until Cleanup
}

// startBinary starts cmd (Args, Env and output set) as the local-kms binary,
// building the binary on first use.
func startBinary(cmd *exec.Cmd) error {
	built.mu.Lock()
	defer built.mu.Unlock()
	if built.bin == "" && built.err == nil {
		built.dir, built.bin, built.err = build()
	}
	if built.err != nil {
		return built.err
	}
	cmd.Path = built.bin
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("failed to start local-kms: %w", err)
	}
	return nil
}

// Cleanup removes the local-kms binary built by Start, if any. Call it from
// TestMain after m.Run. Running local-kms processes are not affected; a later Start
// builds the binary again.
func Cleanup() {
	built.mu.Lock()
	defer built.mu.Unlock()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	built.dir, built.bin, built.err = "", "", nil
}

// build builds local-kms into a new temporary directory.
func build() (dir, bin string, err error) {
	// go test puts its own toolchain first on PATH.
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", "", fmt.Errorf("failed to find the go command: %w", err)
	}
	var stderr bytes.Buffer
	list := exec.Command(goBin, "list", "-m", "-f", "{{.Dir}}", localKMSModule)
	list.Stderr = &stderr
	out, err := list.Output()
	if err != nil {
		return "", "", fmt.Errorf("failed to locate %s (it must be required in go.mod; see tools.go): %w\n%s", localKMSModule, err, stderr.Bytes())
	}
	src := strings.TrimSpace(string(out))
	if src == "" {
		return "", "", fmt.Errorf("%s is not in the module cache; run: go mod download %s", localKMSModule, localKMSModule)
	}
	dir, err = os.MkdirTemp("", "kmstest-")
	if err != nil {
		return "", "", err
	}
	bin = filepath.Join(dir, "local-kms")
	// Linking is most of the cost (the packages come from the build cache);
	// -s -w makes it quicker. local-kms's own go.mod, not this module's, picks
	// its dependencies.
	cmd := exec.Command(goBin, "build", "-ldflags=-s -w", "-o", bin, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", "", fmt.Errorf("failed to build local-kms: %w\n%s", err, out)
	}
	return dir, bin, nil
}
