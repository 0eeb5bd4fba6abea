package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/agentkeys/broker/shared/httpapi"
	"github.com/agentkeys/broker/shared/protocol"
)

// Error kinds in {"error": kind, "message": …} bodies.
const (
	KindUnauthorized       = "unauthorized"        // 401
	KindBadRequest         = "bad_request"         // 400
	KindNotFound           = "not_found"           // 404
	KindMethodNotAllowed   = "method_not_allowed"  // 405
	KindTooLarge           = "payload_too_large"   // 413
	KindRateLimited        = "rate_limited"        // 429
	KindAuditError         = "audit_error"         // 500
	KindInternal           = "internal"            // 500
	KindUpstream           = "upstream_error"      // 502
	KindEnclaveUnavailable = "enclave_unavailable" // 503
	KindUnavailable        = "unavailable"         // 503
)

// httpError is an error with its HTTP status and kind.
type httpError struct {
	status  int
	kind    string
	message string
	outcome string // the audit outcome; derived from kind when empty
	// retryAfter, if positive, is sent as Retry-After (seconds).
	retryAfter int64
}

// auditOutcome is the outcome recorded for a refusal.
func (e *httpError) auditOutcome() string {
	if e.outcome != "" {
		return e.outcome
	}
	switch e.kind {
	case KindUnauthorized:
		return "unauthorized"
	case KindBadRequest, KindTooLarge:
		return "bad_request"
	case KindEnclaveUnavailable, KindUpstream:
		return "enclave_error"
	}
	return "internal"
}

func (e *httpError) Error() string { return e.kind + ": " + e.message }

func errorf(status int, kind, message string) *httpError {
	return &httpError{status: status, kind: kind, message: message}
}

// fromEnclave maps an enclave error to an HTTP error.
func fromEnclave(err error) *httpError {
	var pe *protocol.Error
	if errors.Is(err, context.DeadlineExceeded) {
		return errorf(http.StatusServiceUnavailable, KindEnclaveUnavailable, "the enclave did not answer in time; try again shortly")
	}
	if !errors.As(err, &pe) {
		return errorf(http.StatusBadGateway, KindUpstream, "enclave call failed")
	}
	switch pe.Code {
	case protocol.CodeUnauthorized, protocol.CodeSignInRejected, protocol.CodeNonceRejected:
		return errorf(http.StatusUnauthorized, KindUnauthorized, pe.Message)
	case protocol.CodeBadRequest:
		return errorf(http.StatusBadRequest, KindBadRequest, pe.Message)
	case protocol.CodePolicy:
		e := errorf(http.StatusBadRequest, KindBadRequest, pe.Message)
		e.outcome = "policy_refused"
		return e
	case protocol.CodeUnavailable:
		return errorf(http.StatusServiceUnavailable, KindEnclaveUnavailable, "the enclave is unreachable; try again shortly")
	case protocol.CodeAuditLog:
		e := errorf(http.StatusServiceUnavailable, KindAuditError, "the audit log cannot take entries now, so nothing was issued: "+pe.Message)
		e.outcome = KindAuditError
		return e
	case protocol.CodeInternal:
		return errorf(http.StatusInternalServerError, KindInternal, "the enclave failed; see its log")
	}
	return errorf(http.StatusBadGateway, KindUpstream, "enclave: "+string(pe.Code))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, e *httpError) {
	if sw, ok := w.(*statusWriter); ok {
		sw.kind = e.kind
	}
	if e.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt(e.retryAfter, 10))
	}
	if e.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="agentkeys"`)
	}
	writeJSON(w, e.status, httpapi.Error{Error: e.kind, Message: e.message})
}
