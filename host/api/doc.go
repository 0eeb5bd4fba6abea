// Package api is the host's HTTP API: the OIDC discovery document and JWKS,
// sign-in and sessions, and credential minting, compatible with the Rust broker
// this replaces (same paths, JSON fields, status codes and {"error","message"}
// bodies).
//
// The host decides nothing about identity. Every sign-in, session check and
// signature is the enclave's; the host carries requests to it, keeps the
// revocation list, and writes the audit log.
//
// # Fail closed
//
// Every mint and every refused attempt is recorded in the audit store, and a
// credential leaves the host only after its record is durable. If the store
// cannot write, the caller gets 500 audit_error and no credential. A refusal
// whose own record cannot be written still refuses (the status says audit_error).
//
// # Requests and tokens
//
// Every body is a shared/httpapi type, the one definition the client reads
// too. Request bodies are decoded strictly (shared/strictjson): an unknown key,
// a key given twice or a key in another case is 400 bad_request. The host
// never decodes a bearer token itself: the enclave verifies it, and the host
// checks revocation once, with the session id the enclave verified, before it
// releases anything.
//
// # Start here
//
// [New] takes a [Config]; the *API is an http.Handler. The binary in
// host/cmd/agentkeys-host wires it to TLS, the enclave connection and the stores.
package api
