// Package service is the enclave's decision maker: it holds the derived keys and
// answers the operations of the [protocol] package.
//
// Every identity decision is made here, inside the trust boundary, never on the
// host:
//
//   - SessionNonce issues a sign-in nonce without storing it: the nonce is its
//     issue time and 16 random bytes, MACed with a key drawn from the
//     attester's randomness at boot and never persisted (80 hex digits). Only
//     used nonces are remembered, until they would have expired; a restart
//     makes every earlier nonce worthless.
//   - CreateSession verifies a Sign-In with Ethereum message (EIP-4361) and its
//     personal_sign signature, checks that the message names this broker's API
//     origin (policy api_url, by default the issuer; byte for byte: no case
//     folding, no percent-decoding, no userinfo), a chain the
//     policy allows, and a nonce this enclave issued and nobody used, and that
//     the message is not older than its nonce; it returns a session token: an
//     ES256 JWT signed with the internal key issuer/jwt/v1, carrying the
//     wallet, a session id and the chain id, and lasting no longer than the
//     message's Expiration Time.
//   - VerifySession accepts a session token only in the one encoding the
//     enclave writes (canonical base64url, low-s signature), so one session has
//     one bearer string. It remembers the tokens it accepted (by SHA-256, at
//     most Config.SessionCache): the same bytes again skip the signature check
//     and are checked only for their times (exp, iat, nbf) and chain id.
//   - MintOIDC verifies a session token itself (signature, issuer, audience,
//     expiry, alg pinned to ES256), applies the [policy.Policy] (audience
//     allowlist, TTL bounds), cuts the JWT's exp to the session's (refusing a
//     session with less than the policy's minimum JWT TTL left) and signs the
//     claims of [claims.OIDC] with oidc/issuer/v1. The JWT is signed inside
//     the audit log's append (enclave/logtree): its jti, and its
//     agentkeys_log_index tag, are the id of the entry that names its
//     SHA-256 (auditlog.EntryID: its index, "NAME/INDEX" in the log named
//     NAME), and the answer carries the batch and the inclusion proof.
//   - AuditAppend logs an entry the host asserts (marked host_asserted), and
//     AuditResume takes the host's log at start: until then nothing is
//     minted. The checkpoints are signed with audit/checkpoint/v1.
//   - Attest returns an attestation document whose user_data is the SHA-256 of a
//     manifest of the published keys, so a host cannot present a document that
//     binds keys the enclave does not hold.
//   - With Config.IssuerOrigin enclave, New also derives the issuer origin's
//     TLS key and ACME account key (labels in enclave/origin), names them in
//     the manifest, and builds the [origin.Origin] that serves discovery and
//     the JWKS ([Service.Origin]); origin_state and origin_install read and
//     install its public certificate chain.
//
// # What a compromised host can and cannot do
//
// The host forwards requests and may drop, delay or replay them. It cannot mint
// for a wallet that never signed in (the enclave checks the signature and the
// single-use nonce), cannot extend a TTL past the policy or a JWT past its
// session, cannot exhaust the enclave's memory with nonce requests (issuing
// one stores nothing), and cannot choose the
// claims beyond the audience and TTL the policy allows. The one exception is
// the compatibility mode allow_host_asserted_wallet, which the policy must switch
// on explicitly and which marks every such JWT.
//
// # Start here
//
// [New] takes a [Config] (policy, seed, attester); the returned *Service is a
// [protocol.Handler] to pass to [protocol.Server]. Tests use the typed methods
// ([Service.CreateSession], [Service.MintOIDC], …) directly or through the wire.
package service
