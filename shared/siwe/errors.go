package siwe

import (
	"errors"
	"fmt"
	"strconv"
)

// Errors that callers can branch on with errors.Is. The errors returned by
// this package wrap one or more of them and say what exactly was wrong.
var (
	// ErrMalformed means the message does not follow EIP-4361 (or an address
	// is not "0x" followed by 40 hex digits).
	ErrMalformed = errors.New("siwe: malformed message")
	// ErrChecksum means a mixed-case address does not match its EIP-55
	// checksum. In a parsed message it comes together with ErrMalformed.
	ErrChecksum = errors.New("siwe: bad EIP-55 address checksum")
	// ErrSignature means the signature is malformed, malleable (high s), or
	// no public key can be recovered from it.
	ErrSignature = errors.New("siwe: invalid signature")
	// ErrAddressMismatch means the signature is valid but was made by a key
	// other than the message's address.
	ErrAddressMismatch = errors.New("siwe: signature is not by the message's address")
	// ErrExpired means the message's expiration time has passed.
	ErrExpired = errors.New("siwe: message has expired")
	// ErrNotYetValid means the message's not-before time has not been reached.
	ErrNotYetValid = errors.New("siwe: message is not yet valid")
	// ErrIssuedInFuture means the message's issued-at time is in the future.
	ErrIssuedInFuture = errors.New("siwe: message is issued in the future")
)

// invalidError says what is wrong with a message or an address. It unwraps
// to its kinds (ErrMalformed, ErrChecksum).
type invalidError struct {
	line  int // 1-based line of the message, or 0
	msg   string
	kinds []error
}

func (e *invalidError) Error() string {
	if e.line > 0 {
		return fmt.Sprintf("siwe: line %d: %s", e.line, e.msg)
	}
	return "siwe: " + e.msg
}

func (e *invalidError) Unwrap() []error { return e.kinds }

func malformed(format string, args ...any) *invalidError {
	return &invalidError{msg: fmt.Sprintf(format, args...), kinds: []error{ErrMalformed}}
}

// atLine returns err, an *invalidError from a field check, placed at a line
// of a message being parsed, with field naming the field. Whatever made the
// field invalid also makes the message malformed.
func atLine(line int, field string, err *invalidError) *invalidError {
	e := &invalidError{line: line, msg: err.msg, kinds: err.kinds}
	if field != "" {
		e.msg = field + ": " + e.msg
	}
	if !errors.Is(e, ErrMalformed) {
		e.kinds = append([]error{ErrMalformed}, e.kinds...)
	}
	return e
}

// inField is atLine without a line, for Validate.
func inField(field string, err *invalidError) *invalidError {
	return atLine(0, field, err)
}

// maxEcho bounds how much of hostile input an error message may quote: the
// quoted text, escapes included, is at most maxEcho bytes between the quotes.
const maxEcho = 24

// snippet quotes the start of untrusted input for an error message, escaped
// to printable ASCII and cut so that the escapes of binary input cannot make
// it long.
func snippet(s string) string {
	for n := min(len(s), maxEcho); ; n-- {
		q := strconv.QuoteToASCII(s[:n])
		if len(q) <= maxEcho+2 || n == 0 {
			if n < len(s) {
				q += "..."
			}
			return q
		}
	}
}
