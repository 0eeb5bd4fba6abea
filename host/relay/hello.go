package relay

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"golang.org/x/crypto/cryptobyte"
)

// MaxHello bounds the bytes read to find a ClientHello's server_name: the
// records that carry the ClientHello, headers included.
const MaxHello = 16 << 10

// errNotTLS is a connection that does not start with a TLS handshake record.
var errNotTLS = errors.New("not a TLS ClientHello")

// readHello reads TLS records from r until they hold a whole ClientHello, and
// returns every byte read (to replay to the connection's destination) and the
// server_name it names ("" without SNI). It reads at most MaxHello bytes.
func readHello(r io.Reader) (raw []byte, sni string, err error) {
	var hs []byte // the handshake message bytes, across records
	for {
		var hdr [5]byte
		if len(raw)+len(hdr) > MaxHello {
			return raw, "", fmt.Errorf("ClientHello is larger than %d bytes", MaxHello)
		}
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return raw, "", fmt.Errorf("failed to read a TLS record header: %w", err)
		}
		raw = append(raw, hdr[:]...)
		if hdr[0] != 0x16 || hdr[1] != 3 {
			return raw, "", errNotTLS
		}
		n := int(hdr[3])<<8 | int(hdr[4])
		if n == 0 || len(raw)+n > MaxHello {
			return raw, "", fmt.Errorf("TLS record of %d bytes: empty or beyond the %d-byte bound", n, MaxHello)
		}
		start := len(raw)
		raw = append(raw, make([]byte, n)...)
		if m, err := io.ReadFull(r, raw[start:]); err != nil {
			return raw[:start+m], "", fmt.Errorf("failed to read a TLS record: %w", err)
		}
		hs = append(hs, raw[start:]...)
		if len(hs) < 4 {
			continue
		}
		if hs[0] != 1 { // client_hello
			return raw, "", errNotTLS
		}
		need := 4 + (int(hs[1])<<16 | int(hs[2])<<8 | int(hs[3]))
		if need > MaxHello {
			return raw, "", fmt.Errorf("ClientHello is larger than %d bytes", MaxHello)
		}
		if len(hs) >= need {
			sni, err := parseSNI(hs[4:need])
			return raw, sni, err
		}
	}
}

// parseSNI returns the host_name of a ClientHello body's server_name
// extension (RFC 6066), lowercased; "" if there is none.
func parseSNI(body []byte) (string, error) {
	s := cryptobyte.String(body)
	var (
		version   uint16
		random    []byte
		sessionID cryptobyte.String
		suites    cryptobyte.String
		comp      cryptobyte.String
	)
	if !s.ReadUint16(&version) || !s.ReadBytes(&random, 32) || !s.ReadUint8LengthPrefixed(&sessionID) ||
		!s.ReadUint16LengthPrefixed(&suites) || !s.ReadUint8LengthPrefixed(&comp) {
		return "", errors.New("malformed ClientHello")
	}
	if s.Empty() {
		return "", nil // no extensions
	}
	var exts cryptobyte.String
	if !s.ReadUint16LengthPrefixed(&exts) || !s.Empty() {
		return "", errors.New("malformed ClientHello extensions")
	}
	for !exts.Empty() {
		var typ uint16
		var data cryptobyte.String
		if !exts.ReadUint16(&typ) || !exts.ReadUint16LengthPrefixed(&data) {
			return "", errors.New("malformed ClientHello extension")
		}
		if typ != 0 { // server_name
			continue
		}
		var list cryptobyte.String
		if !data.ReadUint16LengthPrefixed(&list) || !data.Empty() {
			return "", errors.New("malformed server_name extension")
		}
		for !list.Empty() {
			var nameType uint8
			var name cryptobyte.String
			if !list.ReadUint8(&nameType) || !list.ReadUint16LengthPrefixed(&name) {
				return "", errors.New("malformed server_name entry")
			}
			if nameType == 0 { // host_name
				if len(name) == 0 || len(name) > 255 {
					return "", errors.New("server_name host_name is empty or longer than 255 bytes")
				}
				return strings.ToLower(string(name)), nil
			}
		}
		return "", nil
	}
	return "", nil
}
