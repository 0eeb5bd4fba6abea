package build

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/agentkeys/broker/eif"
	"github.com/agentkeys/broker/eif/cpio"
	"github.com/agentkeys/broker/shared/policy"
)

// Where the enclave's files are once init has moved /rootfs to / (paths the enclave sees).
const (
	BinaryPath = "/agentkeys-enclave"
	PolicyPath = "/etc/agentkeys/policy.json"
	Listen     = "vsock:5005"
)

// Command is the command line init runs (the /cmd file, one argument a line): the policy and
// the listener, then extra, the deployment's own flags (in nitro mode --kms-key-id,
// --kms-region and --egress), which are measured with the rest of the application ramdisk.
// Without --simulated the enclave runs in nitro mode.
func Command(extra ...string) []string {
	return append([]string{BinaryPath, "--policy", PolicyPath, "--listen", Listen}, extra...)
}

// CheckEnclaveArgs refuses extra arguments that the image cannot carry or must not: an empty
// one, a newline (the /cmd file has one argument a line), --simulated, and the flags the image
// sets itself.
func CheckEnclaveArgs(extra []string) error {
	for _, a := range extra {
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		switch {
		case a == "" || strings.ContainsAny(a, "\n\x00"):
			return fmt.Errorf("enclave argument %q is empty or holds a newline or NUL", a)
		case strings.HasPrefix(a, "-") && (name == "simulated" || name == "policy" || name == "listen"):
			return fmt.Errorf("enclave argument %q: the image sets --policy and --listen itself, and never --simulated", a)
		}
	}
	return nil
}

// Metadata values that nitro-cli takes from the build machine and the clock, fixed here so the
// metadata section depends only on the inputs.
const (
	ImageName        = "agentkeys-enclave"
	BuildTool        = "agentkeys-eif"
	BuildToolVersion = "1"                         // bump when the layout below changes
	BuildTime        = "1970-01-01T00:00:00+00:00" // chrono's to_rfc3339 of the Unix epoch
)

// Inputs are everything an image is built from.
type Inputs struct {
	Arch          Arch
	Blobs         *Blobs
	EnclaveBinary []byte // built by GoBuild (see CheckBinary)
	Policy        []byte // the policy file, measured as given
	// EnclaveArgs are extra arguments of the enclave's command line (see Command).
	EnclaveArgs []string
	// ImageVersion goes into the metadata only. Empty: the SHA-256 of the application ramdisk,
	// as nitro-cli defaults to the Docker image ID, a SHA-256 of the image's content.
	ImageVersion string
}

// BootstrapRamdisk is the first ramdisk (PCR1): the init and the NSM driver, laid out as nitro-cli's
// bootstrap ramfs (enclave_build/src/yaml_generator.rs, get_bootstrap_ramfs): dev/, init and
// nsm.ko, all mode 0755. init loads ./nsm.ko with finit_module and deletes it.
func BootstrapRamdisk(b *Blobs) ([]byte, error) {
	return cpio.Archive([]cpio.Entry{
		cpio.Dir("dev", 0o755),
		cpio.File("init", 0o755, b.Init),
		cpio.File("nsm.ko", 0o755, b.NSM),
	})
}

// ApplicationRamdisk is the second ramdisk (PCR2), nitro-cli's customer ramfs
// (get_customer_ramfs): the enclave's root filesystem under rootfs/, which init bind-mounts
// and chroots into, with the directories init mounts on (dev, run, sys, var, proc, tmp), and
// the files init reads before that, cmd and env (mode 0644, one entry a line). env is empty:
// init then gives the command its default environment, PATH=/sbin:/usr/sbin:/bin:/usr/bin.
func ApplicationRamdisk(binary, policyFile []byte, extra ...string) ([]byte, error) {
	if err := CheckEnclaveArgs(extra); err != nil {
		return nil, err
	}
	cmd := strings.Join(Command(extra...), "\n") + "\n"
	return cpio.Archive([]cpio.Entry{
		cpio.Dir("rootfs", 0o755),
		cpio.File("rootfs"+BinaryPath, 0o755, binary),
		cpio.Dir("rootfs/etc", 0o755),
		cpio.Dir("rootfs/etc/agentkeys", 0o755),
		cpio.File("rootfs"+PolicyPath, 0o644, policyFile),
		cpio.Dir("rootfs/dev", 0o755),
		cpio.Dir("rootfs/run", 0o755),
		cpio.Dir("rootfs/sys", 0o755),
		cpio.Dir("rootfs/var", 0o755),
		cpio.Dir("rootfs/proc", 0o755),
		cpio.Dir("rootfs/tmp", 0o755),
		cpio.File("cmd", 0o644, []byte(cmd)),
		cpio.File("env", 0o644, nil),
	})
}

// Cmdline is the kernel command line from the cmdline blob, trimmed as nitro-cli trims it.
func Cmdline(b *Blobs) []byte { return []byte(strings.TrimSpace(string(b.Cmdline))) }

// KernelInfo reads the operating system and kernel version from the kernel configuration's
// third line ("# Linux/x86_64 4.14.256-209.484.amzn2.x86_64 Kernel Configuration" gives
// "Linux" and "4.14.256"), the way nitro-cli's generate_build_info does; "Unknown" when absent.
func KernelInfo(config []byte) (os, version string) {
	os, version = "Unknown", "Unknown"
	sc := bufio.NewScanner(bytes.NewReader(config))
	for i := 0; i < 3 && sc.Scan(); i++ {
		if i != 2 {
			continue
		}
		parts := splitAny(sc.Text(), " /-")
		if len(parts) > 1 {
			os = parts[1]
		}
		if len(parts) > 3 {
			version = parts[3]
		}
	}
	return os, version
}

// splitAny splits s at every byte in seps, keeping empty fields (Rust's str::split on chars).
func splitAny(s, seps string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(seps, s[i]) >= 0 {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// customMetadata is the metadata section's CustomMetadata: the digests of every input, so that
// `nitro-cli describe-eif` shows what the image was built from.
type customMetadata struct {
	Cmd                 []string          `json:"cmd"`
	EnclaveBinarySHA384 string            `json:"enclave_binary_sha384"`
	PolicySHA384        string            `json:"policy_sha384"`
	BlobsSHA384         map[string]string `json:"blobs_sha384"`
}

// Metadata is the metadata section for in, given the application ramdisk.
func Metadata(in Inputs, appRamdisk []byte) ([]byte, error) {
	osName, kernel := KernelInfo(in.Blobs.KernelConfig)
	blobs := map[string]string{}
	for n, d := range in.Blobs.Digests {
		blobs[n] = hex.EncodeToString(d[:])
	}
	bin, pol := sha512.Sum384(in.EnclaveBinary), sha512.Sum384(in.Policy)
	custom, err := json.Marshal(customMetadata{
		Cmd:                 Command(in.EnclaveArgs...),
		EnclaveBinarySHA384: hex.EncodeToString(bin[:]),
		PolicySHA384:        hex.EncodeToString(pol[:]),
		BlobsSHA384:         blobs,
	})
	if err != nil {
		return nil, fmt.Errorf("failed to encode the custom metadata: %w", err)
	}
	version := in.ImageVersion
	if version == "" {
		d := sha256.Sum256(appRamdisk)
		version = hex.EncodeToString(d[:])
	}
	return eif.MarshalMetadata(eif.Metadata{
		ImageName:    ImageName,
		ImageVersion: version,
		BuildMetadata: eif.BuildMetadata{
			BuildTime:        BuildTime,
			BuildTool:        BuildTool,
			BuildToolVersion: BuildToolVersion,
			OperatingSystem:  osName,
			KernelVersion:    kernel,
		},
		CustomMetadata: custom,
	})
}

// Build writes the enclave image for in to w: a version 4 EIF with nitro-cli's section order
// (kernel, cmdline, metadata, bootstrap ramdisk, application ramdisk), the aarch64 flag for
// aarch64, nitro-cli's default memory and CPUs, and no signature. The bytes depend only on in.
func Build(w io.Writer, in Inputs) error {
	if in.Blobs == nil {
		return errors.New("build: no blobs")
	}
	if in.Arch != X86_64 && in.Arch != AArch64 {
		return fmt.Errorf("build: unknown architecture %q", in.Arch)
	}
	if len(in.EnclaveBinary) == 0 {
		return errors.New("build: the enclave binary is empty")
	}
	if _, err := policy.Parse(in.Policy); err != nil {
		return fmt.Errorf("build: the policy would not load in the enclave: %w", err)
	}
	boot, err := BootstrapRamdisk(in.Blobs)
	if err != nil {
		return fmt.Errorf("build: bootstrap ramdisk: %w", err)
	}
	app, err := ApplicationRamdisk(in.EnclaveBinary, in.Policy, in.EnclaveArgs...)
	if err != nil {
		return fmt.Errorf("build: application ramdisk: %w", err)
	}
	meta, err := Metadata(in, app)
	if err != nil {
		return fmt.Errorf("build: %w", err)
	}
	var flags uint16
	if in.Arch == AArch64 {
		flags = eif.FlagARM64
	}
	return eif.Write(w, []eif.SectionInput{
		eif.BytesSection(eif.SectionKernel, in.Blobs.Kernel),
		eif.BytesSection(eif.SectionCmdline, Cmdline(in.Blobs)),
		eif.BytesSection(eif.SectionMetadata, meta),
		eif.BytesSection(eif.SectionRamdisk, boot),
		eif.BytesSection(eif.SectionRamdisk, app),
	}, eif.WithFlags(flags))
}
