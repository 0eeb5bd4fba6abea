package claims

import "strings"

// Claim names and values of a minted JWT. A struct tag cannot name a
// constant, so the tags of [OIDC] repeat these strings; the golden test keeps
// them in step.
const (
	// SubjectPrefix prefixes the wallet in sub: "agentkeys:agent:0x…".
	SubjectPrefix = "agentkeys:agent:"
	// Wallet is the claim holding the wallet, lowercase "0x" + 40 hex.
	Wallet = "agentkeys_user_wallet"
	// HostAssertedWallet is the claim, present and true only then, marking a
	// JWT minted for a wallet the host vouched for (policy
	// allow_host_asserted_wallet) rather than one that signed in.
	HostAssertedWallet = "agentkeys_host_asserted_wallet"
	// AWSTags is the claim from which AWS STS takes session tags.
	AWSTags = "https://aws.amazon.com/tags"
	// WalletTag is the session tag key that carries the wallet, transitive
	// so that it survives role chaining.
	WalletTag = "agentkeys_user_wallet"
	// LogIndexTag is the session tag key that carries the JWT's audit log
	// entry id (its jti, auditlog.EntryID: the index, or LOGNAME/INDEX in a
	// named log), transitive as well: each STS session CloudTrail records
	// names the log entry that authorised it.
	LogIndexTag = "agentkeys_log_index"
)

// OIDC is exactly the claim set of a minted JWT, in the order it is encoded.
// aud is a single string, as AWS and the Rust broker expect. Times are unix
// seconds.
type OIDC struct {
	Issuer             string `json:"iss"`
	Subject            string `json:"sub"` // SubjectPrefix + Wallet
	Audience           string `json:"aud"`
	IssuedAt           int64  `json:"iat"`
	NotBefore          int64  `json:"nbf"`
	ExpiresAt          int64  `json:"exp"`
	ID                 string `json:"jti"` // the audit log entry id (auditlog.EntryID)
	Wallet             string `json:"agentkeys_user_wallet"`
	Tags               Tags   `json:"https://aws.amazon.com/tags"`
	HostAssertedWallet bool   `json:"agentkeys_host_asserted_wallet,omitempty"`
}

// Tags is the value of the AWSTags claim, in the shape AWS STS reads.
type Tags struct {
	PrincipalTags     map[string][]string `json:"principal_tags"`
	TransitiveTagKeys []string            `json:"transitive_tag_keys"`
}

// MintTags returns the tags of a JWT minted for wallet whose audit log entry
// id (and jti, auditlog.EntryID) is logIndex: WalletTag = wallet and
// LogIndexTag = logIndex, both transitive.
func MintTags(wallet, logIndex string) Tags {
	return Tags{
		PrincipalTags:     map[string][]string{WalletTag: {wallet}, LogIndexTag: {logIndex}},
		TransitiveTagKeys: []string{WalletTag, LogIndexTag},
	}
}

// IsCompactJWS reports whether s has the shape of a compact JWS: three
// non-empty base64url segments and nothing else (no padding, no whitespace, no
// control characters). It decodes nothing; it says only what s looks like.
func IsCompactJWS(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return false
	}
	for _, p := range parts {
		if p == "" {
			return false
		}
		for i := 0; i < len(p); i++ {
			c := p[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}
