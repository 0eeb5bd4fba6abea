// Package attest verifies what an AgentKeys enclave claims about itself: its
// attestation documents, the key manifest a document binds, and that the keys
// relying parties fetch are the manifest's. It is the library behind
// agentkeys-attest, the auditor's tool, and imports nothing of the enclave.
//
// # Where to start
//
// [VerifyLive] checks a running issuer the way a relying party sees it:
// discovery, the JWKS discovery names, and an attestation document for a
// fresh random nonce with its manifest. [VerifyOffline] checks saved files. Both
// return a [Report], one [Check] per statement; [Report.OK] is the verdict and
// [Report.FirstFailure] the reason. The steps are exported too:
//
//   - [VerifyDocument]: the document alone. Any Nitro document, agentkeys or
//     not, can be checked this far.
//   - [VerifyManifest]: the document's user_data is the SHA-256 of the
//     manifest bytes, and those bytes parse and validate (shared/manifest).
//   - [CheckJWKS], [CheckJWT], [CheckIssuer]: the JWKS, a token and the
//     issuer named by discovery and by the token agree with the manifest.
//   - [CheckAuditKey]: the audit log verifier key the API serves is one of
//     the manifest's enclave's logs' keys (shared/auditlog).
//
// [Watcher] keeps checking: every round it fetches discovery and the JWKS as a
// relying party would and returns [Alarm]s (also a Prometheus gauge) when the
// JWKS holds a key no verified manifest lists, discovery's issuer or jwks_uri
// changes, or the JWKS is served uncacheable. [FetchManifest] is the verified
// manifest source it uses for a live issuer.
//
// # Checks, in order
//
//	document     decodes as a COSE_Sign1 attestation document whose leaf key is
//	             ECDSA P-384 (checked before nitrite is called: it panics on P-521)
//	signature    the ES384 COSE signature verifies with the leaf's key
//	chain        leaf → cabundle → a trusted root, valid at the verification time
//	age          timestamp no older than MaxAge and not after the time + MaxSkew
//	nonce        the document echoes the nonce sent (live only)
//	pcrN         each pinned PCR is present and equal
//	debug mode   PCR0, PCR1 and PCR2 are not all zero
//	user_data    = SHA-256(manifest bytes)
//	manifest     parses and validates
//	issuer origin  a warning when the host serves discovery and the JWKS
//	jwks         the JWKS holds exactly the manifest's kids and keys
//	jwt          an ES256 token verifies with a manifest key (if given)
//	issuer       --issuer, discovery, the JWT's iss and the manifest agree
//	issuer tls key  (live, issuer_origin enclave) the issuer URL's certificate
//	             carries the manifest's TLS key
//	audit key    (live) the API's audit log verifier key is the manifest's
//	             checkpoint key, under the default log's name or a named log's
//
// # Trust
//
// The only root trusted by default is the AWS Nitro Enclaves root G1, embedded
// (the PEM hf/nitrite embeds) and checked at init against its published SHA-256
// fingerprint [AWSRootSHA256]. A simulated root is trusted only when the caller
// passes it ([DocumentOptions.Roots]); the root a document carries in its own
// cabundle never is. Signature and chain come from github.com/hf/nitrite,
// which is called with explicit roots and time, guarded against panics, and
// whose result is ignored whenever it also returns an error.
//
// The verification time is explicit: now, a given time, or the document's own
// timestamp for an archived document ([DocumentOptions.AtDocument]), when no
// age limit applies.
//
// # What a pass does not show
//
// That the enclave's code is what you think: only PCRs pinned from a
// reproducible build say that. That the host will keep serving this JWKS: a
// host that serves discovery (issuer_origin "host") can add a key later, which
// only watching the JWKS catches. Offline, without a nonce, that the document is
// recent. Revocation: nitrite does not check it and neither does this package.
// A pass against a simulated root means only that the holder of that root's
// key signed it.
package attest
