package eif

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzParse feeds arbitrary bytes to Parse (the EIF comes from whoever built the image) and, when
// they parse, checks the invariants Parse promises and that measuring and decoding never panic.
func FuzzParse(f *testing.F) {
	certPEM, _ := newCert(f)
	good := []rawSection{sec(SectionKernel, kernel), sec(SectionCmdline, cmdline), sec(SectionMetadata, meta), sec(SectionRamdisk, ramdisk0)}
	f.Add(rawEIF(4, good, nil))
	f.Add(rawEIF(4, append(append([]rawSection{}, good...), sec(SectionRamdisk, ramdisk1), sec(SectionSignature, signatureSection(f, certPEM))), nil))
	f.Add(rawEIF(3, []rawSection{sec(SectionKernel, nil), sec(SectionCmdline, nil), sec(SectionRamdisk, nil)}, nil))
	f.Add(rawEIF(4, append(append([]rawSection{}, good...), sec(SectionSignature, []byte{0x81, 0xa0})), nil))
	f.Add([]byte(".eif"))
	f.Fuzz(func(t *testing.T, b []byte) {
		im, err := Parse(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		end := uint64(HeaderSize)
		for i, s := range im.Sections {
			if s.Offset != end || s.DataOffset()+s.Size > uint64(len(b)) || !s.Type.valid() {
				t.Fatalf("section %d = %+v out of bounds or invalid (file %d bytes)", i, s, len(b))
			}
			end = s.DataOffset() + s.Size
		}
		if end != uint64(len(b)) || len(im.Sections) != int(im.Header.NumSections) {
			t.Fatalf("sections end at %d of %d", end, len(b))
		}
		m, err := im.Measurements()
		if err != nil {
			if !im.Signed() {
				t.Fatalf("Measurements of an unsigned image failed: %v", err)
			}
			return
		}
		if (m.PCR8 != "") != im.Signed() {
			t.Fatalf("PCR8 %q but Signed() = %v", m.PCR8, im.Signed())
		}
		j, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if back, err := ParseMeasurementsJSON(j); err != nil || back != m {
			t.Fatalf("measurements do not round-trip through JSON: %+v, %v", back, err)
		}
		_, _ = im.Metadata(1 << 20)
	})
}

// FuzzParseMeasurementsJSON checks that the JSON reader never panics and that what it accepts
// round-trips.
func FuzzParseMeasurementsJSON(f *testing.F) {
	f.Add([]byte(`{"Measurements":{"HashAlgorithm":"Sha384 { ... }","PCR0":"` + hexA + `","PCR1":"` + hexB + `","PCR2":"` + hexC + `"}}`))
	f.Add([]byte(`{"HashAlgorithm":"Sha384","PCR0":"` + hexA + `","PCR1":"` + hexB + `","PCR2":"` + hexC + `","PCR8":"` + hexD + `"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseMeasurementsJSON(b)
		if err != nil {
			return
		}
		j, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if back, err := ParseMeasurementsJSON(j); err != nil || back != m {
			t.Fatalf("round trip: %+v, %v", back, err)
		}
	})
}
