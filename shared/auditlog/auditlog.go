// Package auditlog defines the entries of the audit log: the leaves of the
// Merkle tree whose right edge the enclave keeps and whose checkpoints it
// signs. One type, [Entry], serves the enclave that builds entries, the host
// that stores them and the auditor who reads them.
//
// # Encoding
//
// An entry is JSON with its fields in the fixed order of [Entry], no spaces,
// no HTML escaping, and every optional field left out when empty:
//
//	{"v":1,"time":1767225600,"kind":"oidc_jwt","outcome":"ok","wallet":"0x…","session_id":"…",
//	 "aud":"sts.amazonaws.com","exp":1767225900,"kid":"…","jti":"41",
//	 "jwt_sha256":"…","chain_id":1,"host_asserted_wallet":false,"host_asserted":false}
//
// [Entry.Marshal] writes exactly these bytes, and [Parse] accepts only bytes
// that Marshal would write (it decodes strictly, then re-encodes and compares),
// so an entry has one encoding and the leaf hash, tlog.RecordHash(bytes), names
// one entry.
//
// # Who says what
//
// An entry with HostAsserted false was built by the enclave from what it
// verified itself: the JWT it signed (JWTSHA256 is the SHA-256 of the compact
// JWT), for the wallet of a session whose token it checked (or, with
// HostAssertedWallet, for a wallet the host vouched for under the policy
// allow_host_asserted_wallet). Its JTI is its own [EntryID]: its index in
// decimal in the default log, "NAME/INDEX" in the log named NAME.
//
// An entry with HostAsserted true records what only the host saw: the outcome
// of an STS call (AccessKeyID, and in JTI the entry id of the JWT it used) or
// a refusal (Outcome, Detail). The enclave logs it as the host told it, with
// its own Time and HostAsserted forced true; the log proves the host said it
// at that point, not that it is true.
//
// # Log names
//
// One enclave image may run as several enclave instances, each with its own
// host, all of them holding the same checkpoint key. Each instance keeps its
// own log, named by its host in audit_resume (protocol.AuditResumeRequest.Log).
// The default log, named "", has the origin the enclave derives from its
// issuer ("broker.example.com/audit"); the log named N has the origin
// "broker.example.com/audit/N". Every log is signed by the same Ed25519 key;
// only the note key's name (its origin) differs, and with it the key hash.
//
// The manifest names the default log's verifier key. [LogVerifierKey] (by
// name) and [OriginVerifierKey] (by a checkpoint's origin) give the verifier
// key of any other log of the same enclave from it, and [VerifierKeyLog] says
// whether a verifier key is one of them: they are how anyone binds a named
// log's checkpoints to an attested manifest.
package auditlog

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/agentkeys/broker/shared/strictjson"
)

// Version is the entry format version this package writes and reads.
const Version = 1

// Kinds of entry.
const (
	KindOIDCJWT  = "oidc_jwt"  // a JWT the enclave signed
	KindAWSCreds = "aws_creds" // AWS credentials (host-asserted: the STS call's outcome)
)

// OutcomeOK is the outcome of everything that succeeded. Enclave-built
// entries always have it; host-asserted ones may name a refusal.
const OutcomeOK = "ok"

// Bounds on the text fields of an entry, in bytes.
const (
	MaxEntrySize   = 4 << 10 // the whole encoding
	MaxNameLen     = 64      // Kind, Outcome
	MaxAudienceLen = 256
	MaxIDLen       = 128 // SessionID, Kid, JTI, AccessKeyID
	MaxDetailLen   = 1024
)

// Entry is one leaf of the audit log, in encoding order.
type Entry struct {
	Version int    `json:"v"`
	Time    int64  `json:"time"` // unix seconds, the enclave's clock
	Kind    string `json:"kind"`
	Outcome string `json:"outcome"`
	Wallet  string `json:"wallet"` // lowercase 0x + 40 hex, or "unknown"
	// SessionID names the session the JWT was minted for ("" for a
	// host-asserted wallet).
	SessionID string `json:"session_id,omitempty"`
	Audience  string `json:"aud,omitempty"`
	ExpiresAt int64  `json:"exp,omitempty"` // the credential's expiry, unix seconds
	Kid       string `json:"kid,omitempty"`
	// JTI is the JWT's jti, an [EntryID]: for an enclave-built entry its own
	// (its log's name and its index), for a host-asserted aws_creds entry
	// that of the JWT STS was given (which may name another log).
	JTI string `json:"jti,omitempty"`
	// JWTSHA256 is the lowercase hex SHA-256 of the compact JWT.
	JWTSHA256          string `json:"jwt_sha256,omitempty"`
	ChainID            uint64 `json:"chain_id,omitempty"`
	HostAssertedWallet bool   `json:"host_asserted_wallet"`
	HostAsserted       bool   `json:"host_asserted"`
	AccessKeyID        string `json:"access_key_id,omitempty"`
	Detail             string `json:"detail,omitempty"`
}

// ErrInvalid is wrapped by every error of Validate and Parse.
var ErrInvalid = errors.New("invalid audit log entry")

// Validate reports whether e is an entry this package would write.
func (e Entry) Validate() error {
	if e.Version != Version {
		return fmt.Errorf("%w: version %d, want %d", ErrInvalid, e.Version, Version)
	}
	if e.Time < 0 {
		return fmt.Errorf("%w: negative time", ErrInvalid)
	}
	if e.ExpiresAt < 0 {
		return fmt.Errorf("%w: negative exp", ErrInvalid)
	}
	for _, f := range []struct {
		name, value string
		max         int
		snake       bool
	}{
		{"kind", e.Kind, MaxNameLen, true},
		{"outcome", e.Outcome, MaxNameLen, true},
		{"wallet", e.Wallet, 42, false},
		{"session_id", e.SessionID, MaxIDLen, false},
		{"aud", e.Audience, MaxAudienceLen, false},
		{"kid", e.Kid, MaxIDLen, false},
		{"jti", e.JTI, MaxIDLen, false},
		{"jwt_sha256", e.JWTSHA256, 64, false},
		{"access_key_id", e.AccessKeyID, MaxIDLen, false},
		{"detail", e.Detail, MaxDetailLen, false},
	} {
		if len(f.value) > f.max {
			return fmt.Errorf("%w: %s is longer than %d bytes", ErrInvalid, f.name, f.max)
		}
		if !utf8.ValidString(f.value) || bytes.IndexByte([]byte(f.value), 0) >= 0 {
			return fmt.Errorf("%w: %s is not UTF-8 text without NUL", ErrInvalid, f.name)
		}
		if f.snake && !isName(f.value) {
			return fmt.Errorf("%w: %s %q is not a snake_case name", ErrInvalid, f.name, f.value)
		}
	}
	if e.Wallet != "unknown" && !isWallet(e.Wallet) {
		return fmt.Errorf("%w: wallet is neither \"unknown\" nor lowercase 0x + 40 hex", ErrInvalid)
	}
	if e.JWTSHA256 != "" && !isLowerHex(e.JWTSHA256, 64) {
		return fmt.Errorf("%w: jwt_sha256 is not 64 lowercase hex digits", ErrInvalid)
	}
	if e.JTI != "" {
		if _, _, err := ParseEntryID(e.JTI); err != nil {
			return fmt.Errorf("%w: jti %q is not an entry id (INDEX or LOGNAME/INDEX)", ErrInvalid, e.JTI)
		}
	}
	return nil
}

// Marshal returns the entry's one encoding. It fails only for an invalid entry.
func (e Entry) Marshal() ([]byte, error) {
	if err := e.Validate(); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(e); err != nil {
		return nil, fmt.Errorf("failed to encode audit log entry: %w", err)
	}
	b := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	if len(b) > MaxEntrySize {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrInvalid, len(b), MaxEntrySize)
	}
	return b, nil
}

// Parse decodes an entry, accepting only the bytes Marshal writes.
func Parse(b []byte) (Entry, error) {
	if len(b) > MaxEntrySize {
		return Entry{}, fmt.Errorf("%w: %d bytes, more than %d", ErrInvalid, len(b), MaxEntrySize)
	}
	var e Entry
	if err := strictjson.Decode(b, &e, strictjson.Limits{MaxSize: MaxEntrySize, MaxDepth: 2}); err != nil {
		return Entry{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	again, err := e.Marshal()
	if err != nil {
		return Entry{}, err
	}
	if !bytes.Equal(again, b) {
		return Entry{}, fmt.Errorf("%w: not in canonical form", ErrInvalid)
	}
	return e, nil
}

// JWTHash returns the value for JWTSHA256: the lowercase hex SHA-256 of the
// compact JWT.
func JWTHash(jwt string) string {
	sum := sha256.Sum256([]byte(jwt))
	return hex.EncodeToString(sum[:])
}

func isName(s string) bool {
	if s == "" || s[0] < 'a' || s[0] > 'z' || s[len(s)-1] == '_' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case c == '_' && s[i-1] != '_':
		default:
			return false
		}
	}
	return true
}

func isWallet(s string) bool { return len(s) == 42 && s[:2] == "0x" && isLowerHex(s[2:], 40) }

func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
