// Command agentkeys-eif builds the AgentKeys enclave image reproducibly: the same source tree,
// Go toolchain and pinned AWS Nitro Enclaves blobs give the same EIF, byte for byte, and so the
// same PCRs, wherever and whenever it is built.
//
// Usage:
//
//	agentkeys-eif binary --out FILE
//	agentkeys-eif build --blobs DIR --blobs-pins FILE --policy FILE --enclave-binary FILE --out FILE
//	agentkeys-eif pins --blobs DIR
//	agentkeys-eif ls FILE.eif
//
// `make eif` runs the first two and prints the PCRs. See docs/eif.md, "Building the image".
package main

import (
	"context"
	"crypto/sha1"
	"crypto/sha512"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/agentkeys/broker/eif"
	"github.com/agentkeys/broker/eif/build"
	"github.com/agentkeys/broker/eif/cpio"
	"github.com/agentkeys/broker/shared/cliflag"
)

const usage = `usage: agentkeys-eif COMMAND [flags]

Commands:
  binary   build the enclave binary reproducibly (go build -trimpath -buildvcs=false
           -ldflags=-buildid=, CGO_ENABLED=0, GOFLAGS and go env settings ignored,
           the pinned Go toolchain)
  build    build the enclave image (EIF) from the blobs, the binary and the policy
  pins     print the SHA-384 (and git blob id) of each blob in a blobs directory,
           to compare with a release and fill a pin file
  ls       list the files in an EIF's ramdisks, with their modes and SHA-384

Run agentkeys-eif COMMAND -h for its flags. Exit status: 0 on success, 1 on
failure, 2 on a usage error.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func fail(stderr io.Writer, err error) int {
	fmt.Fprintf(stderr, "agentkeys-eif: %v\n", err)
	if errors.As(err, new(usageError)) {
		return 2
	}
	return 1
}

func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch cmd, args := args[0], args[1:]; cmd {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	case "binary":
		err = binary(ctx, args, stdout, stderr)
	case "build":
		err = buildImage(args, stdout, stderr)
	case "pins":
		err = pins(args, stdout, stderr)
	case "ls":
		err = list(args, stdout, stderr)
	default:
		err = usageError{fmt.Sprintf("unknown command %q (want binary, build, pins or ls)", cmd)}
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return fail(stderr, err)
	}
	return 0
}

// parse parses a subcommand's flags; -h prints them to stdout. Errors name
// the flag with -- (shared/cliflag).
func parse(fs *flag.FlagSet, args []string, stdout io.Writer, synopsis string) error {
	if err := cliflag.Parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stdout, "usage: agentkeys-eif %s\n\nFlags:\n", synopsis)
			cliflag.PrintDefaults(stdout, fs)
			return err
		}
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))}
	}
	return nil
}

func archFlag(fs *flag.FlagSet) *string {
	return fs.String("arch", "x86_64", "enclave architecture: x86_64 or aarch64")
}

func binary(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("binary", flag.ContinueOnError)
	source := fs.String("source", ".", "module root of the source tree to build")
	out := fs.String("out", "", "where to write the enclave binary; required")
	arch := archFlag(fs)
	toolchain := fs.String("go-toolchain", build.DefaultToolchain, `Go toolchain (GOTOOLCHAIN); "local" for the go command as it is`)
	if err := parse(fs, args, stdout, "binary --out FILE [--source DIR] [--arch A] [--go-toolchain V]"); err != nil {
		return err
	}
	a, err := build.ParseArch(*arch)
	if err != nil {
		return usageError{err.Error()}
	}
	if *out == "" {
		return usageError{"binary: --out is required"}
	}
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
		return err
	}
	g := build.GoBuild{SourceDir: *source, Arch: a, Toolchain: *toolchain, Stderr: stderr}
	if err := g.Run(ctx, *out); err != nil {
		return err
	}
	b, err := build.ReadFileMax(*out, build.DefaultMaxInputSize)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "agentkeys-eif: built %s (%d bytes, SHA-384 %x)\n", *out, len(b), sha512.Sum384(b))
	return nil
}

func buildImage(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("build", flag.ContinueOnError)
	blobs := fs.String("blobs", "", "AWS Nitro Enclaves blobs directory (e.g. /usr/share/nitro_enclaves/blobs); required")
	pinFile := fs.String("blobs-pins", "", "pin file: the SHA-384 of each blob, sha384sum format (e.g. eif/blobs.sha384); required")
	policyFile := fs.String("policy", "", "enclave policy file (JSON; see docs/protocol.md); required")
	binFile := fs.String("enclave-binary", "", "enclave binary built by `agentkeys-eif binary`; required")
	out := fs.String("out", "", "where to write the EIF; required")
	arch := archFlag(fs)
	version := fs.String("image-version", "", "metadata ImageVersion (not measured); default: the SHA-256 of the application ramdisk")
	maxSize := fs.Int64("max-input-size", build.DefaultMaxInputSize, "largest blob or enclave binary read, in bytes")
	var enclaveArgs []string
	fs.Func("enclave-arg", "an extra argument of the enclave's command line, measured in PCR0 and PCR2 (repeat it; e.g. --enclave-arg=--kms-key-id=ARN)", func(s string) error {
		enclaveArgs = append(enclaveArgs, s)
		return nil
	})
	if err := parse(fs, args, stdout, "build --blobs DIR --blobs-pins FILE --policy FILE --enclave-binary FILE --out FILE [--arch A] [--enclave-arg ARG]..."); err != nil {
		return err
	}
	for name, v := range map[string]string{"--blobs": *blobs, "--blobs-pins": *pinFile, "--policy": *policyFile, "--enclave-binary": *binFile, "--out": *out} {
		if v == "" {
			return usageError{"build: " + name + " is required"}
		}
	}
	a, err := build.ParseArch(*arch)
	if err != nil {
		return usageError{err.Error()}
	}
	pins, err := build.LoadPins(*pinFile)
	if err != nil {
		return err
	}
	bl, err := build.LoadBlobs(*blobs, a, pins, *pinFile, *maxSize)
	if err != nil {
		return err
	}
	bin, err := build.ReadFileMax(*binFile, *maxSize)
	if err != nil {
		return fmt.Errorf("failed to read the enclave binary: %w", err)
	}
	if err := build.CheckBinaryBytes(bin, a); err != nil {
		return fmt.Errorf("%s: %w", *binFile, err)
	}
	pol, err := build.ReadFileMax(*policyFile, 1<<20)
	if err != nil {
		return fmt.Errorf("failed to read the policy: %w", err)
	}
	if err := writeAtomic(*out, func(w io.Writer) error {
		return build.Build(w, build.Inputs{Arch: a, Blobs: bl, EnclaveBinary: bin, Policy: pol, EnclaveArgs: enclaveArgs, ImageVersion: *version})
	}); err != nil {
		return err
	}
	st, err := os.Stat(*out)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "agentkeys-eif: wrote %s (%d bytes); print its PCRs with: agentkeys-attest pcrs %s\n", *out, st.Size(), *out)
	return nil
}

// writeAtomic writes a file through a temporary file in the same directory, renamed at the end.
func writeAtomic(path string, write func(io.Writer) error) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

func pins(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("pins", flag.ContinueOnError)
	blobs := fs.String("blobs", "/usr/share/nitro_enclaves/blobs", "AWS Nitro Enclaves blobs directory")
	arch := archFlag(fs)
	maxSize := fs.Int64("max-input-size", build.DefaultMaxInputSize, "largest blob read, in bytes")
	if err := parse(fs, args, stdout, "pins [--blobs DIR] [--arch A]"); err != nil {
		return err
	}
	a, err := build.ParseArch(*arch)
	if err != nil {
		return usageError{err.Error()}
	}
	fmt.Fprintf(stdout, "# SHA-384 of the %s blobs in %s; each line's comment is the file's git blob id\n", a, *blobs)
	fmt.Fprintf(stdout, "# (`git ls-tree` of the nitro-cli release shows the same ids for the files it ships).\n")
	var failed []error
	for _, name := range a.BlobNames() {
		b, err := build.ReadFileMax(filepath.Join(*blobs, name), *maxSize)
		if err != nil {
			fmt.Fprintf(stdout, "# %s: not read\n", name)
			failed = append(failed, fmt.Errorf("failed to read blob %s: %w", name, err))
			continue
		}
		fmt.Fprintf(stdout, "# %s git blob %x\n%x  %s\n", name, gitBlobID(b), sha512.Sum384(b), name)
	}
	return errors.Join(failed...)
}

// gitBlobID is `git hash-object`: SHA-1 of "blob <size>\x00" and the bytes. It identifies the
// file in the nitro-cli repository's tree; the pins themselves are SHA-384.
func gitBlobID(b []byte) [20]byte {
	h := sha1.New()
	h.Write([]byte("blob " + strconv.Itoa(len(b)) + "\x00"))
	h.Write(b)
	var id [20]byte
	h.Sum(id[:0])
	return id
}

func list(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("ls", flag.ContinueOnError)
	maxSize := fs.Int64("max-ramdisk-size", 1<<30, "largest ramdisk read, in bytes")
	maxEntries := fs.Int("max-entries", 100000, "most entries read per ramdisk")
	if err := cliflag.Parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stdout, "usage: agentkeys-eif ls [flags] FILE.eif\n\nFlags:\n")
			cliflag.PrintDefaults(stdout, fs)
			return err
		}
		return usageError{err.Error()}
	}
	if fs.NArg() != 1 {
		return usageError{"ls: want exactly one EIF file"}
	}
	f, err := os.Open(fs.Arg(0))
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	im, err := eif.Parse(f, st.Size())
	if err != nil {
		return fmt.Errorf("%s: %w", fs.Arg(0), err)
	}
	n := 0
	for i, s := range im.Sections {
		if s.Type != eif.SectionRamdisk {
			continue
		}
		n++
		if s.Size > uint64(*maxSize) {
			return fmt.Errorf("ramdisk %d is %d bytes, more than --max-ramdisk-size %d", n, s.Size, *maxSize)
		}
		b := make([]byte, s.Size)
		if _, err := im.SectionData(i).ReadAt(b, 0); err != nil {
			return fmt.Errorf("failed to read ramdisk %d: %w", n, err)
		}
		recs, err := cpio.Parse(b, *maxEntries)
		if err != nil {
			return fmt.Errorf("ramdisk %d: %w", n, err)
		}
		fmt.Fprintf(stdout, "ramdisk %d (%d bytes, SHA-384 %x)\n", n, s.Size, sha512.Sum384(b))
		for _, r := range recs {
			sum := "-"
			if r.Mode&cpio.TypeMask == cpio.TypeReg {
				sum = fmt.Sprintf("%x", sha512.Sum384(r.Data))
			}
			fmt.Fprintf(stdout, "  %06o %d:%d %9d %s %s\n", r.Mode, r.UID, r.GID, r.FileSize, sum, r.Name)
		}
	}
	return nil
}
