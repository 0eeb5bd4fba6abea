package eif

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"hash/crc32"
	"io"
	"math"
	"math/big"
	"strings"
	"testing"
	"time"
)

// The tests build images two ways: with Write, and with rawEIF below, which lays the bytes out
// from the format description alone (encoding/binary, crc32) so that Write and Parse are checked
// against an independent construction, and so that malformed images can be made.

type rawSection struct {
	typ   uint16
	flags uint16
	data  []byte
}

// rawEIF lays out a header and sections contiguously; edit may change the bytes (header fields,
// section headers) before the CRC is computed over the result.
func rawEIF(version uint16, secs []rawSection, edit func(b []byte) []byte) []byte {
	var b []byte
	b = append(b, '.', 'e', 'i', 'f')
	b = binary.BigEndian.AppendUint16(b, version)
	b = binary.BigEndian.AppendUint16(b, 0)     // flags
	b = binary.BigEndian.AppendUint64(b, 1<<30) // default_mem
	b = binary.BigEndian.AppendUint64(b, 2)     // default_cpus
	b = binary.BigEndian.AppendUint16(b, 0)     // reserved
	b = binary.BigEndian.AppendUint16(b, uint16(len(secs)))
	offs, sizes := make([]uint64, 32), make([]uint64, 32)
	pos := uint64(548)
	for i, s := range secs {
		if i < 32 {
			offs[i], sizes[i] = pos, uint64(len(s.data))
		}
		pos += 12 + uint64(len(s.data))
	}
	for _, o := range offs {
		b = binary.BigEndian.AppendUint64(b, o)
	}
	for _, s := range sizes {
		b = binary.BigEndian.AppendUint64(b, s)
	}
	b = binary.BigEndian.AppendUint32(b, 0) // unused
	b = binary.BigEndian.AppendUint32(b, 0) // crc, set below
	if len(b) != 548 {
		panic("header layout")
	}
	for _, s := range secs {
		b = binary.BigEndian.AppendUint16(b, s.typ)
		b = binary.BigEndian.AppendUint16(b, s.flags)
		b = binary.BigEndian.AppendUint64(b, uint64(len(s.data)))
		b = append(b, s.data...)
	}
	if edit != nil {
		b = edit(b)
	}
	fixCRC(b)
	return b
}

// fixCRC sets the header's CRC to that of every byte but the CRC field itself.
func fixCRC(b []byte) {
	c := crc32.Update(0, crc32.IEEETable, b[:544])
	c = crc32.Update(c, crc32.IEEETable, b[548:])
	binary.BigEndian.PutUint32(b[544:], c)
}

// pcr is the formula from the format README, written out independently of the package.
func pcr(parts ...[]byte) string {
	content := sha512.Sum384(bytes.Join(parts, nil))
	pcr := sha512.Sum384(append(make([]byte, 48), content[:]...))
	return hex.EncodeToString(pcr[:])
}

var (
	kernel   = []byte("bzImage: a kernel, much shortened")
	cmdline  = []byte("reboot=k panic=30 pci=off nomodules console=ttyS0 random.trust_cpu=on")
	meta     = []byte(`{"ImageName":"agentkeys","ImageVersion":"1.0","BuildMetadata":{"BuildTime":"t","BuildTool":"test","BuildToolVersion":"0","OperatingSystem":"linux","KernelVersion":"6"},"DockerInfo":null,"CustomMetadata":null}`)
	ramdisk0 = []byte("070701 init and nsm.ko cpio")
	ramdisk1 = []byte("070701 rootfs cpio")
	ramdisk2 = []byte("070701 cmd and env cpio")
)

func sec(t SectionType, b []byte) rawSection { return rawSection{typ: uint16(t), data: b} }

// newCert returns a self-signed certificate as PEM and DER.
func newCert(t testing.TB) (pemBytes, der []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "eif test signer"},
		NotBefore:    time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:     time.Date(2036, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	der, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), der
}

func signatureSection(t testing.TB, certPEM []byte) []byte {
	t.Helper()
	b, err := EncodeSignature([]PCRSignature{{SigningCertificate: certPEM, Signature: []byte{0x84, 0x40, 0xa0, 0x40, 0x40}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustParse(t *testing.T, b []byte) *Image {
	t.Helper()
	im, err := Parse(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return im
}

func TestWriteParseMeasurements(t *testing.T) {
	certPEM, certDER := newCert(t)
	sig := signatureSection(t, certPEM)
	empty := pcr() // PCR2 with a single ramdisk: the extension of SHA384 of nothing
	tests := []struct {
		name    string
		version uint16
		secs    []rawSection
		want    Measurements
	}{{
		name:    "nitro-cli layout, two ramdisks",
		version: 4,
		secs:    []rawSection{sec(SectionKernel, kernel), sec(SectionCmdline, cmdline), sec(SectionMetadata, meta), sec(SectionRamdisk, ramdisk0), sec(SectionRamdisk, ramdisk1)},
		want:    Measurements{HashAlgorithm, pcr(kernel, cmdline, ramdisk0, ramdisk1), pcr(kernel, cmdline, ramdisk0), pcr(ramdisk1), ""},
	}, {
		name:    "one ramdisk",
		version: 4,
		secs:    []rawSection{sec(SectionKernel, kernel), sec(SectionCmdline, cmdline), sec(SectionMetadata, meta), sec(SectionRamdisk, ramdisk0)},
		want:    Measurements{HashAlgorithm, pcr(kernel, cmdline, ramdisk0), pcr(kernel, cmdline, ramdisk0), empty, ""},
	}, {
		name:    "three ramdisks, signed",
		version: 4,
		secs:    []rawSection{sec(SectionKernel, kernel), sec(SectionCmdline, cmdline), sec(SectionMetadata, meta), sec(SectionRamdisk, ramdisk0), sec(SectionRamdisk, ramdisk1), sec(SectionRamdisk, ramdisk2), sec(SectionSignature, sig)},
		want:    Measurements{HashAlgorithm, pcr(kernel, cmdline, ramdisk0, ramdisk1, ramdisk2), pcr(kernel, cmdline, ramdisk0), pcr(ramdisk1, ramdisk2), pcr(certDER)},
	}, {
		name:    "file order decides the hash order",
		version: 4,
		secs:    []rawSection{sec(SectionMetadata, meta), sec(SectionCmdline, cmdline), sec(SectionKernel, kernel), sec(SectionRamdisk, ramdisk1), sec(SectionRamdisk, ramdisk0)},
		want:    Measurements{HashAlgorithm, pcr(cmdline, kernel, ramdisk1, ramdisk0), pcr(cmdline, kernel, ramdisk1), pcr(ramdisk0), ""},
	}, {
		name:    "version 3, no metadata, empty cmdline",
		version: 3,
		secs:    []rawSection{sec(SectionKernel, kernel), sec(SectionCmdline, nil), sec(SectionRamdisk, ramdisk0), sec(SectionRamdisk, ramdisk1)},
		want:    Measurements{HashAlgorithm, pcr(kernel, ramdisk0, ramdisk1), pcr(kernel, ramdisk0), pcr(ramdisk1), ""},
	}, {
		name:    "version 2",
		version: 2,
		secs:    []rawSection{sec(SectionKernel, kernel), sec(SectionCmdline, cmdline), sec(SectionRamdisk, ramdisk0)},
		want:    Measurements{HashAlgorithm, pcr(kernel, cmdline, ramdisk0), pcr(kernel, cmdline, ramdisk0), empty, ""},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := rawEIF(tt.version, tt.secs, nil)

			var in []SectionInput
			for _, s := range tt.secs {
				in = append(in, BytesSection(SectionType(s.typ), s.data))
			}
			var w bytes.Buffer
			if err := Write(&w, in, WithVersion(tt.version)); err != nil {
				t.Fatalf("Write: %v", err)
			}
			if !bytes.Equal(w.Bytes(), raw) {
				t.Fatalf("Write output differs from the independent layout:\n got %x\nwant %x", w.Bytes(), raw)
			}

			im := mustParse(t, raw)
			if im.Header.Version != tt.version || int(im.Header.NumSections) != len(tt.secs) || im.Header.DefaultMem != 1<<30 || im.Header.DefaultCPUs != 2 {
				t.Errorf("header = %+v", im.Header)
			}
			off := uint64(HeaderSize)
			for i, s := range im.Sections {
				want := Section{Type: SectionType(tt.secs[i].typ), Offset: off, Size: uint64(len(tt.secs[i].data))}
				if s != want {
					t.Errorf("section %d = %+v, want %+v", i, s, want)
				}
				data, err := io.ReadAll(im.SectionData(i))
				if err != nil || !bytes.Equal(data, tt.secs[i].data) {
					t.Errorf("section %d data = %q, %v", i, data, err)
				}
				off += 12 + s.Size
			}
			got, err := im.Measurements()
			if err != nil {
				t.Fatalf("Measurements: %v", err)
			}
			if got != tt.want {
				t.Errorf("Measurements =\n%+v\nwant\n%+v", got, tt.want)
			}
			if im.Signed() != (tt.want.PCR8 != "") {
				t.Errorf("Signed() = %v", im.Signed())
			}
		})
	}
}

func TestWriteHeaderOptions(t *testing.T) {
	in := []SectionInput{BytesSection(SectionKernel, kernel), BytesSection(SectionCmdline, cmdline), BytesSection(SectionMetadata, meta), BytesSection(SectionRamdisk, ramdisk0)}
	var a, b bytes.Buffer
	if err := Write(&a, in, WithFlags(FlagARM64), WithDefaultMem(512<<20), WithDefaultCPUs(4)); err != nil {
		t.Fatal(err)
	}
	if err := Write(&b, in, WithFlags(FlagARM64), WithDefaultMem(512<<20), WithDefaultCPUs(4)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("two writes of the same input differ")
	}
	im := mustParse(t, a.Bytes())
	if !im.Header.ARM64() || im.Header.DefaultMem != 512<<20 || im.Header.DefaultCPUs != 4 || im.Header.Version != CurrentVersion {
		t.Errorf("header = %+v", im.Header)
	}
}

func TestWriteRejects(t *testing.T) {
	k, c, m, r := BytesSection(SectionKernel, kernel), BytesSection(SectionCmdline, cmdline), BytesSection(SectionMetadata, meta), BytesSection(SectionRamdisk, ramdisk0)
	many := []SectionInput{k, c, m}
	for len(many) < MaxSections+1 {
		many = append(many, r)
	}
	tests := []struct {
		name string
		in   []SectionInput
		opts []WriteOption
		want string
	}{
		{"no kernel", []SectionInput{c, m}, nil, "no kernel section"},
		{"no cmdline", []SectionInput{k, m, r}, nil, "no cmdline section"},
		{"no ramdisk", []SectionInput{k, c, m}, nil, "no ramdisk section"},
		{"no metadata in v4", []SectionInput{k, c, r}, nil, "no metadata section"},
		{"ramdisk first", []SectionInput{r, k, c, m}, nil, "before the kernel"},
		{"two kernels", []SectionInput{k, c, m, r, k}, nil, "second kernel"},
		{"unknown type", []SectionInput{k, c, m, r, BytesSection(6, nil)}, nil, "unknown(6)"},
		{"invalid type", []SectionInput{k, c, m, r, BytesSection(SectionInvalid, nil)}, nil, "invalid section type"},
		{"too many", many, nil, "more than the format's 32"},
		{"version 5", []SectionInput{k, c, m, r}, []WriteOption{WithVersion(5)}, "cannot write version 5"},
		{"big signature", []SectionInput{k, c, m, r, BytesSection(SectionSignature, make([]byte, MaxSignatureSize+1))}, nil, "signature section is 32769 bytes"},
		{"nil data", []SectionInput{k, c, m, {Type: SectionRamdisk}}, nil, "no data"},
		{"short data", []SectionInput{k, c, m, {Type: SectionRamdisk, Data: bytes.NewReader(ramdisk0), Size: 1000}}, nil, "unexpected EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var w bytes.Buffer
			err := Write(&w, tt.in, tt.opts...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Write error = %v, want one containing %q", err, tt.want)
			}
			if w.Len() != 0 {
				t.Errorf("Write wrote %d bytes before failing", w.Len())
			}
		})
	}
}

// changingReader returns different bytes on its second pass.
type changingReader struct{ reads int }

func (c *changingReader) ReadAt(p []byte, off int64) (int, error) {
	c.reads++
	for i := range p {
		p[i] = byte(c.reads)
	}
	return len(p), nil
}

func TestWriteDetectsChangingInput(t *testing.T) {
	in := []SectionInput{BytesSection(SectionKernel, kernel), BytesSection(SectionCmdline, cmdline), BytesSection(SectionMetadata, meta), {Type: SectionRamdisk, Data: &changingReader{}, Size: 10}}
	if err := Write(io.Discard, in); err == nil || !strings.Contains(err.Error(), "changed while it was being written") {
		t.Fatalf("Write error = %v", err)
	}
}

func TestParseMalformed(t *testing.T) {
	good := []rawSection{sec(SectionKernel, kernel), sec(SectionCmdline, cmdline), sec(SectionMetadata, meta), sec(SectionRamdisk, ramdisk0)}
	with := func(extra ...rawSection) []rawSection { return append(append([]rawSection{}, good...), extra...) }
	put16 := func(at int, v uint16) func([]byte) []byte {
		return func(b []byte) []byte { binary.BigEndian.PutUint16(b[at:], v); return b }
	}
	put64 := func(at int, v uint64) func([]byte) []byte {
		return func(b []byte) []byte { binary.BigEndian.PutUint64(b[at:], v); return b }
	}
	const (
		offTable  = 28       // section_offsets[0]
		sizeTable = 28 + 256 // section_sizes[0]
	)
	sec3 := 548 + 3*12 + len(kernel) + len(cmdline) + len(meta) // the ramdisk's section header
	many := good
	for len(many) < 33 {
		many = append(many, sec(SectionRamdisk, ramdisk1))
	}
	tests := []struct {
		name    string
		version uint16
		secs    []rawSection
		edit    func([]byte) []byte
		breakCR bool // corrupt the file after the CRC is set
		want    string
	}{
		{name: "bad magic", edit: func(b []byte) []byte { b[0] = 'E'; return b }, want: "bad magic"},
		{name: "version 0", version: 0, want: "unsupported EIF version 0"},
		{name: "version 1", version: 1, want: "unsupported EIF version 1"},
		{name: "version 5", version: 5, want: "unsupported EIF version 5"},
		{name: "too many sections", secs: many, want: "declares 33 sections"},
		{name: "num_sections 65535", edit: put16(26, 0xffff), want: "declares 65535 sections"},
		{name: "zero sections", edit: func(b []byte) []byte { binary.BigEndian.PutUint16(b[26:], 0); return b[:548] }, want: "no kernel section"},
		{name: "truncated in a section", edit: func(b []byte) []byte { return b[:len(b)-1] }, want: "runs past the end of the file"},
		{name: "truncated at a section header", edit: func(b []byte) []byte { return b[:sec3+5] }, want: "header at offset"},
		{name: "section size beyond the file", edit: func(b []byte) []byte {
			binary.BigEndian.PutUint64(b[sizeTable+3*8:], 1<<40)
			binary.BigEndian.PutUint64(b[sec3+4:], 1<<40)
			return b
		}, want: "runs past the end of the file"},
		{name: "section size overflows", edit: func(b []byte) []byte {
			binary.BigEndian.PutUint64(b[sizeTable+3*8:], math.MaxUint64)
			binary.BigEndian.PutUint64(b[sec3+4:], math.MaxUint64)
			return b
		}, want: "runs past the end of the file"},
		{name: "section offset past EOF", edit: put64(offTable+3*8, 1<<40), want: "starts at offset 1099511627776"},
		{name: "section offset overflows", edit: put64(offTable+3*8, math.MaxUint64-5), want: "starts at offset 18446744073709551610"},
		{name: "section offset into the header", edit: put64(offTable, 0), want: "section 0 starts at offset 0, want 548"},
		{name: "gap between sections", edit: func(b []byte) []byte {
			binary.BigEndian.PutUint64(b[offTable+3*8:], uint64(sec3+1))
			return append(b[:sec3], append([]byte{0}, b[sec3:]...)...)
		}, want: "section 3 starts at offset"},
		{name: "trailing bytes", edit: func(b []byte) []byte { return append(b, 0) }, want: "1 bytes after the last section"},
		{name: "table size differs from section header", edit: put64(sizeTable+3*8, uint64(len(ramdisk0)+1)), want: "section table"},
		{name: "CRC mismatch in data", breakCR: true, edit: func(b []byte) []byte { b[len(b)-1] ^= 1; return b }, want: "CRC32 mismatch"},
		{name: "CRC mismatch in header", breakCR: true, edit: func(b []byte) []byte { b[8] ^= 1; return b }, want: "CRC32 mismatch"},
		{name: "CRC mismatch in unused table entry", breakCR: true, edit: func(b []byte) []byte { b[offTable+31*8] = 1; return b }, want: "CRC32 mismatch"},
		{name: "unknown section type", secs: with(rawSection{typ: 6}), want: "unknown(6) section type"},
		{name: "invalid section type", secs: with(rawSection{typ: 0}), want: "invalid section type"},
		{name: "no kernel", secs: []rawSection{sec(SectionCmdline, cmdline), sec(SectionMetadata, meta)}, want: "no kernel section"},
		{name: "no cmdline", secs: []rawSection{sec(SectionKernel, kernel), sec(SectionMetadata, meta), sec(SectionRamdisk, ramdisk0)}, want: "no cmdline section"},
		{name: "no ramdisk", secs: []rawSection{sec(SectionKernel, kernel), sec(SectionCmdline, cmdline), sec(SectionMetadata, meta)}, want: "no ramdisk section"},
		{name: "no metadata in v4", secs: []rawSection{sec(SectionKernel, kernel), sec(SectionCmdline, cmdline), sec(SectionRamdisk, ramdisk0)}, want: "no metadata section"},
		{name: "ramdisk before kernel", secs: []rawSection{sec(SectionRamdisk, ramdisk0), sec(SectionKernel, kernel), sec(SectionCmdline, cmdline), sec(SectionMetadata, meta)}, want: "before the kernel"},
		{name: "two kernels", secs: with(sec(SectionKernel, kernel)), want: "second kernel"},
		{name: "two cmdlines", secs: with(sec(SectionCmdline, cmdline)), want: "second cmdline"},
		{name: "two metadata", secs: with(sec(SectionMetadata, meta)), want: "second metadata"},
		{name: "two signatures", secs: with(sec(SectionSignature, []byte{0x80}), sec(SectionSignature, []byte{0x80})), want: "second signature"},
		{name: "signature too big", secs: with(sec(SectionSignature, make([]byte, MaxSignatureSize+1))), want: "signature section 4 is 32769 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			version := tt.version
			if version == 0 && !strings.HasPrefix(tt.name, "version 0") {
				version = 4
			}
			secs := tt.secs
			if secs == nil {
				secs = good
			}
			var b []byte
			if tt.breakCR {
				b = tt.edit(rawEIF(version, secs, nil))
			} else {
				b = rawEIF(version, secs, tt.edit)
			}
			im, err := Parse(bytes.NewReader(b), int64(len(b)))
			if err == nil {
				t.Fatalf("Parse accepted it: %+v", im.Sections)
			}
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Parse error = %v, want ErrMalformed containing %q", err, tt.want)
			}
			if tt.breakCR != errors.Is(err, ErrCRC) {
				t.Errorf("errors.Is(err, ErrCRC) = %v", !tt.breakCR)
			}
		})
	}
	// Every case above would parse without its defect.
	mustParse(t, rawEIF(4, good, nil))
	mustParse(t, rawEIF(4, with(sec(SectionSignature, make([]byte, MaxSignatureSize))), nil))
}

func TestParseShortFile(t *testing.T) {
	b := rawEIF(4, []rawSection{sec(SectionKernel, kernel), sec(SectionCmdline, cmdline), sec(SectionMetadata, meta), sec(SectionRamdisk, ramdisk0)}, nil)
	if _, err := Parse(bytes.NewReader(b[:100]), 100); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "shorter than the 548-byte EIF header") {
		t.Errorf("100-byte file: %v", err)
	}
	// A reader holding less than the size given is an I/O error, not a malformed file.
	_, err := Parse(bytes.NewReader(b[:len(b)-10]), int64(len(b)))
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("size past the reader: %v, want io.ErrUnexpectedEOF", err)
	}
}

// sizeOnlyReader holds a valid header but no section data, and records the largest read.
type sizeOnlyReader struct {
	header  []byte
	maxRead int
}

func (r *sizeOnlyReader) ReadAt(p []byte, off int64) (int, error) {
	r.maxRead = max(r.maxRead, len(p))
	for i := range p {
		p[i] = 0
		if int(off)+i < len(r.header) {
			p[i] = r.header[int(off)+i]
		}
	}
	return len(p), nil
}

// TestParseStreams checks that Parse reads a large section in bounded chunks rather than at once.
func TestParseStreams(t *testing.T) {
	big := make([]byte, 4<<20)
	b := rawEIF(4, []rawSection{sec(SectionKernel, big), sec(SectionCmdline, cmdline), sec(SectionMetadata, meta), sec(SectionRamdisk, ramdisk0)}, nil)
	r := &sizeOnlyReader{header: b}
	// Reading zeros for the kernel matches big, so this parses and the CRC holds.
	if _, err := Parse(r, int64(len(b))); err != nil {
		t.Fatal(err)
	}
	if r.maxRead > 64<<10 {
		t.Errorf("largest single read = %d bytes, want at most 64 KiB", r.maxRead)
	}
}

func TestSignature(t *testing.T) {
	// serde_cbor's encoding of vec![PcrSignature{signing_certificate: b"A", signature: vec![1, 30]}],
	// written out byte by byte: array(1), map(2), text "signing_certificate", array(1) [0x41],
	// text "signature", array(2) [1, 30].
	want := []byte{0x81, 0xa2, 0x73}
	want = append(want, "signing_certificate"...)
	want = append(want, 0x81, 0x18, 0x41, 0x69)
	want = append(want, "signature"...)
	want = append(want, 0x82, 0x01, 0x18, 0x1e)
	got, err := EncodeSignature([]PCRSignature{{SigningCertificate: []byte("A"), Signature: []byte{1, 30}}})
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("EncodeSignature = %x, %v; want %x", got, err, want)
	}
	sigs, err := DecodeSignature(want)
	if err != nil || len(sigs) != 1 || string(sigs[0].SigningCertificate) != "A" || !bytes.Equal(sigs[0].Signature, []byte{1, 30}) {
		t.Fatalf("DecodeSignature = %+v, %v", sigs, err)
	}
}

func TestSignatureMalformed(t *testing.T) {
	certPEM, _ := newCert(t)
	cborText := func(s string) []byte { return append([]byte{0x60 | byte(len(s))}, s...) }
	entry := func(fields ...[]byte) []byte {
		return append([]byte{0x81, 0xa0 | byte(len(fields)/2)}, bytes.Join(fields, nil)...)
	}
	arr := []byte{0x81, 0x01}
	tests := []struct {
		name string
		sig  []byte
		want string
	}{
		{"empty section", nil, "as CBOR"},
		{"not CBOR", []byte{0xff}, "as CBOR"},
		{"empty array", []byte{0x80}, "holds no signature"},
		{"trailing data", append(signatureSection(t, certPEM), 0), "as CBOR"},
		{"missing signature", entry(cborText(keyCert), arr), `no "signature" field`},
		{"missing certificate", entry(cborText(keySig), arr), `no "signing_certificate" field`},
		{"byte string, not array", entry(cborText(keyCert), []byte{0x41, 0x01}, cborText(keySig), arr), "is not an array of bytes"},
		{"element over 255", entry(cborText(keyCert), []byte{0x81, 0x19, 0x01, 0x00}, cborText(keySig), arr), "overflows"},
		{"duplicate key", entry(cborText(keyCert), arr, cborText(keyCert), arr), "duplicate"},
		{"certificate not PEM", signatureSection(t, []byte("not a certificate")), "not a PEM CERTIFICATE"},
		{"PEM of garbage", signatureSection(t, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0x00}})), "failed to parse the signing certificate"},
		{"PEM of another type", signatureSection(t, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}})), "not a PEM CERTIFICATE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := rawEIF(4, []rawSection{sec(SectionKernel, kernel), sec(SectionCmdline, cmdline), sec(SectionMetadata, meta), sec(SectionRamdisk, ramdisk0), sec(SectionSignature, tt.sig)}, nil)
			im := mustParse(t, b) // the file itself is well formed
			if !im.Signed() {
				t.Fatal("Signed() = false")
			}
			_, err := im.Measurements()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Measurements error = %v, want one containing %q", err, tt.want)
			}
		})
	}
	// A PEM bundle: blocks before the certificate are skipped, as OpenSSL's PEM reader does.
	_, der := newCert(t)
	bundle := append(pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{6, 0}}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	b := rawEIF(4, []rawSection{sec(SectionKernel, kernel), sec(SectionCmdline, cmdline), sec(SectionMetadata, meta), sec(SectionRamdisk, ramdisk0), sec(SectionSignature, signatureSection(t, bundle))}, nil)
	m, err := mustParse(t, b).Measurements()
	if err != nil || m.PCR8 != pcr(der) {
		t.Fatalf("bundle: PCR8 = %q, %v; want %q", m.PCR8, err, pcr(der))
	}
}

func TestMetadata(t *testing.T) {
	in := Metadata{
		ImageName:     "agentkeys-enclave",
		ImageVersion:  "1.0 <&>",
		BuildMetadata: BuildMetadata{BuildTime: "2026-01-01T00:00:00Z", BuildTool: "agentkeys", BuildToolVersion: "1", OperatingSystem: "linux", KernelVersion: "6.1"},
	}
	b, err := MarshalMetadata(in)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"ImageName":"agentkeys-enclave","ImageVersion":"1.0 <&>","BuildMetadata":{"BuildTime":"2026-01-01T00:00:00Z","BuildTool":"agentkeys","BuildToolVersion":"1","OperatingSystem":"linux","KernelVersion":"6.1"},"DockerInfo":null,"CustomMetadata":null}`
	if string(b) != want {
		t.Fatalf("MarshalMetadata =\n%s\nwant\n%s", b, want)
	}
	im := mustParse(t, rawEIF(4, []rawSection{sec(SectionKernel, kernel), sec(SectionCmdline, cmdline), sec(SectionMetadata, b), sec(SectionRamdisk, ramdisk0)}, nil))
	got, err := im.Metadata(1 << 20)
	if err != nil || got.ImageVersion != in.ImageVersion || got.BuildMetadata != in.BuildMetadata || string(got.DockerInfo) != "null" {
		t.Fatalf("Metadata = %+v, %v", got, err)
	}
	if _, err := im.Metadata(10); err == nil || !strings.Contains(err.Error(), "more than the 10 allowed") {
		t.Errorf("Metadata(10) error = %v", err)
	}
	bad := mustParse(t, rawEIF(4, []rawSection{sec(SectionKernel, kernel), sec(SectionCmdline, cmdline), sec(SectionMetadata, []byte("{")), sec(SectionRamdisk, ramdisk0)}, nil))
	if _, err := bad.Metadata(1 << 20); err == nil {
		t.Error("Metadata accepted invalid JSON")
	}
	v3 := mustParse(t, rawEIF(3, []rawSection{sec(SectionKernel, kernel), sec(SectionCmdline, cmdline), sec(SectionRamdisk, ramdisk0)}, nil))
	if m, err := v3.Metadata(1 << 20); m != nil || err != nil {
		t.Errorf("v3 Metadata = %v, %v; want nil, nil", m, err)
	}
}
