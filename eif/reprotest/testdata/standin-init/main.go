// Command standin-init replaces the Nitro init in TestBoot: PID 1 in a QEMU guest booted with the
// image's kernel command line and ramdisks. It lists what the kernel unpacked, then starts /cmd
// the way the Nitro init does (chroot into /rootfs, the /env environment), and powers off.
package main

import (
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func main() {
	if err := syscall.Mount("dev", "/dev", "devtmpfs", syscall.MS_NOSUID|syscall.MS_NOEXEC, ""); err != nil {
		panic(err)
	}
	con, err := os.OpenFile("/dev/console", os.O_WRONLY, 0)
	if err != nil {
		panic(err)
	}
	defer func() {
		syscall.Sync()
		syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF)
	}()
	p := func(f string, a ...any) { fmt.Fprintf(con, f, a...) }
	p("STANDIN begin\n")
	filepath.WalkDir("/", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			p("STANDIN walk %s: %v\n", path, err)
			return nil
		}
		if path == "/dev" || path == "/proc" || path == "/sys" {
			return fs.SkipDir
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		st := info.Sys().(*syscall.Stat_t)
		sum := "-"
		if info.Mode().IsRegular() {
			b, _ := os.ReadFile(path)
			sum = fmt.Sprintf("%x", sha256.Sum256(b))
		}
		p("STANDIN entry %o %d %d %d %d %s %s\n", st.Mode, st.Uid, st.Gid, st.Mtim.Sec, info.Size(), sum, path)
		return nil
	})
	read := func(name string) []string {
		b, err := os.ReadFile(name)
		if err != nil {
			p("STANDIN read %s: %v\n", name, err)
			return nil
		}
		if len(b) == 0 {
			return nil
		}
		return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	}
	args, env := read("/cmd"), read("/env")
	if len(args) == 0 {
		p("STANDIN no command\n")
		return
	}
	if env == nil {
		env = []string{"PATH=/sbin:/usr/sbin:/bin:/usr/bin"}
	}
	c := exec.Command(args[0], args[1:]...)
	c.SysProcAttr = &syscall.SysProcAttr{Chroot: "/rootfs"}
	c.Dir = "/"
	c.Env = env
	c.Stdout, c.Stderr = con, con
	if err := c.Start(); err != nil {
		p("STANDIN start failed: %v\n", err)
		return
	}
	p("STANDIN started %q\n", args)
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case err := <-done:
		p("STANDIN exited: %v\n", err)
	case <-time.After(30 * time.Second):
		c.Process.Kill()
		p("STANDIN still running after 30s; killed\n")
	}
}
