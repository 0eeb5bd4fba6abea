package stsserver

import (
	"fmt"
	"net/http"
	"strings"
)

// stsError is an STS error answer: a code, a message and an HTTP status.
type stsError struct {
	Code    string
	Message string
	Status  int
}

func (e *stsError) Error() string { return e.Code + ": " + e.Message }

// statusFor is the HTTP status STS answers with for each error code. Codes not
// listed are Sender errors with status 400.
var statusFor = map[string]int{
	"AccessDenied":                                   http.StatusForbidden,
	"AccessDeniedException":                          http.StatusForbidden,
	"ExpiredToken":                                   http.StatusForbidden,
	"IDPRejectedClaim":                               http.StatusForbidden,
	"InvalidClientTokenId":                           http.StatusForbidden,
	"MissingAuthenticationToken":                     http.StatusForbidden,
	"OptInRequired":                                  http.StatusForbidden,
	"RegionDisabledException":                        http.StatusForbidden,
	"SignatureDoesNotMatch":                          http.StatusForbidden,
	"OutboundWebIdentityFederationDisabledException": http.StatusForbidden,

	"ExpiredTokenException":   http.StatusBadRequest,
	"IDPCommunicationError":   http.StatusBadRequest,
	"IncompleteSignature":     http.StatusBadRequest,
	"InvalidAction":           http.StatusBadRequest,
	"InvalidIdentityToken":    http.StatusBadRequest,
	"InvalidParameterValue":   http.StatusBadRequest,
	"MalformedPolicyDocument": http.StatusBadRequest,
	"MissingAction":           http.StatusBadRequest,
	"PackedPolicyTooLarge":    http.StatusBadRequest,
	"Throttling":              http.StatusBadRequest,
	"ValidationError":         http.StatusBadRequest,

	"RequestEntityTooLarge": http.StatusRequestEntityTooLarge,
	"InternalFailure":       http.StatusInternalServerError,
	"ServiceUnavailable":    http.StatusServiceUnavailable,
}

// StatusFor returns the HTTP status STS uses for an error code: 403 for
// AccessDenied and the authentication failures, 500/503 for InternalFailure and
// ServiceUnavailable, 400 for the rest.
func StatusFor(code string) int {
	if s, ok := statusFor[code]; ok {
		return s
	}
	return http.StatusBadRequest
}

func newError(code, format string, args ...any) *stsError {
	return &stsError{Code: code, Message: fmt.Sprintf(format, args...), Status: StatusFor(code)}
}

// The messages AWS is known to use, reproduced as AWS writes them.
const (
	msgNotAJWT           = "The ID Token provided is not a valid JWT. (You may see this error if you sent an Access Token)"
	msgNoProvider        = "No OpenIDConnect provider found in your account for %s"
	msgNoVerificationKey = "Couldn't retrieve verification key from your identity provider,  please reference AssumeRoleWithWebIdentity documentation for requirements"
	msgIncorrectAud      = "Incorrect token audience"
	msgTokenExpired      = "Token expired: current date/time %d must be before the expiration date/time%d"
	msgWebIdentityDeny   = "Not authorized to perform sts:AssumeRoleWithWebIdentity"
	msgAssumeRoleDeny    = "User: %s is not authorized to perform: sts:AssumeRole on resource: %s"
	msgMaxSession        = "The requested DurationSeconds exceeds the MaxSessionDuration set for this role."
	msgChainedSession    = "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining."
	msgInvalidToken      = "The security token included in the request is invalid."
	msgExpiredToken      = "The security token included in the request is expired"
	msgMissingAuth       = "Request is missing Authentication Token"
	msgSignatureMismatch = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
)

// validation collects parameter constraint violations and renders them the way
// AWS does: "1 validation error detected: Value 'x' at 'roleSessionName' failed
// to satisfy constraint: Member must …".
type validation []string

func (v *validation) add(value *string, member, constraint string) {
	shown := "null"
	if value != nil {
		shown = "'" + *value + "'"
	}
	*v = append(*v, fmt.Sprintf("Value %s at '%s' failed to satisfy constraint: Member must %s", shown, member, constraint))
}

func (v validation) err() *stsError {
	switch len(v) {
	case 0:
		return nil
	case 1:
		return newError("ValidationError", "1 validation error detected: %s", v[0])
	default:
		return newError("ValidationError", "%d validation errors detected: %s", len(v), strings.Join(v, "; "))
	}
}
