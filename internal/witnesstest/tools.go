//go:build tools

package witnesstest

// Start builds litewitness and witnessctl (build.go) without importing them.
// These imports, in a file no build compiles, keep filippo.io/torchwood and
// the commands' dependencies in go.mod and go.sum when go mod tidy runs.
import (
	_ "filippo.io/torchwood/cmd/litewitness"
	_ "filippo.io/torchwood/cmd/witnessctl"
)
