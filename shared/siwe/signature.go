package siwe

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	"github.com/decred/dcrd/dcrec/secp256k1/v4/ecdsa"
	"golang.org/x/crypto/sha3"
)

// SignatureSize is the size of a personal_sign signature: r‖s‖v.
const SignatureSize = 65

// PersonalHash returns the EIP-191 (version 0x45, personal_sign) hash of msg:
// keccak256("\x19Ethereum Signed Message:\n" + decimal len(msg) + msg).
func PersonalHash(msg []byte) [32]byte {
	h := sha3.NewLegacyKeccak256()
	h.Write([]byte("\x19Ethereum Signed Message:\n" + strconv.Itoa(len(msg))))
	h.Write(msg)
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// Sign signs msg as personal_sign wallets do: an RFC 6979 deterministic,
// low-s ECDSA signature over PersonalHash(msg), returned as 65 bytes r‖s‖v
// with v = 27 + the recovery id.
func Sign(key *secp256k1.PrivateKey, msg []byte) []byte {
	h := PersonalHash(msg)
	// The decred compact format is v‖r‖s with v = 27 + recovery code
	// (+4 for a compressed key, which Ethereum does not use). The
	// recovery code is 0 or 1 unless the nonce point's x coordinate
	// exceeded the group order, which has probability about 2^-127;
	// such a signature would carry v = 29 or 30, which Recover rejects.
	compact := ecdsa.SignCompact(key, h[:], false)
	sig := make([]byte, SignatureSize)
	copy(sig, compact[1:])
	sig[64] = compact[0]
	return sig
}

// Recover returns the lowercase address of the key that signed msg with
// personal_sign. sig is r‖s‖v, 65 bytes, with v in {0, 1, 27, 28}. It
// rejects r or s outside [1, n-1] and s above n/2, so that each message and
// key has exactly one acceptable signature encoding (no malleability).
// Errors wrap ErrSignature.
func Recover(msg []byte, sig []byte) (address string, err error) {
	if len(sig) != SignatureSize {
		return "", fmt.Errorf("%w: signature is %d bytes, want %d", ErrSignature, len(sig), SignatureSize)
	}
	var recid byte
	switch v := sig[64]; v {
	case 0, 1:
		recid = v
	case 27, 28:
		recid = v - 27
	default:
		return "", fmt.Errorf("%w: v is %d, want 0, 1, 27 or 28", ErrSignature, v)
	}
	var r, s secp256k1.ModNScalar
	if overflow := r.SetByteSlice(sig[0:32]); overflow {
		return "", fmt.Errorf("%w: r is not below the group order", ErrSignature)
	}
	if r.IsZero() {
		return "", fmt.Errorf("%w: r is zero", ErrSignature)
	}
	if overflow := s.SetByteSlice(sig[32:64]); overflow {
		return "", fmt.Errorf("%w: s is not below the group order", ErrSignature)
	}
	if s.IsZero() {
		return "", fmt.Errorf("%w: s is zero", ErrSignature)
	}
	// Either s or n-s verifies; Ethereum (EIP-2) accepts only the low one.
	if s.IsOverHalfOrder() {
		return "", fmt.Errorf("%w: s is above half the group order (malleable signature)", ErrSignature)
	}
	var compact [SignatureSize]byte
	compact[0] = 27 + recid
	copy(compact[1:], sig[:64])
	h := PersonalHash(msg)
	pub, _, err := ecdsa.RecoverCompact(compact[:], h[:])
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrSignature, err)
	}
	return AddressOf(pub), nil
}

// VerifyText parses text as an EIP-4361 message and checks that sig is a
// personal_sign signature over text itself, made by the message's address.
// It returns the message and the signer's address in lowercase.
//
// This is how to check a sign-in received from elsewhere: the signature is
// checked over the exact bytes that were signed, and the fields returned are
// parsed from those same bytes. The caller must still check the fields
// (domain, URI, chain ID, nonce) and the times (Message.CheckTime).
//
// Errors wrap ErrMalformed (and ErrChecksum), ErrSignature or
// ErrAddressMismatch.
func VerifyText(text string, sig []byte) (*Message, string, error) {
	// Parse first: it is cheap, and it bounds the size of what is hashed.
	m, err := Parse(text)
	if err != nil {
		return nil, "", err
	}
	wallet, err := Recover([]byte(text), sig)
	if err != nil {
		return nil, "", err
	}
	if wallet != strings.ToLower(m.Address) {
		return nil, "", mismatch(wallet, m.Address)
	}
	return m, wallet, nil
}

// Verify checks that sig is a personal_sign signature over m.String() by
// m.Address, and returns the signer's address in lowercase. m must pass
// Validate.
//
// Verify is for messages built in this process. A message received as text
// must be checked with VerifyText instead: a wallet signs the text, which need
// not be byte-for-byte m.String() (times, for example, may be written
// differently), so Verify could reject a good signature over it.
func (m *Message) Verify(sig []byte) (wallet string, err error) {
	if err := m.Validate(); err != nil {
		return "", err
	}
	wallet, err = Recover([]byte(m.String()), sig)
	if err != nil {
		return "", err
	}
	if wallet != strings.ToLower(m.Address) {
		return "", mismatch(wallet, m.Address)
	}
	return wallet, nil
}

// mismatch reports a valid signature by the wrong key. Both addresses have
// been validated, so quoting them in full echoes nothing unchecked.
func mismatch(signer, address string) error {
	return fmt.Errorf("%w: signed by %s, message is for %s", ErrAddressMismatch, signer, address)
}
