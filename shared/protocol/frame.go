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
// allocating for it.
func ReadFrame(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 {
		return nil, ErrEmptyFrame
	}
	if n > MaxFrameSize {
		return nil, fmt.Errorf("%w (%d bytes)", ErrFrameTooLarge, n)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
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
