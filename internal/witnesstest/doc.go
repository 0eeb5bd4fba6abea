// Package witnesstest runs a real C2SP tlog-witness for tests: litewitness
// from filippo.io/torchwood, built from the module cache at the version in
// go.mod (kept there by tools.go), with its Ed25519 key held by an in-process
// ssh-agent (golang.org/x/crypto/ssh/agent) on a Unix socket, and the log
// registered with witnessctl.
//
//	w := witnesstest.Start(t, origin, logVerifierKey)
//	w.URL          // submission prefix
//	w.VerifierKey  // cosignature/v1 verifier key
//
// Call Cleanup from TestMain after m.Run to remove the built binaries.
package witnesstest
