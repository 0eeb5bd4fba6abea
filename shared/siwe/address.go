package siwe

import (
	"encoding/hex"
	"strings"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	"golang.org/x/crypto/sha3"
)

// ValidateAddress checks that addr is "0x" followed by 40 hex digits and,
// if its letters mix upper and lower case, that they match the EIP-55
// checksum. All-lowercase and all-uppercase addresses carry no checksum and
// are accepted. Errors wrap ErrMalformed or ErrChecksum.
func ValidateAddress(addr string) error {
	if err := checkAddress(addr); err != nil {
		return err
	}
	return nil
}

// ChecksumAddress returns addr ("0x" followed by 40 hex digits, in any
// case) in EIP-55 mixed-case checksum form. It does not check addr's own
// capitalization; use ValidateAddress for that.
func ChecksumAddress(addr string) (string, error) {
	if err := checkAddressSyntax(addr); err != nil {
		return "", err
	}
	return checksum(strings.ToLower(addr[2:])), nil
}

// AddressOf returns the Ethereum address of pub: "0x" and the lowercase hex
// of the last 20 bytes of the Keccak-256 hash of the uncompressed point X‖Y.
func AddressOf(pub *secp256k1.PublicKey) string {
	h := sha3.NewLegacyKeccak256()
	h.Write(pub.SerializeUncompressed()[1:]) // drop the 0x04 prefix
	return "0x" + hex.EncodeToString(h.Sum(nil)[12:])
}

func checkAddressSyntax(addr string) *invalidError {
	if len(addr) != 42 || addr[0] != '0' || addr[1] != 'x' {
		return malformed("address must be \"0x\" followed by 40 hex digits")
	}
	if err := checkChars(addr[2:], isHex, false); err != nil {
		return malformed("address must be \"0x\" followed by 40 hex digits")
	}
	return nil
}

func checkAddress(addr string) *invalidError {
	if err := checkAddressSyntax(addr); err != nil {
		return err
	}
	digits := addr[2:]
	lower, upper := strings.ToLower(digits), strings.ToUpper(digits)
	if digits == lower || digits == upper {
		return nil
	}
	if "0x"+digits != checksum(lower) {
		return &invalidError{msg: "mixed-case address does not match its EIP-55 checksum", kinds: []error{ErrChecksum}}
	}
	return nil
}

// checksum applies EIP-55 to 40 lowercase hex digits: a letter is upper case
// when the matching nibble of keccak256(the lowercase digits) is 8 or more.
func checksum(lower string) string {
	h := sha3.NewLegacyKeccak256()
	h.Write([]byte(lower))
	sum := h.Sum(nil)
	out := []byte("0x" + lower)
	for i := 0; i < len(lower); i++ {
		nibble := sum[i/2] >> 4
		if i%2 == 1 {
			nibble = sum[i/2] & 0x0f
		}
		if c := lower[i]; 'a' <= c && c <= 'f' && nibble >= 8 {
			out[2+i] = c - 'a' + 'A'
		}
	}
	return string(out)
}
