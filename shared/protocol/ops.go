package protocol

import (
	"fmt"
	"log/slog"

	"github.com/agentkeys/broker/shared/jwk"
	"github.com/agentkeys/broker/shared/policy"
)

// Op names an operation.
type Op string

// The operations the enclave serves.
const (
	OpInfo          Op = "info"
	OpAttest        Op = "attest"
	OpSessionNonce  Op = "session_nonce"
	OpCreateSession Op = "create_session"
	OpVerifySession Op = "verify_session"
	OpMintOIDC      Op = "mint_oidc"
	OpAuditAppend   Op = "audit_append"
	OpAuditResume   Op = "audit_resume"

	// OpUnseal and OpProvideCredentials exist in nitro mode (and simulated
	// mode with a KMS endpoint): the host hands the enclave its sealed seed and
	// the AWS credentials it calls KMS with. Until the seed is unsealed, every
	// other op but info answers unavailable.
	OpUnseal             Op = "unseal"
	OpProvideCredentials Op = "provide_credentials"

	// OpOriginState and OpOriginInstall exist when the enclave serves the
	// issuer origin (issuer_origin enclave): the host reads the public
	// certificate chain the enclave holds, to store it, and hands a stored
	// chain back when it connects, so that a restarted enclave serves at once
	// without asking the CA again.
	OpOriginState   Op = "origin_state"
	OpOriginInstall Op = "origin_install"
)

// SeedNeedsUnseal is InfoResponse.Seed while the enclave waits for the host to
// call unseal. Once the keys are derived the field is empty.
const SeedNeedsUnseal = "needs_unseal"

// MaxCiphertextBlob bounds a sealed seed: KMS ciphertext blobs are at most
// 6144 bytes.
const MaxCiphertextBlob = 6144

// Bounds on request fields, enforced by the enclave.
const (
	MinNonceSize     = 8  // attestation nonce: a verifier's fresh challenge
	MaxNonceSize     = 64 // attestation nonce (the NSM allows 512)
	MaxSessionToken  = 4 << 10
	MaxSignInMessage = 8 << 10
	MaxAudience      = 256
	// MaxResumeBytes bounds what the batches of one audit_resume answer
	// carry (entries, hashes, checkpoints); the host asks again from where it
	// got to.
	MaxResumeBytes = 128 << 10
	// MaxOriginChain and MaxOriginCert bound a certificate chain handed to
	// origin_install: certificates, and DER bytes per certificate.
	MaxOriginChain = 8
	MaxOriginCert  = 16 << 10
)

// InfoRequest asks for the enclave's public description. It has no fields.
type InfoRequest struct{}

// InfoResponse describes the enclave: everything in it is public.
type InfoResponse struct {
	ProtocolVersion uint   `cbor:"protocol_version" json:"protocol_version"`
	Mode            string `cbor:"mode" json:"mode"` // "nitro" or "simulated"
	// Seed is SeedNeedsUnseal while the enclave waits for its sealed seed;
	// then the fields from IssuerKeys to Manifest are empty. Empty once the
	// keys are derived.
	Seed         string        `cbor:"seed,omitempty" json:"seed,omitempty"`
	Policy       policy.Policy `cbor:"policy" json:"policy"`
	PolicyDigest string        `cbor:"policy_digest" json:"policy_digest"`
	// IssuerKeys are the JWKs to publish, in policy order; SigningKid names the one that signs.
	IssuerKeys []jwk.Key `cbor:"issuer_keys" json:"issuer_keys"`
	SigningKid string    `cbor:"signing_kid" json:"signing_kid"`
	// CheckpointVerifierKey is the audit checkpoint key as a C2SP signed-note
	// verifier key ("name+hash+base64") of the log the enclave keeps: the
	// manifest's (the default log's) until an audit_resume chose a named log,
	// then that log's (the same key under the name of its origin).
	CheckpointVerifierKey string `cbor:"checkpoint_verifier_key" json:"checkpoint_verifier_key"`
	// PCRs are the measurement registers the enclave's attestation documents carry.
	PCRs map[int][]byte `cbor:"pcrs" json:"pcrs"`
	// Manifest is the key manifest (shared/manifest) exactly as every attestation
	// document binds it: its SHA-256 is the documents' user_data. The host serves
	// these bytes unchanged.
	Manifest []byte `cbor:"manifest" json:"manifest"`
	// ClockSource is the kernel clock source the enclave's time comes from
	// (in a Nitro Enclave normally "kvm-clock"), or "unknown".
	ClockSource string `cbor:"clock_source" json:"clock_source"`
	// Time is the enclave's unix time in milliseconds when it answered. The
	// host compares it with its own clock; the enclave never takes time from
	// the host.
	Time int64 `cbor:"time_ms" json:"time_ms"`
}

// AttestRequest asks for a fresh attestation document.
type AttestRequest struct {
	Nonce []byte `cbor:"nonce" json:"nonce"`
}

// AttestResponse carries the document and the manifest it binds: the document's
// user_data is the SHA-256 of Manifest (shared/manifest), the same bytes Info
// reports. An auditor hashes Manifest, compares it with user_data, then reads it.
type AttestResponse struct {
	Document []byte `cbor:"document" json:"document"`
	Manifest []byte `cbor:"manifest" json:"manifest"`
}

// SessionNonceRequest asks for a single-use sign-in nonce. It has no fields.
type SessionNonceRequest struct{}

// SessionNonceResponse carries a nonce for an EIP-4361 message.
type SessionNonceResponse struct {
	Nonce     string `cbor:"nonce" json:"nonce"`
	ExpiresAt int64  `cbor:"expires_at" json:"expires_at"` // unix seconds
}

// CreateSessionRequest presents a signed EIP-4361 message.
type CreateSessionRequest struct {
	Message   string `cbor:"message" json:"message"`
	Signature []byte `cbor:"signature" json:"signature"` // 65 bytes r||s||v
}

// Session describes a verified session.
type Session struct {
	Wallet    string `cbor:"wallet" json:"wallet"`         // lowercase 0x + 40 hex
	SessionID string `cbor:"session_id" json:"session_id"` // random, names the session for revocation
	ExpiresAt int64  `cbor:"expires_at" json:"expires_at"` // unix seconds
	// ChainID is the EIP-155 chain id the sign-in message named.
	ChainID uint64 `cbor:"chain_id,omitempty" json:"chain_id,omitempty"`
}

// CreateSessionResponse carries the session token and what it stands for.
type CreateSessionResponse struct {
	Token   string  `cbor:"token" json:"token"`
	Session Session `cbor:"session" json:"session"`
}

// VerifySessionRequest asks the enclave to check a session token.
type VerifySessionRequest struct {
	Token string `cbor:"token" json:"token"`
}

// VerifySessionResponse is the verified session.
type VerifySessionResponse struct {
	Session Session `cbor:"session" json:"session"`
}

// MintOIDCRequest asks for an OIDC JWT for the holder of a session token.
//
// HostAssertedWallet replaces the token only when the policy allows it
// (allow_host_asserted_wallet): the host vouches for the wallet through an
// external session backend, and the JWT and audit record say so.
type MintOIDCRequest struct {
	Token              string `cbor:"token,omitempty" json:"token,omitempty"`
	HostAssertedWallet string `cbor:"host_asserted_wallet,omitempty" json:"host_asserted_wallet,omitempty"`
	Audience           string `cbor:"audience,omitempty" json:"audience,omitempty"`       // "" = the policy default
	TTLSeconds         int64  `cbor:"ttl_seconds,omitempty" json:"ttl_seconds,omitempty"` // 0 = the policy default
	// LogSize is how many audit log entries the host's store holds durably:
	// the host's acknowledgement (see AuditAppendRequest.LogSize).
	LogSize int64 `cbor:"log_size,omitempty" json:"log_size,omitempty"`
}

// MintOIDCResponse is a signed JWT and what it says.
type MintOIDCResponse struct {
	JWT                string `cbor:"jwt" json:"jwt"`
	Wallet             string `cbor:"wallet" json:"wallet"`
	SessionID          string `cbor:"session_id,omitempty" json:"session_id,omitempty"`
	Kid                string `cbor:"kid" json:"kid"`
	JTI                string `cbor:"jti" json:"jti"`
	Audience           string `cbor:"audience" json:"audience"`
	IssuedAt           int64  `cbor:"issued_at" json:"issued_at"`
	ExpiresAt          int64  `cbor:"expires_at" json:"expires_at"`
	HostAssertedWallet bool   `cbor:"host_asserted_wallet,omitempty" json:"host_asserted_wallet,omitempty"`
	// SessionExpiresAt is when the session behind the JWT ends (unix seconds; 0
	// for a host-asserted wallet): ExpiresAt never lies past it, and neither may
	// AWS credentials obtained with the JWT.
	SessionExpiresAt int64 `cbor:"session_expires_at,omitempty" json:"session_expires_at,omitempty"`
	// ChainID is the chain id of the sign-in behind the session, for the audit.
	ChainID uint64 `cbor:"chain_id,omitempty" json:"chain_id,omitempty"`
	// Log is where the JWT's audit log entry landed: the JWT's jti is
	// Log.Index in decimal.
	Log AuditLogged `cbor:"log" json:"log"`
}

// AuditBatch is one batch of the enclave's audit log: entries
// [Start, Start+len(Entries)), the stored hashes they add (tlog.StoredHashes
// of each, in order: stored-hash indexes tlog.StoredHashIndex(0, Start) up to
// tlog.StoredHashIndex(0, Start+len(Entries))), and the checkpoint the
// enclave signed over the tree they end. The host stores each batch once, in
// order, before it releases anything the batch records.
type AuditBatch struct {
	Start      int64    `cbor:"start" json:"start"`
	Entries    [][]byte `cbor:"entries" json:"entries"`       // shared/auditlog encodings
	Hashes     []byte   `cbor:"hashes" json:"hashes"`         // 32 bytes per stored hash
	Checkpoint []byte   `cbor:"checkpoint" json:"checkpoint"` // C2SP tlog-checkpoint signed note
}

// AuditLogged says where an entry landed: its index, its inclusion proof
// under the batch's checkpoint (RFC 6962, 32 bytes per hash, leaf's sibling
// first), and the whole batch, for the host to store.
type AuditLogged struct {
	Index int64      `cbor:"index" json:"index"`
	Proof []byte     `cbor:"proof" json:"proof"`
	Batch AuditBatch `cbor:"batch" json:"batch"`
}

// AuditHostEntry is what the host asserts for the log: the outcome of an STS
// call, or a refusal. The enclave logs it with its own time and
// host_asserted true (shared/auditlog.Entry names the fields).
type AuditHostEntry struct {
	Kind               string `cbor:"kind" json:"kind"`
	Outcome            string `cbor:"outcome" json:"outcome"`
	Wallet             string `cbor:"wallet" json:"wallet"`
	SessionID          string `cbor:"session_id,omitempty" json:"session_id,omitempty"`
	Audience           string `cbor:"audience,omitempty" json:"audience,omitempty"`
	ExpiresAt          int64  `cbor:"expires_at,omitempty" json:"expires_at,omitempty"`
	Kid                string `cbor:"kid,omitempty" json:"kid,omitempty"`
	JTI                string `cbor:"jti,omitempty" json:"jti,omitempty"`
	HostAssertedWallet bool   `cbor:"host_asserted_wallet,omitempty" json:"host_asserted_wallet,omitempty"`
	AccessKeyID        string `cbor:"access_key_id,omitempty" json:"access_key_id,omitempty"`
	Detail             string `cbor:"detail,omitempty" json:"detail,omitempty"`
}

// AuditAppendRequest asks the enclave to log a host-asserted entry.
//
// LogSize is how many entries the host's store holds durably. The enclave
// keeps every batch past the largest LogSize it was told (to hand back at
// audit_resume) and refuses new entries (audit_log) once too many are
// unacknowledged, so the log never runs far ahead of the store.
type AuditAppendRequest struct {
	Entry   AuditHostEntry `cbor:"entry" json:"entry"`
	LogSize int64          `cbor:"log_size,omitempty" json:"log_size,omitempty"`
}

// AuditAppendResponse is where the entry landed.
type AuditAppendResponse = AuditLogged

// AuditResumeRequest gives the enclave the host's log: its latest checkpoint
// (empty for an empty store) and the stored hashes of the tree's right edge
// (auditlog.RightEdge of the checkpoint's size, in that order, 32 bytes
// each). A freshly started enclave checks the checkpoint's signature with its
// own key and that the hashes give its root, then continues the log from
// there; until then it refuses every mint (audit_log). An enclave already
// running answers with the batches the host lacks.
//
// Log names the log the host keeps for this enclave (auditlog.CheckLogName):
// "" is the default log, whose origin is the issuer's host and path +
// "/audit"; a log named N has that origin + "/N". The first audit_resume that
// succeeds chooses the log for the enclave's boot: its checkpoints' origin and
// the name of their key. An audit_resume naming another log is refused.
type AuditResumeRequest struct {
	Checkpoint []byte `cbor:"checkpoint,omitempty" json:"checkpoint,omitempty"`
	Hashes     []byte `cbor:"hashes,omitempty" json:"hashes,omitempty"`
	Log        string `cbor:"log,omitempty" json:"log,omitempty"`
}

// AuditResumeResponse is the enclave's log size, and the batches past the
// host's checkpoint that the host must store (at most MaxResumeBytes, and 256
// batches; More says to ask again once they are stored).
type AuditResumeResponse struct {
	Size    int64        `cbor:"size" json:"size"`
	Batches []AuditBatch `cbor:"batches,omitempty" json:"batches,omitempty"`
	More    bool         `cbor:"more,omitempty" json:"more,omitempty"`
}

// AWSCredentials are short-lived AWS credentials the host lends the enclave
// for its KMS calls. The enclave never logs or stores them; their String and
// LogValue show only the access key id.
type AWSCredentials struct {
	AccessKeyID     string `cbor:"access_key_id" json:"access_key_id"`
	SecretAccessKey string `cbor:"secret_access_key" json:"-"`
	SessionToken    string `cbor:"session_token,omitempty" json:"-"`
	Expiration      int64  `cbor:"expiration,omitempty" json:"expiration,omitempty"` // unix seconds; 0 = does not expire
}

// String shows the access key id only.
func (c AWSCredentials) String() string {
	return fmt.Sprintf("AWSCredentials{access_key_id: %s, expiration: %d, secret: redacted}", c.AccessKeyID, c.Expiration)
}

// GoString shows the access key id only, for %#v.
func (c AWSCredentials) GoString() string { return c.String() }

// LogValue shows the access key id only, for log/slog.
func (c AWSCredentials) LogValue() slog.Value {
	return slog.GroupValue(slog.String("access_key_id", c.AccessKeyID), slog.Int64("expiration", c.Expiration))
}

// ProvideCredentialsRequest replaces the credentials the enclave calls KMS
// with. The host sends new ones before the old ones expire.
type ProvideCredentialsRequest struct {
	Credentials AWSCredentials `cbor:"credentials" json:"credentials"`
}

// ProvideCredentialsResponse has no fields.
type ProvideCredentialsResponse struct{}

// UnsealRequest opens the enclave's seed. With CiphertextBlob the enclave
// calls KMS Decrypt with a Recipient (its attestation document) and derives its
// keys. Without one (first start) it calls GenerateDataKey with a Recipient,
// and returns the new blob *without* using it: the host stores the blob, then
// calls unseal again with it, so no key is ever used whose seed is not safely
// stored and proven to decrypt.
type UnsealRequest struct {
	CiphertextBlob []byte         `cbor:"ciphertext_blob,omitempty" json:"ciphertext_blob,omitempty"`
	Credentials    AWSCredentials `cbor:"credentials" json:"credentials"`
}

// UnsealResponse says what happened. Created: a new seed was generated and
// CiphertextBlob is its sealed form, to store (0600) and send back. Otherwise
// the seed is open and the enclave serves every op.
type UnsealResponse struct {
	Created        bool   `cbor:"created" json:"created"`
	CiphertextBlob []byte `cbor:"ciphertext_blob,omitempty" json:"ciphertext_blob,omitempty"`
	// KeyID is the KMS key the enclave is configured with (its measured
	// command line), which sealed the blob.
	KeyID string `cbor:"key_id" json:"key_id"`
}

// OriginStateRequest asks for the issuer origin's TLS state. It has no fields.
type OriginStateRequest struct{}

// OriginStateResponse is the issuer origin's TLS state: everything in it is
// public. The host stores Chain and hands it back with origin_install.
type OriginStateResponse struct {
	// Chain is the certificate chain the enclave serves (DER, leaf first);
	// empty until it holds one.
	Chain [][]byte `cbor:"chain" json:"chain"`
	// NotAfter is the leaf's expiry (unix seconds; 0 without a chain).
	NotAfter int64 `cbor:"not_after" json:"not_after"`
	// TLSSPKISHA256 is the hex SHA-256 of the origin key's SubjectPublicKeyInfo,
	// as in the manifest's issuer_origin_tls_spki_sha256.
	TLSSPKISHA256 string `cbor:"tls_spki_sha256" json:"tls_spki_sha256"`
	// ACMEAccountURI is the account the CA assigned to the enclave's account
	// key: what a CAA record's accounturi names. Empty until registered.
	ACMEAccountURI string `cbor:"acme_account_uri" json:"acme_account_uri"`
	// ACMEAccountKeyThumbprint is the account key's RFC 7638 thumbprint, as
	// in the manifest.
	ACMEAccountKeyThumbprint string `cbor:"acme_account_key_thumbprint" json:"acme_account_key_thumbprint"`
	// ACMEError is the last ACME failure, empty after a success.
	ACMEError string `cbor:"acme_error,omitempty" json:"acme_error,omitempty"`
}

// OriginInstallRequest hands the enclave a certificate chain the host stored
// (DER, leaf first; at most MaxOriginChain certificates of MaxOriginCert
// bytes). The enclave installs it only if the leaf carries its own key, names
// the issuer's host and has not expired, and only if it expires later than
// the chain it holds.
type OriginInstallRequest struct {
	Chain [][]byte `cbor:"chain" json:"chain"`
}

// OriginInstallResponse says whether the chain was installed and what the
// enclave now serves.
type OriginInstallResponse struct {
	Installed bool  `cbor:"installed" json:"installed"`
	NotAfter  int64 `cbor:"not_after" json:"not_after"`
}
