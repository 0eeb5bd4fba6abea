// Package tlogproof encodes and parses C2SP tlog-proof@v1: an offline proof
// that an entry is in a transparency log. It is the proof of logging the
// broker returns with every credential (the log_proof field), and the format
// an auditor's verifier reads.
//
// # Format
//
//	c2sp.org/tlog-proof@v1
//	index 41
//	gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=
//	B95lDa8R83lS8n0eG+o0buTxRKQTYFi//1U8anccXmA=
//
//	broker.example.com/audit
//	42
//	sFodV/vSp5O8n9a8QpW6PRY97tfOSW5bsc2Xl/EQi08=
//
//	— broker.example.com/audit hI2DJw…
//
// The first line is the header, an optional "extra" line carries base64
// opaque data (not authenticated: this package keeps it but nothing here
// trusts it), then the entry's index in decimal, then the RFC 6962 inclusion
// proof, one base64 SHA-256 hash per line from the leaf's sibling up, then an
// empty line and the checkpoint (a C2SP tlog-checkpoint signed note) verbatim.
//
// [Parse] checks the syntax only. To verify a proof, open the checkpoint with
// the log's verifier key (golang.org/x/mod/sumdb/note), parse its text
// (auditlog.ParseCheckpoint in shared/auditlog), and check the inclusion of the entry's leaf hash with
// tlog.CheckRecord(p.Hashes, tree.N, tree.Hash, p.Index, tlog.RecordHash(entry)).
package tlogproof

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"

	"golang.org/x/mod/sumdb/tlog"
)

// Header is the first line of every proof.
const Header = "c2sp.org/tlog-proof@v1"

// Bounds Parse enforces.
const (
	MaxHashes = 63       // an inclusion proof in a tree of fewer than 2^63 leaves
	MaxSize   = 64 << 10 // the whole proof
)

// ErrMalformed is wrapped by every error of Parse.
var ErrMalformed = errors.New("malformed tlog-proof")

// Proof is a tlog-proof: an entry's index, its inclusion proof, and the
// checkpoint (signed note, verbatim) the proof leads to.
type Proof struct {
	Index      int64
	Hashes     []tlog.Hash
	Checkpoint []byte
	// Extra is the optional opaque extra data (nil when absent). It is not
	// authenticated.
	Extra []byte
}

// Marshal encodes the proof.
func (p Proof) Marshal() []byte {
	enc := base64.StdEncoding
	b := make([]byte, 0, len(Header)+len("\nextra \nindex 18446744073709551615\n\n")+enc.EncodedLen(len(p.Extra))+
		len(p.Hashes)*(enc.EncodedLen(tlog.HashSize)+1)+len(p.Checkpoint))
	b = append(b, Header+"\n"...)
	if p.Extra != nil {
		b = append(b, "extra "...)
		b = enc.AppendEncode(b, p.Extra)
		b = append(b, '\n')
	}
	b = append(b, "index "...)
	b = strconv.AppendInt(b, p.Index, 10)
	b = append(b, '\n')
	for _, h := range p.Hashes {
		b = enc.AppendEncode(b, h[:])
		b = append(b, '\n')
	}
	b = append(b, '\n')
	return append(b, p.Checkpoint...)
}

func badHash(i int) error {
	return fmt.Errorf("%w: hash %d is not a base64 SHA-256 hash", ErrMalformed, i)
}

// Parse decodes a proof. It checks the syntax (and that the checkpoint is a
// non-empty text ending in a newline), not the signature nor the proof.
func Parse(data []byte) (Proof, error) {
	var p Proof
	if len(data) > MaxSize {
		return p, fmt.Errorf("%w: %d bytes, more than %d", ErrMalformed, len(data), MaxSize)
	}
	line := func() (string, bool) {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			return "", false
		}
		l := string(data[:i])
		data = data[i+1:]
		return l, true
	}
	l, ok := line()
	if !ok || l != Header {
		return p, fmt.Errorf("%w: the first line is not %q", ErrMalformed, Header)
	}
	if l, ok = line(); !ok {
		return p, fmt.Errorf("%w: no index line", ErrMalformed)
	}
	if rest, found := cutPrefix(l, "extra "); found {
		extra, err := base64.StdEncoding.Strict().DecodeString(rest)
		if err != nil || base64.StdEncoding.EncodeToString(extra) != rest {
			return p, fmt.Errorf("%w: the extra line is not base64", ErrMalformed)
		}
		p.Extra = extra
		if l, ok = line(); !ok {
			return p, fmt.Errorf("%w: no index line", ErrMalformed)
		}
	}
	rest, found := cutPrefix(l, "index ")
	if !found {
		return p, fmt.Errorf("%w: no index line", ErrMalformed)
	}
	n, err := strconv.ParseInt(rest, 10, 64)
	if err != nil || n < 0 || strconv.FormatInt(n, 10) != rest {
		return p, fmt.Errorf("%w: the index is not a decimal without leading zeroes", ErrMalformed)
	}
	p.Index = n
	const hashLen = 44 // base64.StdEncoding.EncodedLen(tlog.HashSize)
	for {
		// The hash lines are read in place, without a string or buffer per
		// line: a proof comes with every credential.
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			return p, fmt.Errorf("%w: no empty line before the checkpoint", ErrMalformed)
		}
		l := data[:i]
		data = data[i+1:]
		if len(l) == 0 {
			break
		}
		if len(p.Hashes) == MaxHashes {
			return p, fmt.Errorf("%w: more than %d hashes", ErrMalformed, MaxHashes)
		}
		if len(l) != hashLen {
			return p, badHash(len(p.Hashes))
		}
		var dec [hashLen * 3 / 4]byte
		var again [hashLen]byte
		m, err := base64.StdEncoding.Strict().Decode(dec[:], l)
		if err != nil || m != tlog.HashSize {
			return p, badHash(len(p.Hashes))
		}
		if base64.StdEncoding.Encode(again[:], dec[:m]); !bytes.Equal(again[:], l) {
			return p, badHash(len(p.Hashes))
		}
		p.Hashes = append(p.Hashes, tlog.Hash(dec[:tlog.HashSize]))
	}
	if len(data) == 0 || data[len(data)-1] != '\n' {
		return p, fmt.Errorf("%w: the checkpoint is empty or does not end in a newline", ErrMalformed)
	}
	p.Checkpoint = append([]byte(nil), data...)
	return p, nil
}

func cutPrefix(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && s[:len(prefix)] == prefix {
		return s[len(prefix):], true
	}
	return s, false
}
