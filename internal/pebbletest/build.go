package pebbletest

import "github.com/agentkeys/broker/internal/modbuild"

// pebble is built from the module cache; its version is the one in go.mod
// (kept there by tools.go).
var pebble = &modbuild.Binary{Module: "github.com/letsencrypt/pebble/v2", Package: "./cmd/pebble", Name: "pebble"}

// startBinary starts cmd (Args, Env and output set) as the Pebble binary,
// building the binary on first use.
var startBinary = pebble.Start

// Cleanup removes the Pebble binary built by Start, if any. Call it from
// TestMain after m.Run. Running Pebbles are not affected; a later Start
// builds the binary again.
func Cleanup() { pebble.Cleanup() }
