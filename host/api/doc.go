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
// # Start here
//
// [New] takes a [Config]; the *API is an http.Handler. The binary in
// host/cmd/agentkeys-host wires it to TLS, the enclave connection and the stores.
package api
