package protocol

import (
	"errors"
	"fmt"
)

// Code is a stable, snake_case error kind carried on the wire.
type Code string

// The error codes. The host maps them to HTTP statuses; keep the set small.
const (
	CodeBadRequest         Code = "bad_request"         // the request body is malformed or incomplete
	CodeUnauthorized       Code = "unauthorized"        // the session token is missing, forged, expired or of the wrong kind
	CodeSignInRejected     Code = "sign_in_rejected"    // the sign-in message or its signature was refused
	CodeNonceRejected      Code = "nonce_rejected"      // the sign-in nonce is unknown, expired or already used
	CodePolicy             Code = "policy_violation"    // the request is outside the enclave's policy
	CodeUnsupportedVersion Code = "unsupported_version" // the peer speaks another protocol version
	CodeUnknownOp          Code = "unknown_op"          // the peer asked for an operation this side does not have
	CodeInternal           Code = "internal"            // the enclave failed; details are in its log
	CodeUnavailable        Code = "unavailable"         // the connection to the enclave is down (set by the client)
	CodeAuditLog           Code = "audit_log"           // the enclave's audit log takes no entry now (not resumed, or too far ahead of the host's store)
)

// Error is an error carried on the wire.
type Error struct {
	Code    Code   `cbor:"code"`
	Message string `cbor:"message"`
	// Wallet is set when the enclave had verified who asked before refusing
	// (a valid session outside the policy), so the refusal can be audited
	// under that wallet.
	Wallet string `cbor:"wallet,omitempty"`
}

func (e *Error) Error() string {
	if e.Message == "" {
		return "enclave: " + string(e.Code)
	}
	return "enclave: " + string(e.Code) + ": " + e.Message
}

// Is matches another *Error with the same code, so errors.Is(err, ErrUnauthorized)
// works whatever the message.
func (e *Error) Is(target error) bool {
	var t *Error
	return errors.As(target, &t) && t.Code == e.Code
}

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Sentinels for errors.Is.
var (
	ErrBadRequest         = &Error{Code: CodeBadRequest}
	ErrUnauthorized       = &Error{Code: CodeUnauthorized}
	ErrSignInRejected     = &Error{Code: CodeSignInRejected}
	ErrNonceRejected      = &Error{Code: CodeNonceRejected}
	ErrPolicy             = &Error{Code: CodePolicy}
	ErrUnsupportedVersion = &Error{Code: CodeUnsupportedVersion}
	ErrUnknownOp          = &Error{Code: CodeUnknownOp}
	ErrInternal           = &Error{Code: CodeInternal}
	ErrUnavailable        = &Error{Code: CodeUnavailable}
	ErrAuditLog           = &Error{Code: CodeAuditLog}
)

// CodeOf returns the code of a protocol error, or CodeInternal for any other error.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}
