package protocol

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/fxamacker/cbor/v2"
)

// Version is the protocol version this package speaks.
const Version = 1

// MaxFrameSize bounds one frame's payload. Attestation documents (~5 KiB) are the
// largest messages; the bound leaves room without letting a peer make us buffer
// much.
const MaxFrameSize = 256 << 10

// ErrFrameTooLarge is returned when a peer announces a frame over MaxFrameSize.
var ErrFrameTooLarge = errors.New("protocol: frame larger than the limit")

// ErrEmptyFrame is returned when a peer announces a zero-length frame.
var ErrEmptyFrame = errors.New("protocol: empty frame")

// WriteFrame writes one length-prefixed frame.
func WriteFrame(w io.Writer, payload []byte) error {
	if len(payload) == 0 {
		return ErrEmptyFrame
	}
	if len(payload) > MaxFrameSize {
		return ErrFrameTooLarge
	}
	buf := make([]byte, 4+len(payload))
	binary.BigEndian.PutUint32(buf, uint32(len(payload)))
	copy(buf[4:], payload)
	_, err := w.Write(buf)
	return err
}

// ReadFrame reads one frame, refusing anything over MaxFrameSize before
// allocating for it. The buffer grows as the payload's bytes arrive, so a peer
// that announces MaxFrameSize and sends a few bytes makes the reader hold a few
// bytes (at most twice what arrived, and at least frameChunk), not MaxFrameSize.
func ReadFrame(r io.Reader) ([]byte, error) { return readFrame(r, nil, nil) }

// frameChunk is the first buffer a frame's payload is read into; the buffer
// doubles, up to the announced length, each time it fills. 4 KiB holds a
// mint's answer with its audit log batch and proof (about 2.5 KiB), so it is
// read without growing the buffer.
const frameChunk = 4 << 10

// readFrame is ReadFrame with two hooks for the server: started runs once the
// frame's first byte has arrived (to start the frame deadline), progress with
// the buffer after each read of payload bytes (a test hook; see
// Server.testingOnlyFrameProgress).
func readFrame(r io.Reader, started func(), progress func(buf []byte)) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:1]); err != nil {
		return nil, err
	}
	if started != nil {
		started()
	}
	if _, err := io.ReadFull(r, hdr[1:]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	n := int(binary.BigEndian.Uint32(hdr[:]))
	if n == 0 {
		return nil, ErrEmptyFrame
	}
	if n > MaxFrameSize {
		return nil, fmt.Errorf("%w (%d bytes)", ErrFrameTooLarge, n)
	}
	buf := make([]byte, 0, min(n, frameChunk))
	empty := 0
	for len(buf) < n {
		if len(buf) == cap(buf) {
			buf = append(make([]byte, 0, min(2*cap(buf), n)), buf...)
		}
		m, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if m > 0 && progress != nil {
			progress(buf)
		}
		if len(buf) == n {
			break
		}
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if m > 0 {
			empty = 0
		} else if empty++; empty == 100 {
			// io.Reader allows (0, nil); many in a row mean a broken reader (as in bufio).
			return nil, io.ErrNoProgress
		}
	}
	return buf, nil
}

// Request is a request envelope.
type Request struct {
	Version uint            `cbor:"v"`
	ID      uint64          `cbor:"id"`
	Op      Op              `cbor:"op"`
	Body    cbor.RawMessage `cbor:"body,omitempty"`
}

// Response is a response envelope: exactly one of Err and Body is set.
type Response struct {
	ID   uint64          `cbor:"id"`
	Err  *Error          `cbor:"err,omitempty"`
	Body cbor.RawMessage `cbor:"body,omitempty"`
}

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	encMode, err = cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	decMode, err = cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		MaxNestedLevels:   8,
		MaxArrayElements:  1024,
		MaxMapPairs:       256,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		UTF8:              cbor.UTF8RejectInvalid,
		// Field names match exactly: "V" or "TOKEN" is an unknown field, not v or token.
		FieldNameMatching: cbor.FieldNameMatchingCaseSensitive,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// Marshal encodes v as deterministic CBOR.
func Marshal(v any) ([]byte, error) { return encMode.Marshal(v) }

// Unmarshal decodes CBOR strictly (see the package documentation). The whole
// input must be one data item.
func Unmarshal(data []byte, v any) error { return decMode.Unmarshal(data, v) }

// DecodeRequest decodes and sanity-checks a request envelope.
func DecodeRequest(frame []byte) (*Request, error) {
	var req Request
	if err := Unmarshal(frame, &req); err != nil {
		return nil, fmt.Errorf("protocol: malformed request: %w", err)
	}
	if req.Op == "" || len(req.Op) > 64 {
		return nil, errors.New("protocol: malformed request: missing or oversize op")
	}
	return &req, nil
}

// DecodeResponse decodes and sanity-checks a response envelope.
func DecodeResponse(frame []byte) (*Response, error) {
	var resp Response
	if err := Unmarshal(frame, &resp); err != nil {
		return nil, fmt.Errorf("protocol: malformed response: %w", err)
	}
	if resp.Err != nil && len(resp.Body) > 0 {
		return nil, errors.New("protocol: malformed response: both err and body set")
	}
	return &resp, nil
}
