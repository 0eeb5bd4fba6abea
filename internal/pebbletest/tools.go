//go:build tools

package pebbletest

// Start builds Pebble's command from the module cache (build.go) without
// importing it. This import, in a file no build compiles, keeps
// github.com/letsencrypt/pebble/v2 in go.mod when go mod tidy runs.
import _ "github.com/letsencrypt/pebble/v2/cmd/pebble"
