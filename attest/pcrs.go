package attest

import (
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/agentkeys/broker/eif"
)

// PCRSize is the size of a Nitro PCR: a SHA-384 digest.
const PCRSize = 48

// ParsePCR parses a pinned PCR value: 48 bytes of hex.
func ParsePCR(s string) ([]byte, error) {
	b, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != PCRSize {
		return nil, fmt.Errorf("%q is not %d bytes of hex (a SHA-384 PCR)", s, PCRSize)
	}
	return b, nil
}

// ParseMeasurements reads the PCRs of the JSON `nitro-cli build-enclave` and
// `nitro-cli describe-eif` print (or `agentkeys-attest pcrs`),
//
//	{"Measurements": {"HashAlgorithm": "Sha384 { ... }", "PCR0": "…", "PCR1": "…", "PCR2": "…", "PCR8": "…"}}
//
// or of the inner object alone, as pins by PCR index. The format is eif's
// ([eif.ParseMeasurementsJSON]): PCR0, PCR1 and PCR2 must be present, PCR8 may be.
func ParseMeasurements(b []byte) (map[uint][]byte, error) {
	m, err := eif.ParseMeasurementsJSON(b)
	if err != nil {
		return nil, err
	}
	pcrs := map[uint][]byte{}
	for i, v := range map[uint]string{0: m.PCR0, 1: m.PCR1, 2: m.PCR2, 8: m.PCR8} {
		if v == "" {
			continue
		}
		if pcrs[i], err = ParsePCR(v); err != nil {
			return nil, fmt.Errorf("PCR%d: %w", i, err)
		}
	}
	return pcrs, nil
}
