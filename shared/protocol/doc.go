// Package protocol is the wire protocol between agentkeys-host and
// agentkeys-enclave. It is the only way the two halves talk: the host never
// imports the enclave's packages, and everything the enclave receives arrives
// through [Server] as bytes from an untrusted peer.
//
// # Frames
//
// One stream (vsock in production, a unix socket or loopback TCP elsewhere)
// carries frames in both directions. A frame is a 4-byte big-endian length
// followed by that many bytes of CBOR (RFC 8949). A length of zero or above
// [MaxFrameSize] is a protocol violation: the reader closes that connection and
// only that connection.
//
// # Envelopes
//
// A request frame is a CBOR map {"v": version, "id": uint, "op": text, "body": any};
// a response frame is {"id": uint, "err": {"code","message"}?, "body": any?}.
// Requests carry an id chosen by the client; the server answers each id exactly
// once, in any order, so many requests share one connection concurrently. A
// request with an unsupported version is answered with the error code
// unsupported_version; an unknown op with unknown_op.
//
// Decoding is strict: duplicate map keys, unknown fields, CBOR tags, indefinite
// lengths and nesting beyond a small depth are rejected.
//
// # Operations
//
// See ops.go for each operation's request and response. Errors are [Error]
// values with a stable [Code]; callers branch on them with errors.Is against the
// sentinels (for example [ErrUnauthorized]).
//
// # Use
//
// The enclave runs a [Server] with a [Handler] on a listener from [Listen]. The
// host dials with [Dial] and wraps the connection in a [Client], then calls
// [Client.Call] with an op and typed request and response values.
package protocol
