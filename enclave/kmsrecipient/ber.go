package kmsrecipient

import (
	"errors"
	"fmt"
)

// MaxEnvelopeSize is the largest envelope [Decrypt] reads, in bytes. A KMS
// data key envelope is about 500 bytes; KMS Decrypt plaintexts are at most
// 4096 bytes.
const MaxEnvelopeSize = 64 << 10

// MaxDepth is the deepest nesting of BER values [Decrypt] accepts. The KMS
// envelope nests 11 levels deep.
const MaxDepth = 24

// BER identifier octets used here.
const (
	tagEOC              = 0x00
	tagInteger          = 0x02
	tagOctetString      = 0x04
	tagOID              = 0x06
	tagSequence         = 0x30 // constructed
	tagSet              = 0x31 // constructed
	tagConstructedOctet = 0x24
	tagContext0         = 0x80 // [0] primitive
	tagContext0Cons     = 0xa0 // [0] constructed
	constructedBit      = 0x20
)

var errTruncated = errors.New("kmsrecipient: malformed envelope: truncated")

// berToDER rewrites one BER value, which must span all of in, as DER:
// definite minimal lengths, constructed OCTET STRINGs joined into one
// primitive OCTET STRING. It does not know the schema, so an IMPLICIT tag over
// a constructed OCTET STRING (such as encryptedContent [0]) stays constructed;
// the parser joins those. Only low tag numbers (< 31) occur in CMS and only
// those are accepted.
//
// The output is never longer than the input: an indefinite length costs 4
// bytes (0x80 and the end-of-contents octets) and a definite length of a
// value shorter than MaxEnvelopeSize at most 3, so the one allocation, of
// len(in) bytes, is never grown.
func berToDER(in []byte) ([]byte, error) {
	if len(in) > MaxEnvelopeSize {
		return nil, fmt.Errorf("kmsrecipient: envelope of %d bytes is larger than the %d-byte limit", len(in), MaxEnvelopeSize)
	}
	out := make([]byte, 0, len(in))
	out, rest, err := appendDER(out, in, 1)
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("kmsrecipient: malformed envelope: %d trailing bytes", len(rest))
	}
	return out, nil
}

// header reads the identifier and length octets at the start of in.
// For an indefinite length, length is -1.
func header(in []byte) (tag byte, length, hlen int, err error) {
	if len(in) < 2 {
		return 0, 0, 0, errTruncated
	}
	tag = in[0]
	if tag&0x1f == 0x1f {
		return 0, 0, 0, errors.New("kmsrecipient: malformed envelope: high tag numbers are not used in CMS")
	}
	if tag == tagEOC {
		return 0, 0, 0, errors.New("kmsrecipient: malformed envelope: unexpected end-of-contents")
	}
	l := in[1]
	switch {
	case l < 0x80:
		length, hlen = int(l), 2
	case l == 0x80:
		if tag&constructedBit == 0 {
			return 0, 0, 0, errors.New("kmsrecipient: malformed envelope: indefinite length on a primitive value")
		}
		return tag, -1, 2, nil
	default:
		n := int(l & 0x7f)
		if n > 3 { // 3 bytes already exceed MaxEnvelopeSize; 0xff (reserved) lands here too
			return 0, 0, 0, errors.New("kmsrecipient: malformed envelope: length too large")
		}
		if len(in) < 2+n {
			return 0, 0, 0, errTruncated
		}
		for _, b := range in[2 : 2+n] {
			length = length<<8 | int(b)
		}
		hlen = 2 + n
	}
	if length > len(in)-hlen {
		return 0, 0, 0, errTruncated
	}
	return tag, length, hlen, nil
}

// appendDER appends the DER form of the BER value at the start of in to out
// and returns what follows it.
func appendDER(out, in []byte, depth int) ([]byte, []byte, error) {
	if depth > MaxDepth {
		return nil, nil, fmt.Errorf("kmsrecipient: malformed envelope: nested deeper than %d levels", MaxDepth)
	}
	tag, length, hlen, err := header(in)
	if err != nil {
		return nil, nil, err
	}
	if tag&constructedBit == 0 {
		out = appendHeader(out, tag, length)
		out = append(out, in[hlen:hlen+length]...)
		return out, in[hlen+length:], nil
	}

	// Constructed: normalise the children in place at the end of out, then
	// put the header in front of them.
	start := len(out)
	body, rest := in[hlen:], []byte(nil)
	if length >= 0 {
		body, rest = in[hlen:hlen+length], in[hlen+length:]
	}
	for {
		if length < 0 {
			if len(body) < 2 {
				return nil, nil, fmt.Errorf("kmsrecipient: malformed envelope: truncated (missing end-of-contents)")
			}
			if body[0] == tagEOC && body[1] == 0 {
				rest = body[2:]
				break
			}
		} else if len(body) == 0 {
			break
		}
		out, body, err = appendDER(out, body, depth+1)
		if err != nil {
			return nil, nil, err
		}
	}

	if tag == tagConstructedOctet {
		// Every child is now a primitive OCTET STRING: keep their contents.
		w, r := start, start
		for r < len(out) {
			ctag, clen, chlen, err := header(out[r:])
			if err != nil {
				return nil, nil, err
			}
			if ctag != tagOctetString {
				return nil, nil, fmt.Errorf("kmsrecipient: malformed envelope: constructed OCTET STRING holds tag 0x%02x", ctag)
			}
			w += copy(out[w:], out[r+chlen:r+chlen+clen])
			r += chlen + clen
		}
		out = out[:w]
		tag = tagOctetString
	}
	return insertHeader(out, start, tag), rest, nil
}

// appendHeader appends identifier and minimal definite length octets.
func appendHeader(out []byte, tag byte, length int) []byte {
	out = append(out, tag)
	switch {
	case length < 0x80:
		return append(out, byte(length))
	case length < 0x100:
		return append(out, 0x81, byte(length))
	case length < 0x10000:
		return append(out, 0x82, byte(length>>8), byte(length))
	default:
		return append(out, 0x83, byte(length>>16), byte(length>>8), byte(length))
	}
}

// insertHeader puts the header of a value whose contents are out[start:] in
// front of those contents.
func insertHeader(out []byte, start int, tag byte) []byte {
	var hb [5]byte
	h := appendHeader(hb[:0], tag, len(out)-start)
	n := len(out)
	out = append(out, h...) // grow by len(h); within capacity, see berToDER
	copy(out[start+len(h):], out[start:n])
	copy(out[start:], h)
	return out
}
