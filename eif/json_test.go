package eif

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

var (
	hexA = strings.Repeat("a1", 48)
	hexB = strings.Repeat("b2", 48)
	hexC = strings.Repeat("c3", 48)
	hexD = strings.Repeat("d4", 48)
)

func TestMeasurementsMarshal(t *testing.T) {
	tests := []struct {
		m    Measurements
		want string
	}{
		{Measurements{HashAlgorithm, hexA, hexB, hexC, ""}, `{"HashAlgorithm":"Sha384 { ... }","PCR0":"` + hexA + `","PCR1":"` + hexB + `","PCR2":"` + hexC + `"}`},
		{Measurements{HashAlgorithm, hexA, hexB, hexC, hexD}, `{"HashAlgorithm":"Sha384 { ... }","PCR0":"` + hexA + `","PCR1":"` + hexB + `","PCR2":"` + hexC + `","PCR8":"` + hexD + `"}`},
	}
	for _, tt := range tests {
		b, err := json.Marshal(tt.m)
		if err != nil || string(b) != tt.want {
			t.Errorf("json.Marshal = %s, %v\nwant %s", b, err, tt.want)
		}
		back, err := ParseMeasurementsJSON(b)
		if err != nil || back != tt.m {
			t.Errorf("round trip = %+v, %v", back, err)
		}
	}
}

func TestParseMeasurementsJSONNitroCLI(t *testing.T) {
	// nitro-cli's own documentation (docs/image_signing.md): `build-enclave` output of a signed image.
	b, err := os.ReadFile("testdata/nitro-cli-build-enclave-signed.json")
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseMeasurementsJSON(b)
	if err != nil {
		t.Fatal(err)
	}
	want := Measurements{
		HashAlgorithm: "Sha384 { ... }",
		PCR0:          "55c0acc442fd815e161f100c45810298f5c37ce9f61b675e4f8ba82e32b9bab3b674a6ef557eaa7db7577221683bbe9f",
		PCR1:          "aca6e62ffbf5f7deccac452d7f8cee1b94048faf62afc16c8ab68c9fed8c38010c73a669f9a36e596032f0b973d21895",
		PCR2:          "41e46bdda449ee3fd792772e5b766cb090d2a4a1b0e5a0c5e52c84d426c76cfd298ea725500a107e71399697df2ae2eb",
		PCR8:          "70da58334a884328944cd806127c7784677ab60a154249fd21546a217299ccfa1ebfe4fa96a163bf41d3bcfaebe68f6f",
	}
	if got != want {
		t.Fatalf("ParseMeasurementsJSON =\n%+v\nwant\n%+v", got, want)
	}
}

func TestParseMeasurementsJSON(t *testing.T) {
	inner := `{"HashAlgorithm":"Sha384 { ... }","PCR0":"` + hexA + `","PCR1":"` + hexB + `","PCR2":"` + hexC + `"}`
	want := Measurements{HashAlgorithm, hexA, hexB, hexC, ""}
	// The shape of `nitro-cli describe-eif` (EifDescribeInfo in src/common/json_output.rs).
	describe := `{
  "EifVersion": 4,
  "Measurements": ` + inner + `,
  "IsSigned": false,
  "CheckCRC": true,
  "ImageName": "agentkeys",
  "ImageVersion": "1.0",
  "Metadata": {"BuildTime": "t", "DockerInfo": {}}
}`
	for name, in := range map[string]string{
		"inner":          inner,
		"build-enclave":  `{"Measurements": ` + inner + `}`,
		"describe-eif":   describe,
		"uppercase hex":  strings.Replace(inner, hexA, strings.ToUpper(hexA), 1),
		"spaces, order":  `{ "PCR2": "` + hexC + `", "PCR1": "` + hexB + `", "PCR0": "` + hexA + `", "HashAlgorithm": "Sha384 { ... }" }`,
		"other sha2 fmt": strings.Replace(inner, "Sha384 { ... }", "Sha384", 1),
	} {
		got, err := ParseMeasurementsJSON([]byte(in))
		if name == "other sha2 fmt" {
			want.HashAlgorithm = "Sha384"
		} else {
			want.HashAlgorithm = HashAlgorithm
		}
		if err != nil || got != want {
			t.Errorf("%s: ParseMeasurementsJSON = %+v, %v", name, got, err)
		}
	}

	bad := []struct{ name, in, want string }{
		{"not JSON", `{`, "not a JSON object"},
		{"array", `[]`, "not a JSON object"},
		{"null", `null`, "only Sha384"},
		{"empty object", `{}`, "only Sha384"},
		{"no PCR0", strings.Replace(inner, `"PCR0":"`+hexA+`",`, "", 1), "PCR0 is missing"},
		{"Measurements not an object", `{"Measurements": 1}`, "not a JSON object"},
		{"missing PCR1", strings.Replace(inner, `"PCR1"`, `"PCR3"`, 1), `unexpected key "PCR3"`},
		{"lowercase key", strings.Replace(inner, `"PCR1"`, `"pcr1"`, 1), `unexpected key "pcr1"`},
		{"short PCR", strings.Replace(inner, hexA, hexA[:94], 1), "PCR0 is 94 characters"},
		{"long PCR", strings.Replace(inner, hexA, hexA+"00", 1), "PCR0 is 98 characters"},
		{"not hex", strings.Replace(inner, hexB, "zz"+hexB[2:], 1), "PCR1 is not hex"},
		{"PCR a number", strings.Replace(inner, `"`+hexC+`"`, "1", 1), "PCR2 is not a string"},
		{"empty PCR8", strings.TrimSuffix(inner, "}") + `,"PCR8":""}`, "PCR8 is missing"},
		{"bad PCR8", strings.TrimSuffix(inner, "}") + `,"PCR8":"00"}`, "PCR8 is 2 characters"},
		{"sha256", strings.Replace(inner, "Sha384 { ... }", "Sha256 { ... }", 1), "only Sha384"},
		{"no hash algorithm", strings.Replace(inner, `"HashAlgorithm":"Sha384 { ... }",`, "", 1), "only Sha384"},
	}
	for _, tt := range bad {
		_, err := ParseMeasurementsJSON([]byte(tt.in))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error = %v, want one containing %q", tt.name, err, tt.want)
		}
	}
	// json.Unmarshal into Measurements checks the same.
	var m Measurements
	if err := json.Unmarshal([]byte(strings.Replace(inner, hexA, "00", 1)), &m); err == nil {
		t.Error("json.Unmarshal accepted a 2-digit PCR0")
	}
}

// TestGolden pins the bytes Write produces and the measurements Parse computes for a small signed
// image, so that any change to either shows up as a diff. Regenerate with -update.
func TestGolden(t *testing.T) {
	certFile, eifFile, jsonFile := filepath.Join("testdata", "signing-cert.pem"), filepath.Join("testdata", "synthetic-signed.eif"), filepath.Join("testdata", "synthetic-signed.json")
	if *update {
		certPEM, _ := newCert(t)
		if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	metaJSON, err := MarshalMetadata(Metadata{ImageName: "synthetic", ImageVersion: "1", BuildMetadata: BuildMetadata{BuildTime: "2026-01-01T00:00:00Z", BuildTool: "eif_test", BuildToolVersion: "1", OperatingSystem: "linux", KernelVersion: "6.1"}})
	if err != nil {
		t.Fatal(err)
	}
	var w bytes.Buffer
	err = Write(&w, []SectionInput{
		BytesSection(SectionKernel, kernel), BytesSection(SectionCmdline, cmdline), BytesSection(SectionMetadata, metaJSON),
		BytesSection(SectionRamdisk, ramdisk0), BytesSection(SectionRamdisk, ramdisk1), BytesSection(SectionSignature, signatureSection(t, certPEM)),
	})
	if err != nil {
		t.Fatal(err)
	}
	im := mustParse(t, w.Bytes())
	m, err := im.Measurements()
	if err != nil {
		t.Fatal(err)
	}
	mj, err := json.MarshalIndent(struct {
		Measurements Measurements `json:"Measurements"`
	}{m}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	mj = append(mj, '\n')
	if *update {
		if err := os.WriteFile(eifFile, w.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(jsonFile, mj, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	wantEIF, err := os.ReadFile(eifFile)
	if err != nil {
		t.Fatal(err)
	}
	wantJSON, err := os.ReadFile(jsonFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(w.Bytes(), wantEIF) {
		t.Errorf("Write output differs from %s (run go test -update if the change is intended)", eifFile)
	}
	if !bytes.Equal(mj, wantJSON) {
		t.Errorf("measurements differ from %s:\n%s", jsonFile, mj)
	}
	// And the golden file parses to the golden measurements on its own.
	fromFile, err := mustParse(t, wantEIF).Measurements()
	if err != nil {
		t.Fatal(err)
	}
	fromJSON, err := ParseMeasurementsJSON(wantJSON)
	if err != nil || fromFile != fromJSON {
		t.Errorf("%s parses to %+v, %s says %+v (%v)", eifFile, fromFile, jsonFile, fromJSON, err)
	}
}
