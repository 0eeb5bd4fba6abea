// Package cpio writes and reads cpio archives in the "newc" format, the format the Linux kernel
// unpacks an initramfs from (Documentation/driver-api/early-userspace/buffer-format.rst). The
// enclave image's ramdisks are such archives.
//
// Write is deterministic: the bytes depend only on the entries given, in the order given. Every
// entry is owned by uid 0 and gid 0, has mtime 0, device numbers 0, inode number i+1 for the i-th
// entry, a link count of 1 for files and 2 for directories, and a check field of 0. No hard
// links are written: the kernel only looks for links of regular files whose link count is 2 or
// more.
//
// # Format
//
// Each entry is a 110-byte ASCII header, the path name with its terminating NUL, padding to a
// multiple of 4 bytes (counted from the start of the archive), the file data, and padding to a
// multiple of 4 again. The header is the magic "070701" and thirteen fields, each 8 hexadecimal
// digits: ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor,
// rdevminor, namesize (including the NUL) and check. The archive ends with an entry named
// "TRAILER!!!" whose fields are all 0 but nlink (1) and namesize.
//
// Names are relative ("init", "rootfs/etc"), without a leading "/" (as the kernel's
// usr/gen_init_cpio and linuxkit write them). The kernel creates each entry in turn and does not
// create missing parent directories, so Write requires every parent directory to come first.
package cpio

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
)

// Mode type bits (st_mode, as in <sys/stat.h>).
const (
	TypeMask = 0o170000
	TypeDir  = 0o040000
	TypeReg  = 0o100000
	PermMask = 0o7777
)

const (
	magic      = "070701"
	headerSize = 110
	// Trailer is the name of the entry that ends an archive.
	Trailer = "TRAILER!!!"
	// MaxNameSize is the kernel's bound on a name, NUL included (PATH_MAX).
	MaxNameSize = 4096
	// MaxFileSize is the largest file data the format's 8-hex-digit size field can describe.
	MaxFileSize = 1<<32 - 1
)

// Entry is one file or directory for Write.
type Entry struct {
	Name string // relative, clean, no leading "/": "rootfs/etc/agentkeys"
	Mode uint32 // TypeDir or TypeReg, ORed with the permission bits (at most 0o7777)
	Data []byte // a regular file's contents; nil for a directory
}

// Dir is a directory entry; perm is the st_mode permission bits (0o755; at most 0o7777, with
// setuid, setgid and sticky).
func Dir(name string, perm uint32) Entry {
	return Entry{Name: name, Mode: TypeDir | perm}
}

// File is a regular file entry; perm as for Dir.
func File(name string, perm uint32, data []byte) Entry {
	return Entry{Name: name, Mode: TypeReg | perm, Data: data}
}

// Header is a decoded newc header (Parse fills every field as found).
type Header struct {
	Ino, Mode, UID, GID, Nlink, Mtime, FileSize uint32
	DevMajor, DevMinor, RdevMajor, RdevMinor    uint32
	NameSize, Check                             uint32
	Name                                        string
}

// Record is one entry as Parse found it.
type Record struct {
	Header
	Data []byte // aliases the bytes given to Parse
}

// Check reports the first reason Write would refuse entries, or nil.
func Check(entries []Entry) error {
	seen := make(map[string]bool, len(entries))
	dirs := make(map[string]bool, len(entries))
	for i, e := range entries {
		if err := checkName(e.Name); err != nil {
			return fmt.Errorf("cpio: entry %d: %w", i, err)
		}
		if seen[e.Name] {
			return fmt.Errorf("cpio: entry %d: %q appears twice", i, e.Name)
		}
		seen[e.Name] = true
		if e.Mode&^(TypeMask|PermMask) != 0 {
			return fmt.Errorf("cpio: entry %q: mode %o has bits outside the type and permissions", e.Name, e.Mode)
		}
		switch e.Mode & TypeMask {
		case TypeDir:
			if len(e.Data) != 0 {
				return fmt.Errorf("cpio: directory %q has data", e.Name)
			}
			dirs[e.Name] = true
		case TypeReg:
			if int64(len(e.Data)) > MaxFileSize {
				return fmt.Errorf("cpio: file %q is %d bytes, more than the format's %d", e.Name, len(e.Data), int64(MaxFileSize))
			}
		default:
			return fmt.Errorf("cpio: entry %q: only directories and regular files are written (mode %o)", e.Name, e.Mode)
		}
		if parent := path.Dir(e.Name); parent != "." && !dirs[parent] {
			return fmt.Errorf("cpio: entry %q comes before its directory %q (the kernel does not create parents)", e.Name, parent)
		}
	}
	return nil
}

func checkName(name string) error {
	switch {
	case name == "" || name == "." || name == Trailer:
		return fmt.Errorf("name %q is reserved or empty", name)
	case len(name)+1 > MaxNameSize:
		return fmt.Errorf("name of %d bytes is longer than %d", len(name), MaxNameSize-1)
	case strings.HasPrefix(name, "/"), path.Clean(name) != name, name == "..", strings.HasPrefix(name, "../"):
		return fmt.Errorf("name %q is not a clean relative path", name)
	case strings.IndexByte(name, 0) >= 0:
		return fmt.Errorf("name %q holds a NUL byte", name)
	}
	return nil
}

// Write writes entries, in order, and the trailer, as described in the package doc. It checks
// the entries (Check) before writing anything.
func Write(w io.Writer, entries []Entry) error {
	if err := Check(entries); err != nil {
		return err
	}
	cw := &countWriter{w: w}
	for i, e := range entries {
		nlink := uint32(1)
		if e.Mode&TypeMask == TypeDir {
			nlink = 2
		}
		h := Header{Ino: uint32(i + 1), Mode: e.Mode, Nlink: nlink, FileSize: uint32(len(e.Data)), Name: e.Name}
		if err := writeEntry(cw, h, e.Data); err != nil {
			return fmt.Errorf("cpio: failed to write %q: %w", e.Name, err)
		}
	}
	if err := writeEntry(cw, Header{Nlink: 1, Name: Trailer}, nil); err != nil {
		return fmt.Errorf("cpio: failed to write the trailer: %w", err)
	}
	return nil
}

// Archive returns the bytes Write writes.
func Archive(entries []Entry) ([]byte, error) {
	var b bytes.Buffer
	if err := Write(&b, entries); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

var zeros [4]byte

func (c *countWriter) pad() error {
	if r := c.n % 4; r != 0 {
		_, err := c.Write(zeros[:4-r])
		return err
	}
	return nil
}

func writeEntry(w *countWriter, h Header, data []byte) error {
	h.NameSize = uint32(len(h.Name) + 1)
	hdr := fmt.Sprintf("%s%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x", magic,
		h.Ino, h.Mode, h.UID, h.GID, h.Nlink, h.Mtime, h.FileSize,
		h.DevMajor, h.DevMinor, h.RdevMajor, h.RdevMinor, h.NameSize, h.Check)
	if _, err := io.WriteString(w, hdr+h.Name+"\x00"); err != nil {
		return err
	}
	if err := w.pad(); err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		return err
	}
	return w.pad()
}

// Parse decodes one newc archive: every entry up to the trailer, which must be followed by
// nothing but zero bytes (the kernel skips zero padding between concatenated archives). It
// accepts only what Write could have written in shape: the magic "070701", hexadecimal fields,
// names of at most MaxNameSize bytes ending in their NUL, the 4-byte padding, at most
// maxEntries entries. Every size is checked against len(b) before it is used, so a hostile
// archive cannot make Parse read out of bounds or allocate more than len(b) plus the records.
// Names are not checked (see Check for what Write requires); the data is not copied.
func Parse(b []byte, maxEntries int) ([]Record, error) {
	var out []Record
	off := 0
	for {
		if len(out) >= maxEntries {
			return nil, fmt.Errorf("cpio: more than %d entries", maxEntries)
		}
		if len(b)-off < headerSize {
			return nil, fmt.Errorf("cpio: archive ends at byte %d without a trailer", len(b))
		}
		h, err := parseHeader(b[off : off+headerSize])
		if err != nil {
			return nil, fmt.Errorf("cpio: entry %d at byte %d: %w", len(out), off, err)
		}
		if h.NameSize == 0 || h.NameSize > MaxNameSize {
			return nil, fmt.Errorf("cpio: entry %d at byte %d: name size %d out of range 1 to %d", len(out), off, h.NameSize, MaxNameSize)
		}
		nameEnd := off + headerSize + int(h.NameSize)
		if nameEnd > len(b) {
			return nil, fmt.Errorf("cpio: entry %d at byte %d: name runs past the end", len(out), off)
		}
		if b[nameEnd-1] != 0 || bytes.IndexByte(b[off+headerSize:nameEnd-1], 0) >= 0 {
			return nil, fmt.Errorf("cpio: entry %d at byte %d: name is not NUL-terminated", len(out), off)
		}
		h.Name = string(b[off+headerSize : nameEnd-1])
		dataStart := align4(nameEnd)
		if dataStart > len(b) || int64(h.FileSize) > int64(len(b)-dataStart) {
			return nil, fmt.Errorf("cpio: entry %q: %d bytes of data run past the end", h.Name, h.FileSize)
		}
		if !allZero(b[nameEnd:dataStart]) {
			return nil, fmt.Errorf("cpio: entry %q: padding after the name is not zero", h.Name)
		}
		dataEnd := dataStart + int(h.FileSize)
		next := align4(dataEnd)
		if next > len(b) {
			next = len(b) // a last entry may end the bytes unpadded; the trailer check below catches it
		}
		if !allZero(b[dataEnd:next]) {
			return nil, fmt.Errorf("cpio: entry %q: padding after the data is not zero", h.Name)
		}
		if h.Name == Trailer {
			if !allZero(b[next:]) {
				return nil, fmt.Errorf("cpio: %d bytes after the trailer are not zero padding", len(b)-next)
			}
			return out, nil
		}
		out = append(out, Record{Header: h, Data: b[dataStart:dataEnd:dataEnd]})
		off = next
	}
}

func parseHeader(b []byte) (Header, error) {
	if string(b[:6]) != magic {
		return Header{}, fmt.Errorf("magic %q is not newc's %q", b[:6], magic)
	}
	var f [13]uint32
	for i := range f {
		v, err := parseHex(b[6+8*i : 14+8*i])
		if err != nil {
			return Header{}, err
		}
		f[i] = v
	}
	return Header{Ino: f[0], Mode: f[1], UID: f[2], GID: f[3], Nlink: f[4], Mtime: f[5], FileSize: f[6],
		DevMajor: f[7], DevMinor: f[8], RdevMajor: f[9], RdevMinor: f[10], NameSize: f[11], Check: f[12]}, nil
}

func parseHex(b []byte) (uint32, error) {
	var v uint32
	for _, c := range b {
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, fmt.Errorf("header field %q is not 8 hexadecimal digits", b)
		}
		v = v<<4 | uint32(d)
	}
	return v, nil
}

func align4(n int) int { return (n + 3) &^ 3 }

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// ErrNotFound is returned by Find when no record has the name.
var ErrNotFound = errors.New("cpio: no such entry")

// Find returns the record named name.
func Find(records []Record, name string) (Record, error) {
	for _, r := range records {
		if r.Name == name {
			return r, nil
		}
	}
	return Record{}, fmt.Errorf("%w: %q", ErrNotFound, name)
}
