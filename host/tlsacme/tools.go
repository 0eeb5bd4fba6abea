//go:build tools

package tlsacme

// The tests build Pebble's command from the module cache (pebble_test.go)
// without importing it. This import, in a file no build compiles, keeps
// github.com/letsencrypt/pebble/v2 in go.mod when go mod tidy runs.
import _ "github.com/letsencrypt/pebble/v2/cmd/pebble"
