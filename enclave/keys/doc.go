// Package keys derives every private key the enclave uses from one 32-byte
// seed, with SLIP-0010 hierarchical derivation on two curves: nist256p1
// (P-256, for ES256 JWTs and session tokens) and ed25519 (for audit
// checkpoints).
//
// # Where to start
//
// The enclave calls [DeriveSet] once at start with the unsealed seed and keeps
// the returned [Set]. Nothing else is needed in production.
//
// [P256] and [Ed25519] derive a single key for a label; they exist for
// rotation (a new label such as "oidc/issuer/v2" next to the old one) and for
// tools that cross-check the enclave's public keys.
//
// [Master], [Node.Child], [Derive] and [ParsePath] are the SLIP-0010
// primitives. They are exported so that the published SLIP-0010 test vectors
// can be checked against this code and so that an auditor can reproduce any
// key from a seed and a path.
//
// # Labels
//
// A label is a slash-separated name such as "oidc/issuer/v1". Each segment
// (only a-z, 0-9, '.', '_' and '-') becomes one hardened index:
//
//	index(segment) = 0x80000000 | (big-endian uint32 of SHA-256(segment)[0:4] & 0x7fffffff)
//
// so "oidc/issuer/v1" is the path m/oidc'/issuer'/v1' with each name replaced
// by its index. See [LabelPath] and docs/keys.md for the exact numbers.
//
// # Hardened only
//
// Every path this project uses is hardened, so only hardened derivation is
// implemented. A non-hardened index is an error wrapping [ErrNotHardened]: for
// ed25519 SLIP-0010 does not define it, and for nist256p1 this package does
// not support it. As a consequence nothing here ever needs a public parent
// key, and the nist256p1 arithmetic is a single addition modulo the group
// order, done in constant time.
//
// # Secrets
//
// Intermediate secrets (HMAC outputs, parent keys, chain codes) are cleared
// when they are no longer needed. This is best effort only: Go may copy values
// on the stack or during garbage collection, and the HMAC state and the
// returned keys hold their own copies. A [Node] refuses to print its contents
// with fmt or log/slog, and no error from this package contains key material.
package keys
