package build

import (
	"bufio"
	"bytes"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Arch is the enclave's CPU architecture, named as the nitro-cli blobs directories are.
type Arch string

const (
	X86_64  Arch = "x86_64"
	AArch64 Arch = "aarch64"
)

// ParseArch accepts x86_64 (or amd64) and aarch64 (or arm64).
func ParseArch(s string) (Arch, error) {
	switch s {
	case "x86_64", "amd64":
		return X86_64, nil
	case "aarch64", "arm64":
		return AArch64, nil
	}
	return "", fmt.Errorf("unknown architecture %q (want x86_64 or aarch64)", s)
}

// Kernel is the kernel blob's file name: bzImage on x86_64, Image on aarch64.
func (a Arch) Kernel() string {
	if a == AArch64 {
		return "Image"
	}
	return "bzImage"
}

// GOARCH is Go's name for the architecture.
func (a Arch) GOARCH() string {
	if a == AArch64 {
		return "arm64"
	}
	return "amd64"
}

// BlobNames are the blobs an image is built from, in the order they are checked and listed: the
// kernel, its configuration (read for the metadata's kernel version, as nitro-cli does), the
// kernel command line, the init and the NSM driver. nitro-cli's linuxkit blob is not used.
func (a Arch) BlobNames() []string {
	k := a.Kernel()
	return []string{k, k + ".config", "cmdline", "init", "nsm.ko"}
}

// Pins maps a blob's file name to the SHA-384 it must have.
type Pins map[string][48]byte

// ParsePins reads a pin file: the output of `sha384sum NAME...` run in the blobs directory. Each
// line is 96 hexadecimal digits, two spaces (or a space and "*") and a file name without a
// directory; blank lines and lines starting with "#" are ignored. A name may appear once.
func ParsePins(r io.Reader) (Pins, error) {
	p := Pins{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 4096)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if len(line) < 99 || (line[96:98] != "  " && line[96:98] != " *") {
			return nil, fmt.Errorf("pin file line %d: want \"<96 hex digits>  <file name>\" (sha384sum output)", n)
		}
		var d [48]byte
		if _, err := hex.Decode(d[:], []byte(line[:96])); err != nil {
			return nil, fmt.Errorf("pin file line %d: the digest is not 96 hexadecimal digits", n)
		}
		name := line[98:]
		if name != filepath.Base(name) || strings.ContainsAny(name, "/\\") || name == "." || name == ".." {
			return nil, fmt.Errorf("pin file line %d: %q is not a plain file name (run sha384sum inside the blobs directory)", n, name)
		}
		if _, dup := p[name]; dup {
			return nil, fmt.Errorf("pin file line %d: %s is pinned twice", n, name)
		}
		p[name] = d
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("failed to read the pin file: %w", err)
	}
	return p, nil
}

// LoadPins reads the pin file at path.
func LoadPins(path string) (Pins, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("failed to open the blobs pin file: %w", err)
	}
	defer f.Close()
	p, err := ParsePins(io.LimitReader(f, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// Format writes p as ParsePins reads it, names sorted.
func (p Pins) Format() []byte {
	names := make([]string, 0, len(p))
	for n := range p {
		names = append(names, n)
	}
	sort.Strings(names)
	var b bytes.Buffer
	for _, n := range names {
		d := p[n]
		fmt.Fprintf(&b, "%x  %s\n", d[:], n)
	}
	return b.Bytes()
}

// Blobs are the AWS Nitro Enclaves blobs an image is built from, each checked against its pin.
type Blobs struct {
	Kernel, KernelConfig, Cmdline, Init, NSM []byte
	// Digests holds each blob's SHA-384 by file name (as in the pin file).
	Digests map[string][48]byte
}

// DefaultMaxInputSize bounds each file the builder reads (blobs, enclave binary).
const DefaultMaxInputSize = 256 << 20

// ErrPinMismatch is wrapped by LoadBlobs's error when a blob's digest differs from its pin.
var ErrPinMismatch = errors.New("blob does not match its pin")

// LoadBlobs reads the blobs for arch from dir (nitro-cli's /usr/share/nitro_enclaves/blobs) and
// checks each against pins: a blob without a pin, or whose SHA-384 differs from it, is refused.
// pinFile names the pin file in errors. Each blob may be at most maxSize bytes.
func LoadBlobs(dir string, arch Arch, pins Pins, pinFile string, maxSize int64) (*Blobs, error) {
	b := &Blobs{Digests: map[string][48]byte{}}
	dst := []*[]byte{&b.Kernel, &b.KernelConfig, &b.Cmdline, &b.Init, &b.NSM}
	for i, name := range arch.BlobNames() {
		want, ok := pins[name]
		if !ok {
			return nil, fmt.Errorf("blob %s has no SHA-384 pin in %s\n\thint: check the file is the release's (%s's comments give its git blob id: compare with `git hash-object %s`), then add the line `sha384sum %s` prints in the blobs directory (docs/eif.md, \"Building the image\")", name, pinFile, pinFile, name, name)
		}
		data, err := ReadFileMax(filepath.Join(dir, name), maxSize)
		if err != nil {
			return nil, fmt.Errorf("failed to read blob %s: %w", name, err)
		}
		got := sha512.Sum384(data)
		if got != want {
			return nil, fmt.Errorf("%w: %s in %s has SHA-384 %x, but %s pins %x\n\thint: these are not the blobs the pin file names (another nitro-cli release?); use the pinned release, or update %s if you mean to change it",
				ErrPinMismatch, name, dir, got, pinFile, want, pinFile)
		}
		*dst[i] = data
		b.Digests[name] = got
	}
	return b, nil
}

// ReadFileMax reads a whole file of at most maxSize bytes.
func ReadFileMax(path string, maxSize int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxSize+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > maxSize {
		return nil, fmt.Errorf("%s is larger than %d bytes (--max-input-size)", path, maxSize)
	}
	return data, nil
}
