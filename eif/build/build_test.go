package build

import (
	"bytes"
	"crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/agentkeys/broker/eif"
	"github.com/agentkeys/broker/eif/cpio"
	"github.com/agentkeys/broker/eif/internal/fakeblobs"
)

const policyA = `{"issuer": "https://broker.example.com"}`
const policyB = `{"issuer": "https://other.example.com"}`

func loadFake(t *testing.T) *Blobs {
	t.Helper()
	dir, pinFile := fakeblobs.Write(t)
	pins, err := LoadPins(pinFile)
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadBlobs(dir, X86_64, pins, pinFile, DefaultMaxInputSize)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func build(t *testing.T, in Inputs) []byte {
	t.Helper()
	var out bytes.Buffer
	if err := Build(&out, in); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func parse(t *testing.T, b []byte) (*eif.Image, eif.Measurements) {
	t.Helper()
	im, err := eif.Parse(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	m, err := im.Measurements()
	if err != nil {
		t.Fatal(err)
	}
	return im, m
}

func section(t *testing.T, im *eif.Image, i int) []byte {
	t.Helper()
	b := make([]byte, im.Sections[i].Size)
	if _, err := im.SectionData(i).ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBuildLayout(t *testing.T) {
	blobs := loadFake(t)
	binary := []byte("synthetic enclave binary")
	in := Inputs{Arch: X86_64, Blobs: blobs, EnclaveBinary: binary, Policy: []byte(policyA)}
	b := build(t, in)
	if again := build(t, in); !bytes.Equal(b, again) {
		t.Fatal("two builds from the same inputs differ")
	}
	im, m := parse(t, b)
	if im.Header.Version != 4 || im.Header.ARM64() {
		t.Errorf("header version %d arm64 %v, want 4 and x86_64", im.Header.Version, im.Header.ARM64())
	}
	var types []eif.SectionType
	for _, s := range im.Sections {
		types = append(types, s.Type)
	}
	if want := []eif.SectionType{eif.SectionKernel, eif.SectionCmdline, eif.SectionMetadata, eif.SectionRamdisk, eif.SectionRamdisk}; !slices.Equal(types, want) {
		t.Fatalf("sections %v, want %v", types, want)
	}
	files := fakeblobs.Files()
	if !bytes.Equal(section(t, im, 0), files["bzImage"]) {
		t.Error("kernel section is not the bzImage blob")
	}
	if got := string(section(t, im, 1)); got != strings.TrimSpace(fakeblobs.Cmdline) {
		t.Errorf("cmdline %q, want the blob without its newline", got)
	}

	boot, err := cpio.Parse(section(t, im, 3), 100)
	if err != nil {
		t.Fatal(err)
	}
	wantBoot := []struct {
		name string
		mode uint32
		data []byte
	}{{"dev", 0o040755, nil}, {"init", 0o100755, files["init"]}, {"nsm.ko", 0o100755, files["nsm.ko"]}}
	if len(boot) != len(wantBoot) {
		t.Fatalf("bootstrap ramdisk has %d entries, want %d", len(boot), len(wantBoot))
	}
	for i, w := range wantBoot {
		if boot[i].Name != w.name || boot[i].Mode != w.mode || !bytes.Equal(boot[i].Data, w.data) || boot[i].UID != 0 || boot[i].Mtime != 0 {
			t.Errorf("bootstrap entry %d = %+v, want %s mode %o", i, boot[i].Header, w.name, w.mode)
		}
	}

	app, err := cpio.Parse(section(t, im, 4), 100)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range app {
		names = append(names, r.Name)
	}
	wantNames := []string{"rootfs", "rootfs/agentkeys-enclave", "rootfs/etc", "rootfs/etc/agentkeys", "rootfs/etc/agentkeys/policy.json",
		"rootfs/dev", "rootfs/run", "rootfs/sys", "rootfs/var", "rootfs/proc", "rootfs/tmp", "cmd", "env"}
	if !slices.Equal(names, wantNames) {
		t.Fatalf("application ramdisk holds %q, want %q", names, wantNames)
	}
	check := func(name string, mode uint32, data string) {
		r, err := cpio.Find(app, name)
		if err != nil {
			t.Fatal(err)
		}
		if r.Mode != mode || string(r.Data) != data {
			t.Errorf("%s: mode %o data %q, want %o %q", name, r.Mode, r.Data, mode, data)
		}
	}
	check("rootfs/agentkeys-enclave", 0o100755, string(binary))
	check("rootfs/etc/agentkeys/policy.json", 0o100644, policyA)
	// init reads /cmd one argument a line (aws-nitro-enclaves-sdk-bootstrap init/init.c, read_config).
	check("cmd", 0o100644, "/agentkeys-enclave\n--policy\n/etc/agentkeys/policy.json\n--listen\nvsock:5005\n")
	check("env", 0o100644, "")

	md, err := im.Metadata(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	bm := md.BuildMetadata
	if md.ImageName != "agentkeys-enclave" || bm.BuildTime != "1970-01-01T00:00:00+00:00" || bm.BuildTool != "agentkeys-eif" ||
		bm.OperatingSystem != "Linux" || bm.KernelVersion != "4.14.256" || len(md.ImageVersion) != 64 {
		t.Errorf("metadata %+v", md)
	}
	var custom customMetadata
	if err := json.Unmarshal(md.CustomMetadata, &custom); err != nil {
		t.Fatal(err)
	}
	if custom.EnclaveBinarySHA384 != fmt.Sprintf("%x", sha512.Sum384(binary)) || custom.PolicySHA384 != fmt.Sprintf("%x", sha512.Sum384([]byte(policyA))) ||
		custom.BlobsSHA384["init"] != fmt.Sprintf("%x", sha512.Sum384(files["init"])) || len(custom.BlobsSHA384) != 5 || !slices.Equal(custom.Cmd, Command()) {
		t.Errorf("custom metadata %+v", custom)
	}
	if m.PCR0 == "" || m.PCR1 == "" || m.PCR2 == "" || m.PCR8 != "" {
		t.Errorf("measurements %+v", m)
	}

	in.Arch = AArch64
	if im, _ := parse(t, build(t, in)); !im.Header.ARM64() {
		t.Error("an aarch64 image lacks the aarch64 header flag")
	}
}

// TestPCRsFollowInputs: the policy and the binary are in PCR0 and PCR2 but not PCR1; the init is
// in PCR0 and PCR1 but not PCR2; the metadata-only image version is in none.
func TestPCRsFollowInputs(t *testing.T) {
	blobs := loadFake(t)
	base := Inputs{Arch: X86_64, Blobs: blobs, EnclaveBinary: []byte("bin"), Policy: []byte(policyA)}
	_, m0 := parse(t, build(t, base))

	for _, tc := range []struct {
		name           string
		change         func(in *Inputs)
		pcr0, pcr1, p2 bool // whether each must change
	}{
		{"policy", func(in *Inputs) { in.Policy = []byte(policyB) }, true, false, true},
		{"policy whitespace", func(in *Inputs) { in.Policy = []byte(policyA + "\n") }, true, false, true},
		{"binary", func(in *Inputs) { in.EnclaveBinary = []byte("bin2") }, true, false, true},
		{"init", func(in *Inputs) { b := *in.Blobs; b.Init = []byte("other init"); in.Blobs = &b }, true, true, false},
		{"image version", func(in *Inputs) { in.ImageVersion = "v2" }, false, false, false},
		{"enclave args", func(in *Inputs) { in.EnclaveArgs = []string{"--kms-key-id=arn:aws:kms:us-east-1:1:key/k"} }, true, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := base
			tc.change(&in)
			_, m := parse(t, build(t, in))
			if (m.PCR0 != m0.PCR0) != tc.pcr0 || (m.PCR1 != m0.PCR1) != tc.pcr1 || (m.PCR2 != m0.PCR2) != tc.p2 {
				t.Errorf("PCR0/1/2 changed: %v %v %v, want %v %v %v", m.PCR0 != m0.PCR0, m.PCR1 != m0.PCR1, m.PCR2 != m0.PCR2, tc.pcr0, tc.pcr1, tc.p2)
			}
		})
	}
}

func TestBuildRefuses(t *testing.T) {
	blobs := loadFake(t)
	for _, tc := range []struct {
		name string
		in   Inputs
		want string
	}{
		{"bad policy", Inputs{Arch: X86_64, Blobs: blobs, EnclaveBinary: []byte("b"), Policy: []byte(`{"issuer": 1}`)}, "policy would not load"},
		{"unknown policy field", Inputs{Arch: X86_64, Blobs: blobs, EnclaveBinary: []byte("b"), Policy: []byte(`{"issuer": "https://a.example", "x": 1}`)}, "policy would not load"},
		{"no binary", Inputs{Arch: X86_64, Blobs: blobs, Policy: []byte(policyA)}, "binary is empty"},
		{"no blobs", Inputs{Arch: X86_64, EnclaveBinary: []byte("b"), Policy: []byte(policyA)}, "no blobs"},
		{"arch", Inputs{Arch: "riscv", Blobs: blobs, EnclaveBinary: []byte("b"), Policy: []byte(policyA)}, "architecture"},
		{"simulated arg", Inputs{Arch: X86_64, Blobs: blobs, EnclaveBinary: []byte("b"), Policy: []byte(policyA), EnclaveArgs: []string{"--simulated"}}, "never --simulated"},
		{"policy arg", Inputs{Arch: X86_64, Blobs: blobs, EnclaveBinary: []byte("b"), Policy: []byte(policyA), EnclaveArgs: []string{"-policy=/tmp/p"}}, "sets --policy"},
		{"newline arg", Inputs{Arch: X86_64, Blobs: blobs, EnclaveBinary: []byte("b"), Policy: []byte(policyA), EnclaveArgs: []string{"--egress=a\n--simulated"}}, "newline"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Build(&bytes.Buffer{}, tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Build: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestLoadBlobsChecksPins(t *testing.T) {
	dir, pinFile := fakeblobs.Write(t)
	pins, err := LoadPins(pinFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "init"), []byte("a different init"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = LoadBlobs(dir, X86_64, pins, pinFile, DefaultMaxInputSize)
	if !errors.Is(err, ErrPinMismatch) || !strings.Contains(err.Error(), "init in "+dir) || !strings.Contains(err.Error(), pinFile) {
		t.Fatalf("modified init: %v, want ErrPinMismatch naming init and the pin file", err)
	}

	dir, pinFile = fakeblobs.Write(t)
	pins, _ = LoadPins(pinFile)
	delete(pins, "bzImage")
	if _, err := LoadBlobs(dir, X86_64, pins, pinFile, DefaultMaxInputSize); err == nil || !strings.Contains(err.Error(), "bzImage has no SHA-384 pin") {
		t.Fatalf("unpinned kernel: %v", err)
	}
	pins, _ = LoadPins(pinFile)
	if _, err := LoadBlobs(dir, AArch64, pins, pinFile, DefaultMaxInputSize); err == nil || !strings.Contains(err.Error(), "Image has no SHA-384 pin") {
		t.Fatalf("aarch64 with x86_64 pins: %v", err)
	}
	if _, err := LoadBlobs(dir, X86_64, pins, pinFile, 10); err == nil || !strings.Contains(err.Error(), "larger than 10 bytes") {
		t.Fatalf("size limit: %v", err)
	}
	if err := os.Remove(filepath.Join(dir, "nsm.ko")); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadBlobs(dir, X86_64, pins, pinFile, DefaultMaxInputSize); err == nil || !strings.Contains(err.Error(), "failed to read blob nsm.ko") {
		t.Fatalf("missing nsm.ko: %v", err)
	}
}

func TestParsePins(t *testing.T) {
	h := strings.Repeat("ab", 48)
	for _, tc := range []struct {
		name, in string
		want     []string // names, or nil when an error is expected
		err      string
	}{
		{"sha384sum output", h + "  init\n" + h + " *nsm.ko\n", []string{"init", "nsm.ko"}, ""},
		{"comments and blanks", "# release 1.5.0\n\n" + h + "  cmdline\r\n", []string{"cmdline"}, ""},
		{"empty", "", []string{}, ""},
		{"short digest", h[:94] + "  init\n", nil, "want"},
		{"not hex", strings.Repeat("zz", 48) + "  init\n", nil, "not 96 hexadecimal"},
		{"one space", h + " init\n", nil, "want"},
		{"path", h + "  blobs/init\n", nil, "not a plain file name"},
		{"dotdot", h + "  ..\n", nil, "not a plain file name"},
		{"duplicate", h + "  init\n" + h + "  init\n", nil, "pinned twice"},
		{"no name", h + "  \n", nil, "want"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParsePins(strings.NewReader(tc.in))
			if tc.want == nil {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ParsePins: %v, want an error containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for n := range p {
				names = append(names, n)
			}
			slices.Sort(names)
			if !slices.Equal(names, tc.want) && len(names)+len(tc.want) > 0 {
				t.Fatalf("names %q, want %q", names, tc.want)
			}
			again, err := ParsePins(bytes.NewReader(p.Format()))
			if err != nil || len(again) != len(p) {
				t.Fatalf("Format does not parse back: %v", err)
			}
		})
	}
}

// TestShippedPins parses the pin files in eif/: they must stay readable, and name only blobs of
// their architecture.
func TestShippedPins(t *testing.T) {
	for file, arch := range map[string]Arch{"../blobs.sha384": X86_64, "../blobs-aarch64.sha384": AArch64} {
		p, err := LoadPins(file)
		if err != nil {
			t.Fatal(err)
		}
		for n := range p {
			if !slices.Contains(arch.BlobNames(), n) {
				t.Errorf("%s pins %s, which is not a %s blob", file, n, arch)
			}
		}
		if len(p) < 4 {
			t.Errorf("%s pins %d blobs, want at least the 4 whose digests are known", file, len(p))
		}
	}
}

func TestKernelInfo(t *testing.T) {
	for _, tc := range []struct{ config, os, version string }{
		{fakeblobs.Config, "Linux", "4.14.256"},
		// nitro-cli 1.5.0 blobs/aarch64/Image.config, third line.
		{"#\n# Automatically generated file; DO NOT EDIT.\n# Linux/arm64 4.14.256-209.484.amzn2.aarch64 Kernel Configuration\n", "Linux", "4.14.256"},
		{"#\n#\n# Linux/x86_64 6.6.79 Kernel Configuration\n", "Linux", "6.6.79"},
		{"#\n", "Unknown", "Unknown"},
		{"", "Unknown", "Unknown"},
		{"a\nb\nc\n", "Unknown", "Unknown"},
	} {
		if os, v := KernelInfo([]byte(tc.config)); os != tc.os || v != tc.version {
			t.Errorf("KernelInfo(%q) = %q %q, want %q %q", tc.config, os, v, tc.os, tc.version)
		}
	}
}

func TestEnviron(t *testing.T) {
	g := GoBuild{Arch: AArch64, Env: []string{"HOME=/root", "GOFLAGS=-gcflags=all=-N", "GOAMD64=v3", "CGO_ENABLED=1", "GOENV=/x", "GOEXPERIMENT=foo", "GOTOOLCHAIN=local"}}
	env := g.Environ()
	got := map[string][]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		got[k] = append(got[k], v)
	}
	want := map[string]string{"HOME": "/root", "GOFLAGS": "", "GOAMD64": "v1", "GOARM64": "v8.0", "CGO_ENABLED": "0", "GOOS": "linux",
		"GOARCH": "arm64", "GOENV": "off", "GOEXPERIMENT": "", "GOFIPS140": "off", "GOTOOLCHAIN": DefaultToolchain}
	for k, v := range want {
		if len(got[k]) != 1 || got[k][0] != v {
			t.Errorf("%s = %q, want exactly %q", k, got[k], v)
		}
	}
	c := g.Cmd(t.Context(), "/out")
	if want := []string{"build", "-trimpath", "-buildvcs=false", "-ldflags=-buildid=", "-o", "/out", EnclavePackage}; !slices.Equal(c.Args[1:], want) {
		t.Errorf("go %q, want %q", c.Args[1:], want)
	}
}
