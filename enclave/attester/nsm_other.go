//go:build !linux

package attester

import "errors"

// OpenNSM always fails on this platform: the Nitro Secure Module exists only
// inside a Nitro enclave, which runs Linux. Use NewSimulated instead.
func OpenNSM() (Attester, error) {
	return nil, errors.New("the Nitro Secure Module (/dev/nsm) is only available on linux inside a Nitro enclave; use simulated mode")
}
