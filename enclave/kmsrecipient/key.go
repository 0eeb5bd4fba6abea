package kmsrecipient

import (
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
)

// KeyBits is the recipient key size. KMS accepts RSA-2048, 3072 and 4096
// recipient keys; 2048 is what the Nitro Enclaves SDK uses and is enough
// for a key that lives for one KMS call.
const KeyBits = 2048

// GenerateKey returns a fresh RSA-2048 recipient key. Keep it in memory only,
// for the one GenerateDataKey or Decrypt call it serves.
//
// rand is passed to [rsa.GenerateKey], which since Go 1.26 ignores it and
// always uses a secure source (crypto/rand, the NSM-seeded kernel RNG inside
// an enclave).
func GenerateKey(rand io.Reader) (*rsa.PrivateKey, error) {
	key, err := rsa.GenerateKey(rand, KeyBits)
	if err != nil {
		return nil, fmt.Errorf("kmsrecipient: failed to generate the recipient key: %w", err)
	}
	return key, nil
}

// PublicKeyDER returns the SubjectPublicKeyInfo DER of key's public half:
// the bytes for the attestation document's public_key field. KMS names the
// recipient in its envelope by the SHA-256 of these bytes.
func PublicKeyDER(key *rsa.PrivateKey) ([]byte, error) {
	if key == nil {
		return nil, errors.New("kmsrecipient: no private key")
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("kmsrecipient: failed to encode the public key: %w", err)
	}
	return der, nil
}
