package build

import (
	"bytes"
	"context"
	"debug/buildinfo"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// EnclavePackage is the enclave's main package, relative to the module root.
const EnclavePackage = "./enclave/cmd/agentkeys-enclave"

// EnclaveMainPath is its import path, as the binary's build information records it.
const EnclaveMainPath = "github.com/agentkeys/broker/enclave/cmd/agentkeys-enclave"

// DefaultToolchain is the Go toolchain the enclave binary is built with (GOTOOLCHAIN): the Go
// release is an input of the build like the source. Bump it together with the Go installed for
// development; a go command of another version fetches this one through the module proxy.
const DefaultToolchain = "go1.26.8"

// BuildFlags are the go build flags of the enclave binary: no absolute paths (-trimpath), no VCS
// stamp (the bytes depend on the tree, not on the checkout's .git), no build ID (a hash of the
// build's action graph, which includes cache-dependent inputs).
var BuildFlags = []string{"-trimpath", "-buildvcs=false", "-ldflags=-buildid="}

// GoBuild builds the enclave binary reproducibly: `go build` with BuildFlags and an environment
// in which only the source tree and the toolchain can change the bytes.
type GoBuild struct {
	Go        string   // the go command; "go" if empty
	SourceDir string   // the module root (holding go.mod)
	Arch      Arch     // the enclave's architecture
	Toolchain string   // GOTOOLCHAIN; DefaultToolchain if empty ("local": whatever go is)
	Env       []string // the base environment; os.Environ() if nil
	Stderr    io.Writer
}

// Environ is the environment go build runs with: Env with these set, whatever they were:
//
//	CGO_ENABLED=0 GOOS=linux GOARCH=amd64|arm64 GOAMD64=v1 GOARM64=v8.0
//	GOFLAGS= GOEXPERIMENT= GOFIPS140=off GOENV=off GOTOOLCHAIN=<Toolchain>
//
// GOENV=off ignores settings saved with `go env -w` (an empty GOFLAGS would not override
// those); set GOPROXY, GOMODCACHE or GOCACHE in the environment if needed: they do not change
// the output.
func (g GoBuild) Environ() []string {
	env := g.Env
	if env == nil {
		env = os.Environ()
	}
	tc := g.Toolchain
	if tc == "" {
		tc = DefaultToolchain
	}
	set := map[string]string{
		"CGO_ENABLED": "0", "GOOS": "linux", "GOARCH": g.Arch.GOARCH(), "GOAMD64": "v1", "GOARM64": "v8.0",
		"GOFLAGS": "", "GOEXPERIMENT": "", "GOFIPS140": "off", "GOENV": "off", "GOTOOLCHAIN": tc,
	}
	var out []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := set[k]; !ok {
			out = append(out, kv)
		}
	}
	for _, k := range []string{"CGO_ENABLED", "GOOS", "GOARCH", "GOAMD64", "GOARM64", "GOFLAGS", "GOEXPERIMENT", "GOFIPS140", "GOENV", "GOTOOLCHAIN"} {
		out = append(out, k+"="+set[k])
	}
	return out
}

// Cmd is the go build command writing the binary to out.
func (g GoBuild) Cmd(ctx context.Context, out string) *exec.Cmd {
	goCmd := g.Go
	if goCmd == "" {
		goCmd = "go"
	}
	args := append([]string{"build"}, BuildFlags...)
	args = append(args, "-o", out, EnclavePackage)
	c := exec.CommandContext(ctx, goCmd, args...)
	c.Dir = g.SourceDir
	c.Env = g.Environ()
	c.Stdout = g.Stderr
	c.Stderr = g.Stderr
	return c
}

// Run builds the binary into out (made absolute, so it does not land in SourceDir).
func (g GoBuild) Run(ctx context.Context, out string) error {
	if g.Arch != X86_64 && g.Arch != AArch64 {
		return fmt.Errorf("unknown architecture %q", g.Arch)
	}
	abs, err := filepath.Abs(out)
	if err != nil {
		return err
	}
	var stderr bytes.Buffer
	c := g.Cmd(ctx, abs)
	if g.Stderr == nil {
		c.Stdout, c.Stderr = &stderr, &stderr
	}
	if err := c.Run(); err != nil {
		return fmt.Errorf("failed to build the enclave binary (%s in %s): %w\n%s", strings.Join(c.Args, " "), g.SourceDir, err, stderr.Bytes())
	}
	return CheckBinary(abs, g.Arch)
}

// CheckBinary reads the binary at path and checks it with CheckBinaryBytes.
func CheckBinary(path string, arch Arch) error {
	b, err := ReadFileMax(path, DefaultMaxInputSize)
	if err != nil {
		return err
	}
	if err := CheckBinaryBytes(b, arch); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// CheckBinaryBytes reads the Go build information of a binary and refuses it unless it is the
// enclave, built as GoBuild builds it: for linux on arch (GOAMD64=v1 or GOARM64=v8.0),
// CGO_ENABLED=0, -trimpath, no VCS stamp, no Go build ID. It catches a binary made by a plain
// `go build` (paths and VCS state inside: a different image for every checkout).
func CheckBinaryBytes(b []byte, arch Arch) error {
	const hint = "\n\thint: build it with `agentkeys-eif binary` (or `make eif`)"
	bi, err := buildinfo.Read(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("not a Go binary with build information: %w", err)
	}
	if bi.Path != EnclaveMainPath {
		return fmt.Errorf("the binary is %q, not the enclave (%s)", bi.Path, EnclaveMainPath)
	}
	want := map[string]string{"CGO_ENABLED": "0", "GOOS": "linux", "GOARCH": arch.GOARCH(), "-trimpath": "true"}
	if arch == X86_64 {
		want["GOAMD64"] = "v1"
	} else {
		want["GOARM64"] = "v8.0"
	}
	got := map[string]string{}
	for _, s := range bi.Settings {
		got[s.Key] = s.Value
		if strings.HasPrefix(s.Key, "vcs") {
			return fmt.Errorf("the binary carries VCS information (%s): it was not built with -buildvcs=false"+hint, s.Key)
		}
	}
	for _, k := range []string{"GOOS", "GOARCH", "GOAMD64", "GOARM64", "CGO_ENABLED", "-trimpath"} {
		if v, ok := want[k]; ok && got[k] != v {
			return fmt.Errorf("the binary was built with %s=%q, want %q"+hint, k, got[k], v)
		}
	}
	// With -trimpath the build information leaves out -ldflags: read the build ID note itself.
	id, err := goBuildID(b)
	if err != nil {
		return err
	}
	if id != "" {
		return fmt.Errorf("the binary has the Go build ID %q: it was not linked with -ldflags=-buildid="+hint, id)
	}
	return nil
}

// goBuildID returns the Go build ID in an ELF binary's .note.go.buildid note ("" when linked
// with -buildid=).
func goBuildID(bin []byte) (string, error) {
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		return "", fmt.Errorf("not an ELF binary: %w", err)
	}
	defer f.Close()
	s := f.Section(".note.go.buildid")
	if s == nil {
		return "", nil
	}
	b, err := s.Data()
	if err != nil {
		return "", fmt.Errorf("failed to read the build ID note: %w", err)
	}
	// namesz, descsz, type (4 bytes each, the file's byte order), "Go\x00\x00", desc.
	if len(b) < 16 || string(b[12:16]) != "Go\x00\x00" {
		return "", errors.New("malformed Go build ID note")
	}
	n := f.ByteOrder.Uint32(b[4:8])
	if uint64(n) > uint64(len(b)-16) {
		return "", errors.New("malformed Go build ID note")
	}
	return string(b[16 : 16+n]), nil
}
