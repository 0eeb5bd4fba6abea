package eif

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
)

// SectionInput is one section for Write. Data is read twice (once for the CRC, which the header
// carries, and once to copy it), so it must return the same Size bytes both times.
type SectionInput struct {
	Type  SectionType
	Flags uint16 // reserved; the reference writes 0
	Data  io.ReaderAt
	Size  int64
}

// BytesSection is a SectionInput holding b.
func BytesSection(t SectionType, b []byte) SectionInput {
	return SectionInput{Type: t, Data: bytes.NewReader(b), Size: int64(len(b))}
}

// Reference builder defaults (EifBuilder::new in src/utils/mod.rs).
const (
	DefaultMem  = 1 << 30 // bytes
	DefaultCPUs = 2
)

type writeConfig struct {
	version, flags  uint16
	defMem, defCPUs uint64
}

// A WriteOption sets a header field Write would otherwise take from the reference builder.
type WriteOption func(*writeConfig)

// WithVersion sets the format version (default CurrentVersion).
func WithVersion(v uint16) WriteOption { return func(c *writeConfig) { c.version = v } }

// WithFlags sets the header flags (default 0, x86_64; FlagARM64 for aarch64).
func WithFlags(f uint16) WriteOption { return func(c *writeConfig) { c.flags = f } }

// WithDefaultMem sets the header's default_mem (default DefaultMem).
func WithDefaultMem(n uint64) WriteOption { return func(c *writeConfig) { c.defMem = n } }

// WithDefaultCPUs sets the header's default_cpus (default DefaultCPUs).
func WithDefaultCPUs(n uint64) WriteOption { return func(c *writeConfig) { c.defCPUs = n } }

// Write writes an EIF holding sections in the given order, each section header directly after the
// previous section's data, with the header's section table and CRC32 filled in. The reference
// builder's order is kernel, cmdline, metadata, ramdisks, then the signature if any. The output
// depends only on the inputs: Write adds no timestamp (the metadata section, if any, is the
// caller's bytes; see MarshalMetadata).
//
// The sections must pass the checks Parse makes (one kernel, one cmdline, at least one ramdisk,
// ramdisks after the kernel, at most one signature and one metadata section, a metadata section
// for version 4, at most MaxSections sections, a signature of at most MaxSignatureSize bytes).
// Write checks them, and reads every input once, before writing anything; an error after that
// (from w, or an input that fails or changes on the second read) leaves a partial file in w.
func Write(w io.Writer, sections []SectionInput, opts ...WriteOption) error {
	c := writeConfig{version: CurrentVersion, defMem: DefaultMem, defCPUs: DefaultCPUs}
	for _, o := range opts {
		o(&c)
	}
	if c.version < MinVersion || c.version > CurrentVersion {
		return fmt.Errorf("eif: cannot write version %d (supported: %d to %d)", c.version, MinVersion, CurrentVersion)
	}
	if len(sections) > MaxSections {
		return fmt.Errorf("eif: %d sections, more than the format's %d", len(sections), MaxSections)
	}
	types := make([]SectionType, len(sections))
	for i, s := range sections {
		types[i] = s.Type
		if s.Data == nil || s.Size < 0 {
			return fmt.Errorf("eif: section %d (%s) has no data or a negative size", i, s.Type)
		}
		if s.Type == SectionSignature && s.Size > MaxSignatureSize {
			return fmt.Errorf("eif: signature section is %d bytes, more than the format's %d", s.Size, MaxSignatureSize)
		}
	}
	if err := checkSections(types, c.version); err != nil {
		return fmt.Errorf("eif: cannot write: %w", err)
	}

	h := Header{Magic: Magic, Version: c.version, Flags: c.flags, DefaultMem: c.defMem, DefaultCPUs: c.defCPUs, NumSections: uint16(len(sections))}
	pos := uint64(HeaderSize)
	for i, s := range sections {
		if pos > math.MaxInt64-SectionHeaderSize || uint64(s.Size) > math.MaxInt64-SectionHeaderSize-pos {
			return errors.New("eif: sections too large: the file would exceed 2^63 bytes")
		}
		h.SectionOffsets[i] = pos
		h.SectionSizes[i] = uint64(s.Size)
		pos += SectionHeaderSize + uint64(s.Size)
	}

	buf := make([]byte, 64<<10)
	// First pass: the CRC of everything after the header's CRC field.
	crc := crc32.NewIEEE()
	crc.Write(h.marshal()[:crcOffset])
	for i, s := range sections {
		crc.Write(marshalSectionHeader(s.Type, s.Flags, uint64(s.Size)))
		if err := stream(s.Data, 0, uint64(s.Size), buf, crc, nil, nil); err != nil {
			return fmt.Errorf("eif: failed to read section %d (%s): %w", i, s.Type, err)
		}
	}
	h.CRC32 = crc.Sum32()

	// Second pass: the file, checking that the inputs gave the same bytes again.
	again := crc32.NewIEEE()
	hb := h.marshal()
	again.Write(hb[:crcOffset])
	if _, err := w.Write(hb); err != nil {
		return fmt.Errorf("eif: failed to write header: %w", err)
	}
	for i, s := range sections {
		sh := marshalSectionHeader(s.Type, s.Flags, uint64(s.Size))
		again.Write(sh)
		if _, err := w.Write(sh); err != nil {
			return fmt.Errorf("eif: failed to write section %d header: %w", i, err)
		}
		if err := stream(s.Data, 0, uint64(s.Size), buf, again, []io.Writer{w}, nil); err != nil {
			return fmt.Errorf("eif: failed to copy section %d (%s): %w", i, s.Type, err)
		}
	}
	if again.Sum32() != h.CRC32 {
		return errors.New("eif: a section's data changed while it was being written; the output is corrupt")
	}
	return nil
}
