// Package reprotest holds only a test: the enclave image built from two checkouts of the
// repository at different paths, with different GOFLAGS and GOAMD64 in the environment, must be
// the same bytes. It is a package of its own because it is slow (one go build of the enclave per
// checkout), so that `go test ./...` runs it in parallel with the other packages.
package reprotest
