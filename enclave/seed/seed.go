// Package seed gives the enclave its 32-byte seed, from which every key is
// derived. There are two sources.
//
// # Sealed by KMS (nitro mode)
//
// [KMS] seals the seed with AWS KMS so that it is released only to an attested
// enclave. Every call carries a Recipient: an attestation document whose
// public_key is a fresh RSA-2048 key made in the enclave for that one call.
// KMS checks the document against the key policy (PCR0 =
// kms:RecipientAttestation:ImageSha384, and pinned PCR<n>) and answers with
// CiphertextForRecipient, the data key encrypted to that RSA key, which only
// this process can open (enclave/kmsrecipient). An answer whose Plaintext is
// set is refused ([ErrPlaintextInAnswer]): KMS only sends it when it ignored
// the Recipient, and then the seed has crossed the host in clear.
//
//   - First start: GenerateDataKey (AES_256). The CiphertextBlob goes to the
//     host to store; the seed itself is not used yet.
//   - Every start, the first included: Decrypt(CiphertextBlob) with the
//     configured key id pinned, so a blob sealed under another key is refused.
//
// The enclave speaks to KMS with aws-sdk-go-v2 over an [egress.Dialer] (the
// host's vsock-proxy in nitro mode) and does TLS itself, verifying KMS with the
// roots embedded in the binary ([DefaultRoots]). The host lends it short-lived
// AWS credentials; they sign the requests and are never logged.
//
// Randomness: the attester (the NSM in nitro mode) is the TLS client's Rand
// and is passed to the recipient key generation; since Go 1.26 RSA key
// generation ignores that reader and uses crypto/rand, which inside an enclave
// is the kernel's generator, seeded by the NSM. The SDK's request ids and
// retry jitter use crypto/rand too; none of them is a secret.
//
// [Gate] is the enclave's protocol handler until the seed is open: it answers
// info (seed: needs_unseal), provide_credentials and unseal, and everything
// else with unavailable; then it hands over to the handler Open returns.
//
// # A file (simulated mode)
//
// [LoadOrCreate] keeps the seed in a file created on first start with mode
// 0600 in the state directory. This is for laptops and CI only: a file seed
// is exactly as safe as the file system that holds it, which is why the
// enclave warns loudly in simulated mode.
package seed

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// Size is the seed size in bytes.
const Size = 32

// FileName is the seed file's name inside the state directory.
const FileName = "seed"

// ErrPermissions is returned for a seed file or state directory that others
// can read.
var ErrPermissions = errors.New("seed: file permissions are too open")

// LoadOrCreate returns the seed stored in dir, creating dir (0700) and the seed
// file (0600, random bytes from rand) on first use. It refuses a seed file that
// is not a regular file, has the wrong size, or is accessible to group or others.
func LoadOrCreate(dir string, rand io.Reader) (seed []byte, created bool, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("seed: failed to create state dir: %w", err)
	}
	path := filepath.Join(dir, FileName)
	seed, err = load(path)
	if err == nil {
		return seed, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	seed = make([]byte, Size)
	if _, err := io.ReadFull(rand, seed); err != nil {
		return nil, false, fmt.Errorf("seed: failed to read randomness: %w", err)
	}
	// O_EXCL: two enclaves starting at once must not each write a seed.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		seed, err := load(path)
		return seed, false, err
	}
	if err != nil {
		return nil, false, fmt.Errorf("seed: failed to create %s: %w", path, err)
	}
	if _, err := f.Write(seed); err != nil {
		f.Close()
		os.Remove(path)
		return nil, false, fmt.Errorf("seed: failed to write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return nil, false, fmt.Errorf("seed: failed to sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return nil, false, fmt.Errorf("seed: failed to close %s: %w", path, err)
	}
	return seed, true, nil
}

func load(path string) ([]byte, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("seed: %s is not a regular file", path)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %04o; run: chmod 600 %s", ErrPermissions, path, fi.Mode().Perm(), path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("seed: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, Size+1))
	if err != nil {
		return nil, fmt.Errorf("seed: failed to read %s: %w", path, err)
	}
	if len(b) != Size {
		return nil, fmt.Errorf("seed: %s holds %d bytes, want %d (a damaged seed file; restore it from backup — a new seed means new keys)", path, len(b), Size)
	}
	return b, nil
}

// Wipe zeroes a seed in memory once the keys are derived (best effort: the Go
// runtime may have copied it).
func Wipe(seed []byte) { clear(seed) }
