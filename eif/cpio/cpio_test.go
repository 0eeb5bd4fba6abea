package cpio

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// hdr spells out a newc header field by field, independently of writeEntry.
func hdr(ino, mode, nlink, size uint32, name string) string {
	fields := []uint32{ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, uint32(len(name) + 1), 0}
	var b strings.Builder
	b.WriteString("070701")
	for _, f := range fields {
		const digits = "0123456789abcdef"
		for s := 28; s >= 0; s -= 4 {
			b.WriteByte(digits[f>>uint(s)&0xf])
		}
	}
	return b.String() + name + "\x00"
}

func pad(s string) string {
	for len(s)%4 != 0 {
		s += "\x00"
	}
	return s
}

// TestWriteGolden compares Write with an archive laid out by hand from the newc specification:
// header, name + NUL padded to 4 bytes from the start of the archive, data padded to 4, trailer.
func TestWriteGolden(t *testing.T) {
	entries := []Entry{
		Dir("dev", 0o755),
		File("init", 0o755, []byte("#!init")),
		Dir("rootfs", 0o755),
		File("rootfs/cmd", 0o644, []byte("abcd")),
		File("empty", 0o600, nil),
	}
	want := ""
	want = pad(want + hdr(1, 0o040755, 2, 0, "dev"))
	want = pad(want + hdr(2, 0o100755, 1, 6, "init"))
	want = pad(want + "#!init")
	want = pad(want + hdr(3, 0o040755, 2, 0, "rootfs"))
	want = pad(want + hdr(4, 0o100644, 1, 4, "rootfs/cmd"))
	want = pad(want + "abcd")
	want = pad(want + hdr(5, 0o100600, 1, 0, "empty"))
	want = pad(want + hdr(0, 0, 1, 0, "TRAILER!!!"))
	got, err := Archive(entries)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("Write gave\n%q\nwant\n%q", got, want)
	}
	if len(got)%4 != 0 {
		t.Fatalf("archive is %d bytes, not a multiple of 4", len(got))
	}
	// 110-byte header + "dev\0" = 114, padded to 116: the second header starts there.
	if !bytes.HasPrefix(got[116:], []byte("070701")) {
		t.Fatalf("second header not at byte 116: %q", got[110:130])
	}
}

func TestRoundTrip(t *testing.T) {
	big := bytes.Repeat([]byte{0xa5}, 1<<16+3)
	entries := []Entry{Dir("a", 0o700), Dir("a/b", 0o755), File("a/b/c", 0o4755, big), File("x", 0o644, []byte{0})}
	b, err := Archive(entries)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := Parse(b, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != len(entries) {
		t.Fatalf("%d records, want %d", len(recs), len(entries))
	}
	for i, r := range recs {
		e := entries[i]
		wantNlink := uint32(1)
		if e.Mode&TypeMask == TypeDir {
			wantNlink = 2
		}
		if r.Name != e.Name || r.Mode != e.Mode || (e.Name == "a/b/c" && r.Mode != 0o104755) || !bytes.Equal(r.Data, e.Data) || r.Ino != uint32(i+1) ||
			r.UID != 0 || r.GID != 0 || r.Mtime != 0 || r.Nlink != wantNlink || r.Check != 0 ||
			r.DevMajor|r.DevMinor|r.RdevMajor|r.RdevMinor != 0 || r.NameSize != uint32(len(e.Name)+1) {
			t.Errorf("record %d = %+v (data %d bytes), want %q mode %o", i, r.Header, len(r.Data), e.Name, e.Mode)
		}
	}
	// Zero padding after the trailer is accepted (concatenated archives), anything else is not.
	if _, err := Parse(append(append([]byte{}, b...), 0, 0, 0, 0), 100); err != nil {
		t.Errorf("zero padding after the trailer: %v", err)
	}
	if _, err := Parse(append(append([]byte{}, b...), 1), 100); err == nil {
		t.Error("junk after the trailer accepted")
	}
	if _, err := Parse(b, 3); err == nil {
		t.Error("maxEntries not enforced")
	}
	if r, err := Find(recs, "x"); err != nil || !bytes.Equal(r.Data, []byte{0}) {
		t.Errorf("Find(x) = %v, %v", r, err)
	}
	if _, err := Find(recs, "nope"); err == nil {
		t.Error("Find of a missing name succeeded")
	}
}

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name    string
		entries []Entry
		want    string
	}{
		{"leading slash", []Entry{File("/init", 0o755, nil)}, "clean relative"},
		{"dotdot", []Entry{File("../x", 0o755, nil)}, "clean relative"},
		{"unclean", []Entry{Dir("a", 0o755), File("a//b", 0o755, nil)}, "clean relative"},
		{"empty", []Entry{File("", 0o755, nil)}, "reserved or empty"},
		{"trailer name", []Entry{File(Trailer, 0o644, nil)}, "reserved"},
		{"nul", []Entry{File("a\x00b", 0o644, nil)}, "NUL"},
		{"long", []Entry{File(strings.Repeat("a", MaxNameSize), 0o644, nil)}, "longer than"},
		{"duplicate", []Entry{File("a", 0o644, nil), File("a", 0o644, nil)}, "twice"},
		{"no parent", []Entry{File("etc/x", 0o644, nil)}, "before its directory"},
		{"parent after", []Entry{File("etc/x", 0o644, nil), Dir("etc", 0o755)}, "before its directory"},
		{"parent is a file", []Entry{File("etc", 0o644, nil), File("etc/x", 0o644, nil)}, "before its directory"},
		{"symlink", []Entry{{Name: "l", Mode: 0o120777}}, "only directories and regular files"},
		{"stray bits", []Entry{{Name: "f", Mode: TypeReg | 0o200000}}, "outside"},
		{"perm too wide", []Entry{File("f", 0o10755, nil)}, "only directories and regular files"},
		{"dir with data", []Entry{{Name: "d", Mode: TypeDir | 0o755, Data: []byte{1}}}, "has data"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Write(&bytes.Buffer{}, tc.entries)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Write: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	good, err := Archive([]Entry{File("ff", 0o644, []byte("dat"))}) // name at 110, padding 113-115, data 116-118, padding 119
	if err != nil {
		t.Fatal(err)
	}
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte{}, good...)) }
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "without a trailer"},
		{"no trailer", good[:len(good)-124], "without a trailer"},
		{"crc magic", mut(func(b []byte) []byte { b[5] = '2'; return b }), "magic"},
		{"bad hex", mut(func(b []byte) []byte { b[6] = 'g'; return b }), "hexadecimal"},
		{"huge size", mut(func(b []byte) []byte { copy(b[54:62], "ffffffff"); return b }), "run past the end"},
		{"zero namesize", mut(func(b []byte) []byte { copy(b[94:102], "00000000"); return b }), "name size"},
		{"name not terminated", mut(func(b []byte) []byte { b[112] = 'x'; return b }), "NUL-terminated"},
		{"nonzero padding", mut(func(b []byte) []byte { b[113] = 1; return b }), "padding after the name"},
		{"nonzero data padding", mut(func(b []byte) []byte { b[119] = 1; return b }), "padding after the data"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.b, 10)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestGNUCpio lists and extracts an archive with GNU cpio, an independent newc reader. It needs
// Debian's cpio package; without it the test skips, except in CI.
func TestGNUCpio(t *testing.T) {
	bin, err := exec.LookPath("cpio")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("cpio is not installed; CI must install it (apt-get install cpio)")
		}
		t.Skip("cpio not installed (apt-get install cpio)")
	}
	b, err := Archive([]Entry{
		Dir("dev", 0o755), File("init", 0o755, []byte("init")), File("nsm.ko", 0o755, []byte("ko")),
		Dir("rootfs", 0o755), Dir("rootfs/etc", 0o755), File("rootfs/etc/p.json", 0o644, []byte(`{"a":1}`)),
	})
	if err != nil {
		t.Fatal(err)
	}
	list := exec.Command(bin, "-t", "-v", "--quiet", "-H", "newc", "--numeric-uid-gid")
	list.Stdin = bytes.NewReader(b)
	out, err := list.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -t: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	want := []struct{ perm, name string }{
		{"drwxr-xr-x", "dev"}, {"-rwxr-xr-x", "init"}, {"-rwxr-xr-x", "nsm.ko"},
		{"drwxr-xr-x", "rootfs"}, {"drwxr-xr-x", "rootfs/etc"}, {"-rw-r--r--", "rootfs/etc/p.json"},
	}
	if len(lines) != len(want) {
		t.Fatalf("cpio -t listed %d entries, want %d:\n%s", len(lines), len(want), out)
	}
	for i, l := range lines {
		f := strings.Fields(l)
		// perm nlink uid gid size month day year name
		if len(f) < 9 || f[0] != want[i].perm || f[2] != "0" || f[3] != "0" || f[len(f)-1] != want[i].name {
			t.Errorf("cpio -t line %d = %q, want %s owned by 0 0 named %s", i, l, want[i].perm, want[i].name)
		}
	}

	dir := t.TempDir()
	extract := exec.Command(bin, "-i", "-d", "--quiet", "-H", "newc", "--preserve-modification-time", "--no-absolute-filenames")
	extract.Dir = dir
	extract.Stdin = bytes.NewReader(b)
	if out, err := extract.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v\n%s", err, out)
	}
	got, err := os.ReadFile(filepath.Join(dir, "rootfs/etc/p.json"))
	if err != nil || string(got) != `{"a":1}` {
		t.Fatalf("extracted policy = %q, %v", got, err)
	}
	st, err := os.Stat(filepath.Join(dir, "init"))
	if err != nil || st.Mode().Perm() != 0o755 || st.ModTime().Unix() != 0 {
		t.Fatalf("extracted init: %v, %v", st, err)
	}
}
