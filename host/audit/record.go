package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/agentkeys/broker/shared/protocol"
)

// Kinds of audited operation. Kind is open-ended (any snake_case name is
// accepted), but the host uses these names and no others for these operations.
const (
	KindOIDCJWT       = "oidc_jwt"       // POST /v1/mint-oidc-jwt
	KindAWSCreds      = "aws_creds"      // POST /v1/mint-aws-creds
	KindSession       = "session"        // POST /v1/session (sign-in)
	KindSessionRevoke = "session_revoke" // POST /v1/session/revoke
)

// Outcomes. OutcomeOK is the only success; every other outcome is a refusal
// kind. Outcome is open-ended (any snake_case name is accepted, so an enclave
// error code such as "sign_in_rejected" can be recorded as is).
const (
	OutcomeOK            = "ok"
	OutcomeUnauthorized  = "unauthorized"
	OutcomeRevoked       = "revoked"
	OutcomeBadRequest    = "bad_request"
	OutcomePolicyRefused = "policy_refused"
	OutcomeEnclaveError  = "enclave_error"
	OutcomeSTSError      = "sts_error"
	OutcomeInternal      = "internal"
	OutcomeRateLimited   = "rate_limited"
)

// WalletUnknown is the Wallet of a record made before any wallet was known,
// for example a request with a missing or forged bearer.
const WalletUnknown = "unknown"

// Bounds on the text fields of a Record. Append cuts Audience, Kid, JTI and
// Detail to these lengths (in bytes, at a UTF-8 boundary); Validate rejects a
// record that exceeds them.
const (
	MaxDetailLen   = 1024
	MaxAudienceLen = 1024
	MaxKidLen      = 256
	MaxJTILen      = 256
	MaxClientLen   = 256
	maxNameLen     = 64 // Kind and Outcome
)

// ErrInvalidRecord is wrapped by every error Validate returns. An invalid
// record is a bug in the caller, never something a client can cause: the
// fields a client controls (Audience, Detail) are cleaned by Append rather
// than refused.
var ErrInvalidRecord = errors.New("invalid audit record")

// Record is one audit entry: a credential minted, a session created or
// revoked, or an attempt at one of these that was refused.
type Record struct {
	// Seq is assigned by the store: 1 for the first record, then strictly
	// increasing, never reused. It must be zero when passed to Append.
	Seq int64
	// Time is when the operation happened. Append stores it in UTC, truncated
	// to the microsecond (the precision PostgreSQL keeps); a zero Time is
	// replaced by the time of the Append call.
	Time time.Time
	// Kind is what was attempted: one of the Kind constants.
	Kind string
	// Outcome is OutcomeOK or a snake_case refusal kind.
	Outcome string
	// Wallet is the wallet the operation was for, as lowercase "0x" + 40 hex
	// digits, or WalletUnknown.
	Wallet string
	// BearerSHA256 is HashBearer of the bearer token the request carried, or
	// "" when there was none. Never the bearer itself: Validate refuses
	// anything that is not a lowercase hex SHA-256 digest.
	BearerSHA256 string
	// Audience is the audience asked for or granted ("" when not applicable).
	Audience string
	// TTLSeconds is the lifetime asked for or granted, in seconds. It is
	// recorded as given, so a refused request may carry a negative value.
	TTLSeconds int64
	// Kid is the key id that signed the credential ("" when none was signed).
	Kid string
	// JTI is the JWT id of a minted JWT ("" when none was minted).
	JTI string
	// Detail is short human text: an error message, an STS error code, an
	// access key id. Never a secret. Append cuts it to MaxDetailLen bytes.
	Detail string
	// HostAssertedWallet reports that the wallet was asserted by the host's
	// compatibility backend (policy allow_host_asserted_wallet) and not
	// proven to the enclave by a session token.
	HostAssertedWallet bool
	// Client is the address of the client that made the request, as the
	// host determined it (ratelimit.ClientKey), or "" when unknown. Append
	// cuts it to MaxClientLen bytes.
	Client string
	// Count is how many attempts the record stands for: 1 for every record
	// except an aggregate of refusals (see Store.Count), which stands for
	// Count refusals of one client. Append turns 0 into 1.
	Count int64
	// Batch, when set, is the enclave's audit log batch that holds this
	// record's entry, as the enclave returned it; Logged.Index must then
	// name the entry. Append stores the batch (once, in order: see Log) in
	// the same transaction as the record, and only then reports the record
	// durable. It is not kept in the record: List returns it nil.
	Batch *protocol.AuditBatch
	// Logged is where the record's entry is in the Merkle log (nil for a
	// record without one). Append fills in LeafHash from Batch; List
	// returns it from the tree_index and leaf_hash columns.
	Logged *Logged
}

// HashBearer returns the value for Record.BearerSHA256: the lowercase hex
// SHA-256 of the bearer token (the token alone, without the "Bearer " scheme).
// It returns "" for an empty token.
func HashBearer(token string) string {
	if token == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// Validate reports whether r is a record the store accepts. Seq is not
// checked (it is zero before Append and set after).
//
// The check that matters most for security is on BearerSHA256: it must be ""
// or exactly 64 lowercase hex digits, so a raw bearer token, a JWT or an
// Authorization header passed there by mistake is refused (and the error does
// not repeat the value).
func (r Record) Validate() error {
	if r.Time.IsZero() {
		return fmt.Errorf("%w: time is zero", ErrInvalidRecord)
	}
	if y := r.Time.UTC().Year(); y < 1970 || y > 9999 {
		return fmt.Errorf("%w: time %s is outside years 1970-9999", ErrInvalidRecord, r.Time.UTC().Format(time.RFC3339))
	}
	if r.Count < 1 {
		return fmt.Errorf("%w: count is %d, must be at least 1", ErrInvalidRecord, r.Count)
	}
	if !isSnakeCase(r.Kind) {
		return fmt.Errorf("%w: kind %.64q is not a snake_case name", ErrInvalidRecord, r.Kind)
	}
	if !isSnakeCase(r.Outcome) {
		return fmt.Errorf("%w: outcome %.64q is not a snake_case name", ErrInvalidRecord, r.Outcome)
	}
	if r.Wallet != WalletUnknown && !isWallet(r.Wallet) {
		return fmt.Errorf("%w: wallet %.64q is neither %q nor lowercase 0x followed by 40 hex digits", ErrInvalidRecord, r.Wallet, WalletUnknown)
	}
	if r.BearerSHA256 != "" && !isLowerHex(r.BearerSHA256, sha256.Size*2) {
		// Do not quote the value: it may be the bearer itself.
		return fmt.Errorf("%w: bearer_sha256 is not 64 lowercase hex digits; store HashBearer(token), never the token", ErrInvalidRecord)
	}
	for _, f := range []struct {
		name, value string
		max         int
	}{
		{"audience", r.Audience, MaxAudienceLen},
		{"kid", r.Kid, MaxKidLen},
		{"jti", r.JTI, MaxJTILen},
		{"detail", r.Detail, MaxDetailLen},
		{"client", r.Client, MaxClientLen},
	} {
		if len(f.value) > f.max {
			return fmt.Errorf("%w: %s is %d bytes, longer than %d", ErrInvalidRecord, f.name, len(f.value), f.max)
		}
		if !utf8.ValidString(f.value) || strings.IndexByte(f.value, 0) >= 0 {
			return fmt.Errorf("%w: %s is not valid UTF-8 text without NUL bytes", ErrInvalidRecord, f.name)
		}
	}
	return nil
}

// prepare is what every Store does to a record before storing it: it refuses
// a preset Seq, fills in and normalizes Time, cleans the free-text fields and
// validates the result.
func prepare(r Record, now time.Time) (Record, error) {
	if r.Seq != 0 {
		return Record{}, fmt.Errorf("%w: seq is %d, must be zero (the store assigns it)", ErrInvalidRecord, r.Seq)
	}
	if r.Time.IsZero() {
		r.Time = now
	}
	r.Time = r.Time.UTC().Truncate(time.Microsecond)
	r.Audience = cleanText(r.Audience, MaxAudienceLen)
	r.Kid = cleanText(r.Kid, MaxKidLen)
	r.JTI = cleanText(r.JTI, MaxJTILen)
	r.Detail = cleanText(r.Detail, MaxDetailLen)
	r.Client = cleanText(r.Client, MaxClientLen)
	if r.Count == 0 {
		r.Count = 1
	}
	switch {
	case r.Batch != nil:
		l, err := logged(r)
		if err != nil {
			return Record{}, err
		}
		r.Logged = &l
	case r.Logged != nil:
		return Record{}, fmt.Errorf("%w: Logged is set without the Batch that holds the entry", ErrInvalidRecord)
	}
	if err := r.Validate(); err != nil {
		return Record{}, err
	}
	return r, nil
}

// cleanText makes s valid UTF-8 without NUL bytes (PostgreSQL text cannot
// hold them) and cuts it to at most max bytes at a rune boundary.
func cleanText(s string, max int) string {
	if len(s) <= max && utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 {
		return s
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.ReplaceAll(s, "\x00", "\uFFFD")
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	return s
}

// isSnakeCase reports whether s is a lowercase ASCII name made of words
// joined by single underscores: "ok", "sts_error", "oidc_jwt".
func isSnakeCase(s string) bool {
	if s == "" || len(s) > maxNameLen || s[0] < 'a' || s[0] > 'z' || s[len(s)-1] == '_' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case c == '_':
			if s[i-1] == '_' {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// isWallet reports whether s is "0x" followed by 40 lowercase hex digits.
func isWallet(s string) bool {
	return len(s) == 42 && s[:2] == "0x" && isLowerHex(s[2:], 40)
}

func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
