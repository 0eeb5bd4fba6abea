package attest

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
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

var pcrName = regexp.MustCompile(`^PCR([0-9]|[12][0-9]|3[01])$`)

// ParseMeasurements reads the PCRs of the JSON `nitro-cli build-enclave` and
// `nitro-cli describe-eif` print,
//
//	{"Measurements": {"HashAlgorithm": "Sha384 { ... }", "PCR0": "…", "PCR1": "…", "PCR2": "…", "PCR8": "…"}}
//
// or of the inner object alone. Other members of the outer object are
// ignored; an unknown member of the measurements, a hash algorithm other than
// SHA-384 or a malformed PCR is an error.
func ParseMeasurements(b []byte) (map[uint][]byte, error) {
	var outer map[string]json.RawMessage
	if err := json.Unmarshal(b, &outer); err != nil {
		return nil, fmt.Errorf("measurements are not a JSON object: %w", err)
	}
	inner := outer
	if raw, ok := outer["Measurements"]; ok {
		inner = nil
		if err := json.Unmarshal(raw, &inner); err != nil {
			return nil, fmt.Errorf("Measurements is not a JSON object: %w", err)
		}
	}
	pcrs := map[uint][]byte{}
	for k, raw := range inner {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, fmt.Errorf("measurement %s is not a string", k)
		}
		if k == "HashAlgorithm" {
			if !strings.HasPrefix(s, "Sha384") {
				return nil, fmt.Errorf("HashAlgorithm is %q; Nitro PCRs are Sha384", s)
			}
			continue
		}
		m := pcrName.FindStringSubmatch(k)
		if m == nil {
			return nil, fmt.Errorf("unknown measurement %q (want HashAlgorithm or PCR0..PCR31)", k)
		}
		v, err := ParsePCR(s)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		i, _ := strconv.Atoi(m[1])
		pcrs[uint(i)] = v
	}
	if len(pcrs) == 0 {
		return nil, fmt.Errorf("the measurements list no PCR")
	}
	return pcrs, nil
}
