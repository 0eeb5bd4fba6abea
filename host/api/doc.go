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
// # The audit log and its proofs
//
// The enclave logs every JWT it signs (its jti is the entry's index) and
// answers with the batch the entry landed in; from then on every outcome of
// the request, success or refusal, is recorded with that batch, so the store
// holds the whole log. AWS credentials get an entry of their own, asserted by
// the host through audit_append (access key id, and the JWT's index), and so
// do refusals of a verified wallet (best effort). Each credential's answer
// carries log_proof, the C2SP tlog-proof of its entry. Enclave calls that
// append are detached from the client's cancellation (bounded by
// enclaveLogWait), so a client that hangs up does not leave a batch
// unstored. If a record with a batch fails anyway, the next mint first has
// the store fetch what it lacks from the enclave (audit.Resume) and mints
// nothing until it has.
//
// The stored log is served under /v1/audit/ (package tiles over the store;
// the verifier key from the enclave's Info). With [Config.Witnesses] the
// checkpoint served is the cosigned one, each mint nudges the witnesses, and
// /readyz reports them without ever failing on them. A store that holds the
// logs of several hosts (audit.Logs: PostgreSQL) has every one of them served
// under /v1/audit/logs/{name}/ as well (tiles.NewLogs).
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
// # Abuse limits
//
// Anyone can send a request with no bearer, or a forged one, at any rate, so
// those refusals must not cost a record each. Every request names its client
// once (ratelimit.ClientKey, believing X-Forwarded-For only from
// [Config.TrustedProxies]), and the client is in every record. Refusals
// before any bearer was read are counted ([audit.Store.Count]), one aggregate
// record per client, kind and outcome per interval. Every unauthenticated
// refusal spends the client's refusal budget ([Config.RefusalLimit]); past it
// the answer is 429 rate_limited and the refusal is only counted. The bearer
// routes have a generous per-client limit ([Config.MintLimit]) and minting a
// per-wallet one ([Config.WalletMintLimit]), checked once the enclave has
// verified the session; both are counted when they refuse.
//
// # The transparency page
//
// GET / is an HTML page for people (page.go, templates/page.html): what the
// host publishes, each value beside the JSON route it comes from and the
// agentkeys-attest command that checks it. It is the host's word, not a
// proof. It is rendered from the published snapshot and memory, never with
// an enclave call, and limited per client ([Config.PageLimit]).
//
// # Start here
//
// [New] takes a [Config]; the *API is an http.Handler. The binary in
// host/cmd/agentkeys-host wires it to TLS, the enclave connection and the stores.
package api
