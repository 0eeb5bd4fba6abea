// Package fakeblobs writes a synthetic AWS Nitro Enclaves blobs directory and its pin file for
// tests: fixed bytes standing in for the kernel, its configuration, the command line, the init
// and the NSM driver. Nothing in them boots.
package fakeblobs

import (
	"crypto/sha512"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Config is the kernel configuration's head, as nitro-cli's x86_64 bzImage.config starts.
const Config = "#\n# Automatically generated file; DO NOT EDIT.\n# Linux/x86_64 4.14.256-209.484.amzn2.x86_64 Kernel Configuration\n#\nCONFIG_64BIT=y\n"

// Cmdline is nitro-cli's x86_64 cmdline blob (with its trailing newline).
const Cmdline = "reboot=k panic=30 pci=off nomodules console=ttyS0 i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd random.trust_cpu=on\n"

// Files are the synthetic blobs for x86_64 by name.
func Files() map[string][]byte {
	return map[string][]byte{
		"bzImage":        []byte("synthetic bzImage: not a kernel\x00\x01\x02"),
		"bzImage.config": []byte(Config),
		"cmdline":        []byte(Cmdline),
		"init":           []byte("\x7fELF synthetic init"),
		"nsm.ko":         []byte("\x7fELF synthetic nsm.ko"),
	}
}

// Write writes Files into a new directory and their pin file next to it, and returns both paths.
func Write(t testing.TB) (dir, pinFile string) {
	t.Helper()
	root := t.TempDir()
	dir = filepath.Join(root, "blobs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var pins strings.Builder
	pins.WriteString("# synthetic blobs for tests\n")
	for _, name := range []string{"bzImage", "bzImage.config", "cmdline", "init", "nsm.ko"} {
		data := Files()[name]
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&pins, "%x  %s\n", sha512.Sum384(data), name)
	}
	pinFile = filepath.Join(root, "blobs.sha384")
	if err := os.WriteFile(pinFile, []byte(pins.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, pinFile
}
