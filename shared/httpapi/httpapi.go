// Package httpapi defines the JSON bodies of the host's HTTP API: one Go type
// per request and response, used by the host (host/api) to write them and by
// the client (host/client) and the CLI to read them.
//
// The field names are those of the Rust broker this replaces, so existing
// clients keep working; testdata holds one golden encoding per type.
//
// # Routes
//
//	GET  /v1/session/nonce                     → [NonceResponse]
//	POST /v1/session         [SessionRequest]  → [SessionResponse]
//	POST /v1/session/revoke  (bearer)          → [RevokeResponse]
//	POST /v1/mint-oidc-jwt   [MintJWTRequest]  → [MintJWTResponse]
//	POST /v1/mint-aws-creds  [MintAWSCredsRequest] → [MintAWSCredsResponse]
//	GET  /.well-known/attestation?nonce=HEX    → [Attestation]
//	GET  /.well-known/agentkeys-manifest.json  → the key manifest (shared/manifest), as the enclave wrote it
//	GET  /v1/audit/…                           → the audit log (host/tiles): checkpoint, tiles, proofs
//	GET  /v1/audit/logs/                       → [AuditLogs], the logs of a shared store
//	GET  /v1/audit/logs/{name}/…               → the same for every log of a shared store ([AuditLogPath])
//
// Every error answer is an [Error]. Request bodies are decoded strictly
// (shared/strictjson): an unknown key, a key given twice or a key in another
// case is 400 bad_request. The bodies of the minting routes are optional.
//
// Times are unix seconds.
package httpapi

import "github.com/agentkeys/broker/shared/claims"

// Route paths.
const (
	PathDiscovery    = "/.well-known/openid-configuration"
	PathJWKS         = "/.well-known/jwks.json"
	PathNonce        = "/v1/session/nonce"
	PathSession      = "/v1/session"
	PathRevoke       = "/v1/session/revoke"
	PathMintJWT      = "/v1/mint-oidc-jwt"
	PathMintAWSCreds = "/v1/mint-aws-creds"
	PathAttestation  = "/.well-known/attestation"
	PathManifest     = "/.well-known/agentkeys-manifest.json"
	// PathAuditVerifierKey serves the note verifier key of the audit log
	// the host keeps (text): the manifest's checkpoint_verifier_key for the
	// default log, the same key under ORIGIN/NAME for a named log.
	PathAuditVerifierKey = "/v1/audit/verifier-key"
	// PathAuditCheckpoint serves the audit log's latest checkpoint, with
	// the witnesses' cosignatures (C2SP tlog-tiles).
	PathAuditCheckpoint = "/v1/audit/checkpoint"
)

// The audit log's routes (host/tiles): the host's own log is a C2SP
// tlog-tiles log at PathAudit (checkpoint, tile/…, proof/{index},
// verifier-key); with a store that several hosts share (PostgreSQL), every
// log in it is one at [AuditLogPath] of its name as well.
const (
	PathAudit     = "/v1/audit/"
	PathAuditLogs = "/v1/audit/logs/"
	// AuditDefaultLog stands for the default log (the log named "") in
	// PathAuditLogs paths; no log name can be it.
	AuditDefaultLog = "_default"
)

// AuditLogs lists the logs of a store that several hosts share (GET
// PathAuditLogs), in name order.
type AuditLogs struct {
	Logs []AuditLog `json:"logs"`
}

// AuditLog is one log of AuditLogs: its name ("" for the default log), the
// path of its tlog-tiles routes ([AuditLogPath]), and whether it is the log
// of the host that answered.
type AuditLog struct {
	Name string `json:"name"`
	Path string `json:"path"`
	Own  bool   `json:"own"`
}

// AuditLogPath is the base URL path of the log called name ("" for the
// default log) among a shared store's logs: PathAuditLogs + name + "/".
func AuditLogPath(name string) string {
	if name == "" {
		name = AuditDefaultLog
	}
	return PathAuditLogs + name + "/"
}

// AuditLogName is the log name that the path segment seg of an
// AuditLogPath stands for. It does not check that the name is valid.
func AuditLogName(seg string) string {
	if seg == AuditDefaultLog {
		return ""
	}
	return seg
}

// Error is every error answer: {"error": kind, "message": text}. Kind is one
// of a short list (such as "unauthorized" or "bad_request"); Message says what
// was wrong and what to do.
type Error struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

// NonceResponse is a single-use sign-in nonce for an EIP-4361 message.
type NonceResponse struct {
	Nonce     string `json:"nonce"`
	ExpiresAt int64  `json:"expires_at"`
}

// SessionRequest signs in: the EIP-4361 message text and its EIP-191
// personal_sign signature, "0x" and 130 hex digits (r||s||v).
type SessionRequest struct {
	Message   string `json:"message"`
	Signature string `json:"signature"`
}

// SessionResponse is a new session: the bearer token, the lowercase wallet it
// stands for, and when it expires.
type SessionResponse struct {
	Session    string `json:"session"`
	Wallet     string `json:"wallet"`
	Expiration int64  `json:"expiration"`
}

// RevokeResponse answers a revocation. Revoked is true when this call revoked
// the session, false when it had been revoked already.
type RevokeResponse struct {
	Revoked bool   `json:"revoked"`
	Wallet  string `json:"wallet"`
}

// MintJWTRequest asks for an OIDC JWT; empty fields leave the audience and the
// TTL to the enclave policy.
type MintJWTRequest struct {
	Audience   string `json:"audience,omitempty"`
	TTLSeconds int64  `json:"ttl_seconds,omitempty"`
}

// MintJWTResponse is a minted JWT, the wallet it names, and its exp.
//
// LogProof, a field the Rust broker did not have, is the proof that the JWT
// is in the audit log: a C2SP tlog-proof (shared/tlogproof) of the entry at
// the JWT's jti, whose leaf names the SHA-256 of the JWT.
type MintJWTResponse struct {
	JWT        string `json:"jwt"`
	Wallet     string `json:"wallet"`
	Expiration int64  `json:"expiration"`
	LogProof   string `json:"log_proof,omitempty"`
}

// MintAWSCredsRequest asks for AWS credentials; a zero DurationSeconds leaves
// the lifetime to the host's default. The lifetime is cut to what is left of
// the session.
type MintAWSCredsRequest struct {
	DurationSeconds int64 `json:"duration_seconds,omitempty"`
}

// MintAWSCredsResponse is temporary AWS credentials for the session's wallet.
type MintAWSCredsResponse struct {
	AccessKeyID     string `json:"access_key_id"`
	SecretAccessKey string `json:"secret_access_key"`
	SessionToken    string `json:"session_token"`
	Expiration      int64  `json:"expiration"`
	Wallet          string `json:"wallet"`
	// LogProof is the C2SP tlog-proof of the host-asserted aws_creds entry
	// naming the access key id (and, in web-identity mode, in its jti the
	// log index of the JWT STS was given).
	LogProof string `json:"log_proof,omitempty"`
}

// Attestation is a fresh attestation document and the key manifest it binds.
// Document and Manifest are base64 (standard, padded) in JSON, so their exact
// bytes survive; ManifestSHA256 is the hex SHA-256 of Manifest, the document's
// user_data. Nonce is the verifier's nonce as it sent it (hex), Mode the
// enclave's mode ("nitro" or "simulated").
type Attestation struct {
	Document       []byte `json:"document"`
	Manifest       []byte `json:"manifest"`
	ManifestSHA256 string `json:"manifest_sha256"`
	Nonce          string `json:"nonce"`
	Mode           string `json:"mode"`
}

// Discovery is the OpenID Provider metadata the issuer publishes at
// PathDiscovery: the enclave serves it on the issuer origin, the host on the
// API origin, both from [NewDiscovery].
type Discovery struct {
	Issuer                           string   `json:"issuer"`
	JWKSURI                          string   `json:"jwks_uri"`
	ResponseTypesSupported           []string `json:"response_types_supported"`
	SubjectTypesSupported            []string `json:"subject_types_supported"`
	IDTokenSigningAlgValuesSupported []string `json:"id_token_signing_alg_values_supported"`
	ScopesSupported                  []string `json:"scopes_supported"`
	ClaimsSupported                  []string `json:"claims_supported"`
}

// NewDiscovery is the discovery document of issuer: its JWKS at PathJWKS,
// ES256 ID tokens, and the claims a minted JWT carries (shared/claims).
func NewDiscovery(issuer string) Discovery {
	return Discovery{
		Issuer:                           issuer,
		JWKSURI:                          issuer + PathJWKS,
		ResponseTypesSupported:           []string{"id_token"},
		SubjectTypesSupported:            []string{"public"},
		IDTokenSigningAlgValuesSupported: []string{"ES256"},
		ScopesSupported:                  []string{"openid"},
		ClaimsSupported:                  []string{"iss", "sub", "aud", "iat", "nbf", "exp", "jti", claims.Wallet, claims.AWSTags},
	}
}
