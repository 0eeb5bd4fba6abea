//go:build tools

package kmstest

// Start builds local-kms from the module cache (build.go) without importing
// it. This import, in a file no build compiles, keeps
// github.com/nsmithuk/local-kms in go.mod when go mod tidy runs.
import _ "github.com/nsmithuk/local-kms"
