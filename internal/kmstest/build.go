package kmstest

import "github.com/agentkeys/broker/internal/modbuild"

// localKMS is built from the module cache; its version is the one in go.mod
// (kept there by tools.go).
var localKMS = &modbuild.Binary{Module: "github.com/nsmithuk/local-kms", Package: ".", Name: "local-kms"}

// startBinary starts cmd (Args, Env and output set) as the local-kms binary,
// building it on first use.
var startBinary = localKMS.Start

// Cleanup removes the local-kms binary built by Start, if any. Call it from
// TestMain after m.Run. Running local-kms processes are not affected; a later
// Start builds it again.
func Cleanup() { localKMS.Cleanup() }
