package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentkeys/broker/attest"
	"github.com/agentkeys/broker/eif"
)

// TestPCRs: pcrs prints the measurements of the eif package's golden signed
// image exactly as the golden JSON has them, in a form verify --measurements
// reads back; a damaged image fails with exit 1 and no output.
func TestPCRs(t *testing.T) {
	img := filepath.Join("..", "..", "..", "eif", "testdata", "synthetic-signed.eif")
	var out, errb bytes.Buffer
	if code := run([]string{"pcrs", img}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	want, err := os.ReadFile(filepath.Join("..", "..", "..", "eif", "testdata", "synthetic-signed.json"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := eif.ParseMeasurementsJSON(out.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	golden, err := eif.ParseMeasurementsJSON(want)
	if err != nil {
		t.Fatal(err)
	}
	if got != golden {
		t.Fatalf("pcrs = %+v, want %+v", got, golden)
	}
	pins, err := attest.ParseMeasurements(out.Bytes())
	if err != nil || len(pins) != 4 {
		t.Fatalf("verify --measurements would read %d pins: %v", len(pins), err)
	}

	data, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)-1] ^= 1 // inside the last section: the CRC no longer matches
	bad := filepath.Join(t.TempDir(), "bad.eif")
	if err := os.WriteFile(bad, data, 0o644); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"pcrs", bad}, &out, &errb); code != 1 || out.Len() != 0 || !strings.Contains(errb.String(), "bad.eif") {
		t.Fatalf("damaged image: exit %d, stdout %q, stderr %q", code, out.String(), errb.String())
	}
	if code := run([]string{"pcrs"}, &out, &errb); code != 2 {
		t.Fatalf("no file: exit %d", code)
	}
}
