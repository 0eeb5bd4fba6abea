package attester

import (
	"errors"
	"fmt"
	"slices"
)

// Attester is the enclave's view of the Nitro Secure Module: attestation
// documents and randomness. OpenNSM returns the real one, NewSimulated the
// stand-in used off-Nitro.
type Attester interface {
	// Attest returns an attestation document: an untagged COSE_Sign1 exactly
	// as /dev/nsm produces it. nonce, userData and publicKey may be nil (an
	// empty slice is treated as nil, and the field is CBOR null in the
	// document). Each is limited like on the real NSM, to MaxNonce,
	// MaxUserData and MaxPublicKey bytes; a longer one gives an error
	// wrapping ErrTooLarge that names the field.
	Attest(nonce, userData, publicKey []byte) ([]byte, error)

	// Read fills p with random bytes: NSM GetRandom in nitro mode,
	// crypto/rand in simulated mode. It returns len(p), nil or an error.
	Read(p []byte) (int, error)

	// Mode returns ModeNitro or ModeSimulated.
	Mode() string

	// PCRs returns a copy of the PCR values the documents carry, by index.
	PCRs() map[int][]byte

	// Close releases the device or the keys. Attest and Read return
	// ErrClosed afterwards.
	Close() error
}

// The two values of Attester.Mode. They match the mode names of the enclave
// binary.
const (
	ModeNitro     = "nitro"
	ModeSimulated = "simulated"
)

// Limits on the caller-supplied fields of an attestation document, the same as
// the real NSM's.
const (
	MaxNonce     = 512
	MaxUserData  = 512
	MaxPublicKey = 1024
)

var (
	// ErrTooLarge is wrapped by the error Attest returns when nonce,
	// userData or publicKey is over its limit. The message names the field.
	ErrTooLarge = errors.New("attestation input too large")

	// ErrClosed is returned by Attest and Read after Close.
	ErrClosed = errors.New("attester is closed")
)

// checkInputs enforces the NSM limits and maps empty slices to nil, so that
// both implementations treat "absent" the same way.
func checkInputs(nonce, userData, publicKey []byte) (n, u, p []byte, err error) {
	for _, f := range []struct {
		name string
		v    []byte
		max  int
	}{
		{"nonce", nonce, MaxNonce},
		{"user_data", userData, MaxUserData},
		{"public_key", publicKey, MaxPublicKey},
	} {
		if len(f.v) > f.max {
			return nil, nil, nil, fmt.Errorf("%w: %s is %d bytes, at most %d are allowed", ErrTooLarge, f.name, len(f.v), f.max)
		}
	}
	return nilIfEmpty(nonce), nilIfEmpty(userData), nilIfEmpty(publicKey), nil
}

func nilIfEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

func copyPCRs(pcrs map[int][]byte) map[int][]byte {
	out := make(map[int][]byte, len(pcrs))
	for i, v := range pcrs {
		out[i] = slices.Clone(v)
	}
	return out
}
