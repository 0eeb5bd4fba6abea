// Package modbuild builds the command of a module this module requires from
// the module cache, once per test process, for tests that run a real helper
// server beside the code under test (Pebble as the ACME server, local-kms as
// KMS).
//
// The module must be required in go.mod; a file with a `//go:build tools`
// constraint that imports its command keeps it there through go mod tidy.
// The command is built with the module's own go.mod (GOWORK off), so its
// dependencies are those its authors chose.
package modbuild

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// Binary is one module command, built on first use.
type Binary struct {
	Module  string // module path, e.g. github.com/letsencrypt/pebble/v2
	Package string // package inside the module, e.g. ./cmd/pebble
	Name    string // binary name, for messages and the file

	// mu is held from looking the binary up to starting it, so that Cleanup
	// cannot remove it in between.
	mu  sync.Mutex
	dir string // temporary directory holding the binary
	bin string
	err error // a failed build is not retried until Cleanup
}

// Start starts cmd (Args, Env and output already set) as the binary,
// building it on first use.
func (b *Binary) Start(cmd *exec.Cmd) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.bin == "" && b.err == nil {
		b.dir, b.bin, b.err = b.build()
	}
	if b.err != nil {
		return b.err
	}
	cmd.Path = b.bin
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("failed to start %s: %w", b.Name, err)
	}
	return nil
}

// Cleanup removes the built binary, if any. Call it from TestMain after
// m.Run. Running processes are not affected; a later Start builds again.
func (b *Binary) Cleanup() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dir != "" {
		os.RemoveAll(b.dir)
	}
	b.dir, b.bin, b.err = "", "", nil
}

// build builds the command into a new temporary directory.
func (b *Binary) build() (dir, bin string, err error) {
	// go test puts its own toolchain first on PATH.
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", "", fmt.Errorf("failed to find the go command: %w", err)
	}
	var stderr bytes.Buffer
	list := exec.Command(goBin, "list", "-m", "-f", "{{.Dir}}", b.Module)
	list.Stderr = &stderr
	out, err := list.Output()
	if err != nil {
		return "", "", fmt.Errorf("failed to locate %s (it must be required in go.mod; see tools.go): %w\n%s", b.Module, err, stderr.Bytes())
	}
	src := strings.TrimSpace(string(out))
	if src == "" {
		return "", "", fmt.Errorf("%s is not in the module cache; run: go mod download %s", b.Module, b.Module)
	}
	dir, err = os.MkdirTemp("", "modbuild-"+b.Name+"-")
	if err != nil {
		return "", "", err
	}
	bin = filepath.Join(dir, b.Name)
	// Linking is most of the cost (the packages come from the build cache);
	// -s -w makes it quicker.
	cmd := exec.Command(goBin, "build", "-ldflags=-s -w", "-o", bin, b.Package)
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", "", fmt.Errorf("failed to build %s: %w\n%s", b.Name, err, out)
	}
	return dir, bin, nil
}

// Path is the built binary's path, or "" before the first Start.
func (b *Binary) Path() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.bin
}
