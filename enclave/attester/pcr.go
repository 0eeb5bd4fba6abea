package attester

import (
	"crypto/sha512"
	"fmt"
	"io"
	"os"
)

// PCRSize is the length of a PCR value: the NSM's PCR bank uses SHA-384.
const PCRSize = sha512.Size384

// simulatedPCRCount is how many PCRs a simulated document carries, like a
// real one.
const simulatedPCRCount = 16

// maxExecutableSize bounds how much of the executable is measured into PCR0.
const maxExecutableSize = 512 << 20

// simulatedKernel is the stand-in for the kernel and boot ramdisk that a real
// PCR1 measures.
const simulatedKernel = "agentkeys simulated kernel"

// Extend returns SHA-384(prev || data), the NSM's PCR extend operation. A
// fresh PCR is PCRSize zero bytes.
func Extend(prev, data []byte) []byte {
	h := sha512.New384()
	h.Write(prev)
	h.Write(data)
	return h.Sum(nil)
}

// SimulatedPCRs returns the PCRs a simulated attester started with the given
// executable and AppData puts in its documents, so that a verifier can compute
// what to expect from a given build. See the package documentation for the
// formulas.
func SimulatedPCRs(executable string, appData []byte) (map[int][]byte, error) {
	exe, err := hashFile(executable, maxExecutableSize)
	if err != nil {
		return nil, err
	}
	kernel := sha512.Sum384([]byte(simulatedKernel))
	app := sha512.Sum384(appData)

	zero := make([]byte, PCRSize)
	pcrs := make(map[int][]byte, simulatedPCRCount)
	for i := range simulatedPCRCount {
		pcrs[i] = make([]byte, PCRSize)
	}
	pcrs[0] = Extend(zero, exe)
	pcrs[1] = Extend(zero, kernel[:])
	pcrs[2] = Extend(zero, app[:])
	return pcrs, nil
}

// hashFile streams at most limit bytes of the file into SHA-384 and fails if
// the file is longer: a truncated measurement would not identify the binary.
func hashFile(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("failed to open the executable to measure: %w", err)
	}
	defer f.Close()
	h := sha512.New384()
	n, err := io.Copy(h, io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("failed to read the executable to measure: %w", err)
	}
	if n > limit {
		return nil, fmt.Errorf("executable %s is larger than %d bytes; refusing to measure it", path, limit)
	}
	return h.Sum(nil), nil
}
