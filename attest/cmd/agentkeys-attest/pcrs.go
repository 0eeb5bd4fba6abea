package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/agentkeys/broker/eif"
	"github.com/agentkeys/broker/shared/cliflag"
)

const pcrsUsage = `Usage:
    agentkeys-attest pcrs FILE.eif

pcrs parses an Enclave Image File (header, section table, every section and
the CRC32) and prints its measurements — PCR0, PCR1, PCR2 and, for a signed
image, PCR8 — as the JSON object nitro-cli describe-eif and build-enclave print,
so that the output can be given to verify --measurements.
`

// pcrs: agentkeys-attest pcrs FILE.eif.
func pcrs(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("pcrs", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if err := cliflag.Parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, pcrsUsage)
			return 0
		}
		return fail(stderr, usageError{err.Error()})
	}
	if fs.NArg() != 1 {
		return fail(stderr, usagef("pcrs: want exactly one EIF file"))
	}
	f, err := os.Open(fs.Arg(0))
	if err != nil {
		return fail(stderr, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fail(stderr, err)
	}
	im, err := eif.Parse(f, st.Size())
	if err != nil {
		return fail(stderr, fmt.Errorf("%s: %w", fs.Arg(0), err))
	}
	m, err := im.Measurements()
	if err != nil {
		return fail(stderr, fmt.Errorf("%s: %w", fs.Arg(0), err))
	}
	out, err := json.MarshalIndent(struct {
		Measurements eif.Measurements `json:"Measurements"`
	}{m}, "", "  ")
	if err != nil {
		return fail(stderr, err)
	}
	fmt.Fprintf(stdout, "%s\n", out)
	return 0
}
