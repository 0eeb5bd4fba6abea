package reprotest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/agentkeys/broker/eif"
	"github.com/agentkeys/broker/eif/build"
	"github.com/agentkeys/broker/eif/internal/fakeblobs"
)

// TestBoot boots the image's ramdisks on a real Linux kernel, in QEMU (TCG, no KVM needed),
// with a stand-in init in place of the Nitro one (which needs the NSM device and the vsock
// heartbeat of a real enclave). The stand-in lists what the kernel unpacked and starts /cmd
// chrooted into /rootfs, as the Nitro init does. It shows that the kernel's initramfs unpacker
// reads both newc archives as intended and that the enclave binary starts from them. It needs
// qemu-system-x86_64 and a kernel in /boot (Debian: qemu-system-x86, linux-image-cloud-amd64);
// without them it skips, except in CI. Slow: two go builds and a boot (seconds with a warm cache).
func TestBoot(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: boots a VM")
	}
	if runtime.GOARCH != "amd64" || runtime.GOOS != "linux" {
		t.Skip("boots an x86_64 guest; runs on linux/amd64 only")
	}
	need(t, "qemu-system-x86_64")
	kernels, _ := filepath.Glob("/boot/vmlinuz-*")
	if len(kernels) == 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("no kernel in /boot (apt-get install linux-image-cloud-amd64)")
		}
		t.Skip("no kernel in /boot (apt-get install linux-image-cloud-amd64)")
	}
	sort.Strings(kernels)
	kernel, err := os.ReadFile(kernels[len(kernels)-1])
	if err != nil {
		t.Fatal(err)
	}
	root := git(t, ".", "rev-parse", "--show-toplevel")
	tmp := t.TempDir()

	initBin := filepath.Join(tmp, "standin-init")
	c := exec.Command("go", "build", "-trimpath", "-o", initBin, ".")
	c.Dir = filepath.Join("testdata", "standin-init")
	c.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOFLAGS=", "GOTOOLCHAIN=local", "GOPROXY=off")
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("building the stand-in init: %v\n%s", err, out)
	}
	enclave := filepath.Join(tmp, "agentkeys-enclave")
	g := build.GoBuild{SourceDir: root, Arch: build.X86_64, Toolchain: "local", Env: append(os.Environ(), "GOPROXY=off")}
	if err := g.Run(t.Context(), enclave); err != nil {
		t.Fatal(err)
	}
	files := fakeblobs.Files()
	files["bzImage"] = kernel
	files["init"], err = os.ReadFile(initBin)
	if err != nil {
		t.Fatal(err)
	}
	blobs := &build.Blobs{Kernel: files["bzImage"], KernelConfig: files["bzImage.config"], Cmdline: files["cmdline"],
		Init: files["init"], NSM: files["nsm.ko"], Digests: map[string][48]byte{}}
	for n, b := range files {
		blobs.Digests[n] = sha512.Sum384(b)
	}
	bin, err := os.ReadFile(enclave)
	if err != nil {
		t.Fatal(err)
	}
	policy := []byte(`{"issuer": "https://broker.example.com"}`)
	var img bytes.Buffer
	if err := build.Build(&img, build.Inputs{Arch: build.X86_64, Blobs: blobs, EnclaveBinary: bin, Policy: policy}); err != nil {
		t.Fatal(err)
	}

	// Take the kernel, the command line and the ramdisks back out of the EIF, as the Nitro
	// hypervisor would: the ramdisks are loaded one after the other as one initrd.
	im, err := eif.Parse(bytes.NewReader(img.Bytes()), int64(img.Len()))
	if err != nil {
		t.Fatal(err)
	}
	var kernelSec, cmdline, initrd []byte
	for i, s := range im.Sections {
		data, err := io.ReadAll(im.SectionData(i))
		if err != nil {
			t.Fatal(err)
		}
		switch s.Type {
		case eif.SectionKernel:
			kernelSec = data
		case eif.SectionCmdline:
			cmdline = data
		case eif.SectionRamdisk:
			initrd = append(initrd, data...)
		}
	}
	kPath, rPath := filepath.Join(tmp, "kernel"), filepath.Join(tmp, "initrd")
	if err := os.WriteFile(kPath, kernelSec, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(rPath, initrd, 0o644); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	q := exec.CommandContext(ctx, "qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-m", "512M",
		"-nographic", "-no-reboot", "-kernel", kPath, "-initrd", rPath, "-append", string(cmdline)+" quiet")
	out, err := q.CombinedOutput()
	text := strings.ReplaceAll(string(out), "\r", "")
	if err != nil || !strings.Contains(text, "STANDIN begin") {
		t.Fatalf("qemu: %v\n%s", err, text)
	}

	type entry struct{ mode, uid, gid, mtime, sha string }
	got := map[string]entry{}
	for _, l := range strings.Split(text, "\n") {
		i := strings.Index(l, "STANDIN entry ")
		if i < 0 {
			continue
		}
		f := strings.Fields(l[i+len("STANDIN entry "):])
		if len(f) == 7 {
			got[f[6]] = entry{f[0], f[1], f[2], f[3], f[5]}
		}
	}
	sha := func(b []byte) string { return fmt.Sprintf("%x", sha256.Sum256(b)) }
	want := map[string]entry{
		"/init":                             {"100755", "0", "0", "0", sha(files["init"])},
		"/nsm.ko":                           {"100755", "0", "0", "0", sha(files["nsm.ko"])},
		"/cmd":                              {"100644", "0", "0", "0", sha([]byte(strings.Join(build.Command(), "\n") + "\n"))},
		"/env":                              {"100644", "0", "0", "0", sha(nil)},
		"/rootfs":                           {"40755", "0", "0", "0", "-"},
		"/rootfs/agentkeys-enclave":         {"100755", "0", "0", "0", sha(bin)},
		"/rootfs/etc":                       {"40755", "0", "0", "0", "-"},
		"/rootfs/etc/agentkeys":             {"40755", "0", "0", "0", "-"},
		"/rootfs/etc/agentkeys/policy.json": {"100644", "0", "0", "0", sha(policy)},
		"/rootfs/run":                       {"40755", "0", "0", "0", "-"},
		"/rootfs/tmp":                       {"40755", "0", "0", "0", "-"},
		"/rootfs/var":                       {"40755", "0", "0", "0", "-"},
		"/rootfs/proc":                      {"40755", "0", "0", "0", "-"},
		"/rootfs/sys":                       {"40755", "0", "0", "0", "-"},
		"/rootfs/dev":                       {"40755", "0", "0", "0", "-"},
	}
	for path, w := range want {
		if g, ok := got[path]; !ok || g != w {
			t.Errorf("%s in the booted guest: %+v (present %v), want %+v", path, g, ok, w)
		}
	}
	if wantStart := fmt.Sprintf("STANDIN started %q", build.Command()); !strings.Contains(text, wantStart) {
		t.Errorf("the enclave command did not start (want %q):\n%s", wantStart, text)
	}
	if t.Failed() {
		t.Logf("guest output:\n%s", text)
	}
}
