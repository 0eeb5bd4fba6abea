// Package tlogproof encodes and parses C2SP tlog-proof documents
// (https://c2sp.org/tlog-proof): an offline-verifiable proof that an entry is
// in a transparency log, made of the entry's index, its RFC 6962 inclusion
// proof and the checkpoint (signed note, optionally cosigned) the proof leads
// to.
//
// # Format
//
//	c2sp.org/tlog-proof@v1
//	index 73894
//	gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=
//	B95lDa8R83lS8n0eG+o0buTxRKQTYFi//1U8anccXmA=
//
//	broker.example.com/audit
//	109482
//	sFodV/vSp5O8n9a8QpW6PRY97tfOSW5bsc2Xl/EQi08=
//
//	— broker.example.com/audit hI2DJw…
//
// The hash lines run from the leaf's sibling up to the root's child. The
// checkpoint follows the blank line verbatim, signatures included.
//
// # Verifying
//
// [Parse] checks only the syntax. A verifier then opens [Proof.Checkpoint]
// with note.Open and the log's (and witnesses') verifier keys, parses the
// checkpoint's tree, computes the entry's leaf hash and calls tlog.CheckRecord
// with [Proof.Hashes]. Nothing here is trusted before those checks.
//
// The spec's optional "extra" line is accepted and dropped by Parse (it is
// unauthenticated and this project gives it no meaning); Marshal never writes
// one.
package tlogproof

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/tlog"
)

// Header is the first line of every proof.
const Header = "c2sp.org/tlog-proof@v1"

// MaxSize is the largest proof Parse accepts: 63 hashes and a checkpoint with
// many cosignatures fit well within it.
const MaxSize = 64 << 10

// maxHashes is the length of the longest inclusion proof (a tree of 2^63
// entries).
const maxHashes = 63

// Proof is one tlog-proof document.
type Proof struct {
	// Index is the entry's zero-based index in the log.
	Index int64
	// Hashes is the RFC 6962 inclusion proof of the entry in the tree of
	// Checkpoint.
	Hashes []tlog.Hash
	// Checkpoint is the signed note, verbatim (text, blank line, signatures).
	Checkpoint []byte
}

// Marshal encodes p.
func (p Proof) Marshal() []byte {
	var b bytes.Buffer
	b.WriteString(Header + "\n")
	b.WriteString("index " + strconv.FormatInt(p.Index, 10) + "\n")
	for _, h := range p.Hashes {
		b.WriteString(base64.StdEncoding.EncodeToString(h[:]) + "\n")
	}
	b.WriteString("\n")
	b.Write(p.Checkpoint)
	return b.Bytes()
}

var errMalformed = errors.New("malformed tlog-proof")

// Parse decodes a proof. It checks the syntax only: see the package doc for
// what a verifier must check next.
func Parse(data []byte) (Proof, error) {
	if len(data) > MaxSize {
		return Proof{}, fmt.Errorf("%w: longer than %d bytes", errMalformed, MaxSize)
	}
	rest := data
	line := func() (string, bool) {
		l, r, ok := bytes.Cut(rest, []byte("\n"))
		if !ok {
			return "", false
		}
		rest = r
		return string(l), true
	}
	l, ok := line()
	if !ok || l != Header {
		return Proof{}, fmt.Errorf("%w: first line is not %q", errMalformed, Header)
	}
	l, ok = line()
	if extra, isExtra := strings.CutPrefix(l, "extra "); ok && isExtra {
		if _, err := base64.StdEncoding.Strict().DecodeString(extra); err != nil || extra == "" {
			return Proof{}, fmt.Errorf("%w: bad extra line", errMalformed)
		}
		l, ok = line()
	}
	idx, isIndex := strings.CutPrefix(l, "index ")
	if !ok || !isIndex {
		return Proof{}, fmt.Errorf("%w: missing index line", errMalformed)
	}
	n, err := strconv.ParseInt(idx, 10, 64)
	if err != nil || n < 0 || strconv.FormatInt(n, 10) != idx {
		return Proof{}, fmt.Errorf("%w: bad index %q", errMalformed, idx)
	}
	p := Proof{Index: n}
	for {
		l, ok = line()
		if !ok {
			return Proof{}, fmt.Errorf("%w: missing blank line before the checkpoint", errMalformed)
		}
		if l == "" {
			break
		}
		if len(p.Hashes) == maxHashes {
			return Proof{}, fmt.Errorf("%w: more than %d hashes", errMalformed, maxHashes)
		}
		h, err := base64.StdEncoding.Strict().DecodeString(l)
		if err != nil || len(h) != tlog.HashSize {
			return Proof{}, fmt.Errorf("%w: bad hash line %d", errMalformed, len(p.Hashes)+1)
		}
		p.Hashes = append(p.Hashes, tlog.Hash(h))
	}
	if len(rest) == 0 {
		return Proof{}, fmt.Errorf("%w: no checkpoint", errMalformed)
	}
	p.Checkpoint = bytes.Clone(rest)
	return p, nil
}
