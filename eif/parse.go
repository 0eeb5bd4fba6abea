package eif

import (
	"crypto/sha512"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
)

// ErrMalformed is wrapped by every error Parse returns for a file that is not a well-formed EIF
// (as opposed to an I/O error from the reader).
var ErrMalformed = errors.New("malformed EIF")

// ErrCRC is wrapped (together with ErrMalformed) when the file's CRC32 does not match its header.
var ErrCRC = errors.New("EIF CRC32 mismatch")

// Section is one entry of the section table, checked against its on-disk section header.
type Section struct {
	Type   SectionType
	Flags  uint16 // the section header's flags; reserved, written as 0 by the reference
	Offset uint64 // file offset of the section header
	Size   uint64 // size of the section data (which starts at Offset+SectionHeaderSize)
}

// DataOffset is the file offset of the section's data.
func (s Section) DataOffset() uint64 { return s.Offset + SectionHeaderSize }

// Image is a parsed and checked EIF. Its section data stays in the reader given to Parse.
type Image struct {
	Header   Header
	Sections []Section

	r io.ReaderAt
	// Content digests (SHA-384 of the concatenated section data) taken while Parse checked the
	// CRC; the PCRs are the TPM-style extension of these.
	image, bootstrap, app [sha384Size]byte
	signature             []byte // raw signature section data (at most MaxSignatureSize), nil if unsigned
}

const sha384Size = sha512.Size384

// Parse reads and checks an EIF (magic, version, header CRC/section table, every section's bounds
// and the file CRC32). size is the length of the file behind r.
//
// It reads the file once, front to back, streaming every section's data through the CRC and the
// measurement hashes; memory use does not depend on the section sizes (only the signature section,
// at most MaxSignatureSize bytes, is kept). See the package doc for the exact rules.
func Parse(r io.ReaderAt, size int64) (*Image, error) {
	if size < HeaderSize {
		return nil, fmt.Errorf("%w: file is %d bytes, shorter than the %d-byte EIF header", ErrMalformed, size, HeaderSize)
	}
	fileSize := uint64(size)
	hb := make([]byte, HeaderSize)
	if err := readFull(r, hb, 0); err != nil {
		return nil, fmt.Errorf("failed to read EIF header: %w", err)
	}
	h := unmarshalHeader(hb)
	if h.Magic != Magic {
		return nil, fmt.Errorf("%w: bad magic %q, want %q: this is not an enclave image file", ErrMalformed, h.Magic[:], Magic[:])
	}
	if h.Version < MinVersion || h.Version > CurrentVersion {
		return nil, fmt.Errorf("%w: unsupported EIF version %d (supported: %d to %d)", ErrMalformed, h.Version, MinVersion, CurrentVersion)
	}
	if h.NumSections > MaxSections {
		return nil, fmt.Errorf("%w: header declares %d sections, more than the format's %d", ErrMalformed, h.NumSections, MaxSections)
	}

	crc := crc32.NewIEEE()
	crc.Write(hb[:crcOffset])
	imageH, bootH, appH := sha512.New384(), sha512.New384(), sha512.New384()
	im := &Image{Header: h, r: r}

	var types []SectionType
	ramdisks := 0
	buf := make([]byte, 64<<10)
	pos := uint64(HeaderSize) // sections must follow each other with no gap, as the reference reader assumes
	for i := range int(h.NumSections) {
		off, want := h.SectionOffsets[i], h.SectionSizes[i]
		if off != pos {
			return nil, fmt.Errorf("%w: section %d starts at offset %d, want %d (sections must follow the header and each other with no gap)", ErrMalformed, i, off, pos)
		}
		if fileSize-off < SectionHeaderSize { // off <= fileSize holds: pos never passes fileSize
			return nil, fmt.Errorf("%w: section %d header at offset %d is past the end of the file (%d bytes)", ErrMalformed, i, off, fileSize)
		}
		sb := make([]byte, SectionHeaderSize)
		if err := readFull(r, sb, off); err != nil {
			return nil, fmt.Errorf("failed to read EIF section %d header: %w", i, err)
		}
		s := Section{
			Type:   SectionType(uint16(sb[0])<<8 | uint16(sb[1])),
			Flags:  uint16(sb[2])<<8 | uint16(sb[3]),
			Offset: off,
			Size:   beUint64(sb[4:]),
		}
		if !s.Type.valid() {
			return nil, fmt.Errorf("%w: section %d has %s section type", ErrMalformed, i, s.Type)
		}
		if s.Size != want {
			return nil, fmt.Errorf("%w: section %d (%s) header says %d bytes, the header's section table %d", ErrMalformed, i, s.Type, s.Size, want)
		}
		dataOff := off + SectionHeaderSize
		if s.Size > fileSize-dataOff {
			return nil, fmt.Errorf("%w: section %d (%s) of %d bytes at offset %d runs past the end of the file (%d bytes): the file is truncated", ErrMalformed, i, s.Type, s.Size, dataOff, fileSize)
		}
		if s.Type == SectionSignature && s.Size > MaxSignatureSize {
			return nil, fmt.Errorf("%w: signature section %d is %d bytes, more than the format's %d", ErrMalformed, i, s.Size, MaxSignatureSize)
		}
		types = append(types, s.Type)
		if s.Type == SectionRamdisk {
			ramdisks++
		}
		crc.Write(sb)
		// Which measurements this section's data feeds, in file order (the reference's EifReader).
		var sinks []io.Writer
		switch s.Type {
		case SectionKernel, SectionCmdline:
			sinks = []io.Writer{imageH, bootH}
		case SectionRamdisk:
			if ramdisks == 1 {
				sinks = []io.Writer{imageH, bootH}
			} else {
				sinks = []io.Writer{imageH, appH}
			}
		}
		var keep *[]byte
		if s.Type == SectionSignature {
			im.signature = make([]byte, 0, s.Size) // bounded by MaxSignatureSize above
			keep = &im.signature
		}
		if err := stream(r, dataOff, s.Size, buf, crc, sinks, keep); err != nil {
			return nil, fmt.Errorf("failed to read EIF section %d (%s): %w", i, s.Type, err)
		}
		im.Sections = append(im.Sections, s)
		pos = dataOff + s.Size
	}
	if pos != fileSize {
		return nil, fmt.Errorf("%w: %d bytes after the last section (file is %d bytes, sections end at %d)", ErrMalformed, fileSize-pos, fileSize, pos)
	}
	if err := checkSections(types, h.Version); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if got := crc.Sum32(); got != h.CRC32 {
		return nil, fmt.Errorf("%w: %w: header says %#08x, file content gives %#08x: the file is corrupt", ErrMalformed, ErrCRC, h.CRC32, got)
	}
	sum(imageH, &im.image)
	sum(bootH, &im.bootstrap)
	sum(appH, &im.app)
	return im, nil
}

// checkSections checks the section types, in file order, against the format's rules: exactly one
// kernel and one cmdline, at least one ramdisk and none before the kernel, at most one signature
// and one metadata section, and a metadata section from version 4 on.
func checkSections(types []SectionType, version uint16) error {
	var counts [SectionMetadata + 1]int
	for i, t := range types {
		if !t.valid() {
			return fmt.Errorf("section %d has %s section type", i, t)
		}
		counts[t]++
		if t == SectionRamdisk && counts[SectionKernel] == 0 {
			return fmt.Errorf("ramdisk section %d comes before the kernel section", i)
		}
		if t != SectionRamdisk && counts[t] > 1 {
			return fmt.Errorf("section %d is a second %s section", i, t)
		}
	}
	for _, t := range []SectionType{SectionKernel, SectionCmdline, SectionRamdisk} {
		if counts[t] == 0 {
			return fmt.Errorf("no %s section (an EIF needs a kernel, a cmdline and at least one ramdisk)", t)
		}
	}
	if version >= 4 && counts[SectionMetadata] == 0 {
		return fmt.Errorf("no metadata section, which format version %d requires", version)
	}
	return nil
}

// stream copies n bytes at off from r into crc, every sink and (if keep is set) *keep, through buf.
func stream(r io.ReaderAt, off, n uint64, buf []byte, crc hash.Hash32, sinks []io.Writer, keep *[]byte) error {
	for n > 0 {
		chunk := buf
		if uint64(len(chunk)) > n {
			chunk = chunk[:n]
		}
		if err := readFull(r, chunk, off); err != nil {
			return err
		}
		crc.Write(chunk)
		for _, w := range sinks {
			if _, err := w.Write(chunk); err != nil {
				return err
			}
		}
		if keep != nil {
			*keep = append(*keep, chunk...)
		}
		off += uint64(len(chunk))
		n -= uint64(len(chunk))
	}
	return nil
}

// readFull fills b from r at off; a short read is io.ErrUnexpectedEOF (the size given to Parse was
// larger than what the reader holds).
func readFull(r io.ReaderAt, b []byte, off uint64) error {
	n, err := r.ReadAt(b, int64(off))
	if n == len(b) {
		return nil // io.ReaderAt may return io.EOF with a full read at the end of the file
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

func sum(h hash.Hash, out *[sha384Size]byte) { h.Sum(out[:0]) }

func beUint64(b []byte) uint64 {
	return uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 |
		uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7])
}

// SectionData returns a reader over the data of section i (0 <= i < len(im.Sections)).
func (im *Image) SectionData(i int) *io.SectionReader {
	s := im.Sections[i]
	return io.NewSectionReader(im.r, int64(s.DataOffset()), int64(s.Size))
}

// Signed reports whether the image has a signature section (and so a PCR8).
func (im *Image) Signed() bool { return im.signature != nil }
