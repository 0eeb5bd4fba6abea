package eif

import (
	"encoding/binary"
	"fmt"
)

// Format constants, as defined in aws-nitro-enclaves-image-format src/defs/mod.rs and its README.
const (
	// HeaderSize is the size of the EIF header in bytes (EifHeader::size()).
	HeaderSize = 548
	// SectionHeaderSize is the size of a section header in bytes (EifSectionHeader::size()).
	SectionHeaderSize = 12
	// MaxSections is the number of entries in the header's section table (MAX_NUM_SECTIONS).
	MaxSections = 32
	// CurrentVersion is the format version the reference builder writes (CURRENT_VERSION).
	CurrentVersion = 4
	// MinVersion is the oldest published format version (versions 0 and 1 were never released).
	MinVersion = 2
	// MaxSignatureSize bounds the signature section (SIGNATURE_MAX_SIZE in the format README).
	MaxSignatureSize = 32768
	// FlagARM64 is the header flag bit set for aarch64 images (EIF_HDR_ARCH_ARM64).
	FlagARM64 = 0x1
)

// crcOffset is where the header's eif_crc32 field starts: the CRC covers everything but these 4 bytes.
const crcOffset = HeaderSize - 4

// Magic is the first four bytes of every EIF: ".eif" in ASCII.
var Magic = [4]byte{'.', 'e', 'i', 'f'}

// SectionType is the type field of a section header (EifSectionType).
type SectionType uint16

// Section types. Values 0 (invalid) and 6 and above are rejected by Parse and Write.
const (
	SectionInvalid   SectionType = 0
	SectionKernel    SectionType = 1
	SectionCmdline   SectionType = 2
	SectionRamdisk   SectionType = 3
	SectionSignature SectionType = 4 // since format version 3
	SectionMetadata  SectionType = 5 // since format version 4, mandatory from then on
)

func (t SectionType) String() string {
	switch t {
	case SectionInvalid:
		return "invalid"
	case SectionKernel:
		return "kernel"
	case SectionCmdline:
		return "cmdline"
	case SectionRamdisk:
		return "ramdisk"
	case SectionSignature:
		return "signature"
	case SectionMetadata:
		return "metadata"
	}
	return fmt.Sprintf("unknown(%d)", uint16(t))
}

// valid reports whether t is one of the five defined section types.
func (t SectionType) valid() bool { return t >= SectionKernel && t <= SectionMetadata }

// Header is the 548-byte EIF header (EifHeader). All fields are big-endian on disk.
type Header struct {
	Magic          [4]byte
	Version        uint16
	Flags          uint16 // bit 0: aarch64 (FlagARM64); other bits reserved
	DefaultMem     uint64 // bytes; unused by nitro-cli and the hypervisor
	DefaultCPUs    uint64 // unused by nitro-cli and the hypervisor
	Reserved       uint16
	NumSections    uint16
	SectionOffsets [MaxSections]uint64 // file offset of each section's header
	SectionSizes   [MaxSections]uint64 // size of each section's data, without its header
	Unused         uint32
	CRC32          uint32 // CRC-32/IEEE of the whole file except these 4 bytes
}

// ARM64 reports whether the header marks the image as built for aarch64.
func (h *Header) ARM64() bool { return h.Flags&FlagARM64 != 0 }

// marshal encodes h as the 548 bytes the reference's EifHeader::to_be_bytes writes.
func (h *Header) marshal() []byte {
	b := make([]byte, HeaderSize)
	copy(b[0:4], h.Magic[:])
	binary.BigEndian.PutUint16(b[4:], h.Version)
	binary.BigEndian.PutUint16(b[6:], h.Flags)
	binary.BigEndian.PutUint64(b[8:], h.DefaultMem)
	binary.BigEndian.PutUint64(b[16:], h.DefaultCPUs)
	binary.BigEndian.PutUint16(b[24:], h.Reserved)
	binary.BigEndian.PutUint16(b[26:], h.NumSections)
	p := 28
	for i := range MaxSections {
		binary.BigEndian.PutUint64(b[p:], h.SectionOffsets[i])
		p += 8
	}
	for i := range MaxSections {
		binary.BigEndian.PutUint64(b[p:], h.SectionSizes[i])
		p += 8
	}
	binary.BigEndian.PutUint32(b[p:], h.Unused)
	binary.BigEndian.PutUint32(b[p+4:], h.CRC32)
	return b
}

// unmarshalHeader decodes exactly HeaderSize bytes; it checks nothing.
func unmarshalHeader(b []byte) Header {
	var h Header
	copy(h.Magic[:], b[0:4])
	h.Version = binary.BigEndian.Uint16(b[4:])
	h.Flags = binary.BigEndian.Uint16(b[6:])
	h.DefaultMem = binary.BigEndian.Uint64(b[8:])
	h.DefaultCPUs = binary.BigEndian.Uint64(b[16:])
	h.Reserved = binary.BigEndian.Uint16(b[24:])
	h.NumSections = binary.BigEndian.Uint16(b[26:])
	p := 28
	for i := range MaxSections {
		h.SectionOffsets[i] = binary.BigEndian.Uint64(b[p:])
		p += 8
	}
	for i := range MaxSections {
		h.SectionSizes[i] = binary.BigEndian.Uint64(b[p:])
		p += 8
	}
	h.Unused = binary.BigEndian.Uint32(b[p:])
	h.CRC32 = binary.BigEndian.Uint32(b[p+4:])
	return h
}

// marshalSectionHeader encodes a section header (EifSectionHeader::to_be_bytes).
func marshalSectionHeader(t SectionType, flags uint16, size uint64) []byte {
	b := make([]byte, SectionHeaderSize)
	binary.BigEndian.PutUint16(b[0:], uint16(t))
	binary.BigEndian.PutUint16(b[2:], flags)
	binary.BigEndian.PutUint64(b[4:], size)
	return b
}
