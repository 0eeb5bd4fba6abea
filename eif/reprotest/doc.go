// Package reprotest holds only slow tests of the enclave image, in a package of their own so that
// `go test ./...` runs them in parallel with the other packages:
//
//   - TestTwoCheckouts: the image built from two checkouts of the repository at different paths,
//     with different GOFLAGS and GOAMD64 in the environment, must be the same bytes (one go build
//     of the enclave per checkout);
//   - TestBoot: a real Linux kernel, in QEMU, unpacks the image's two ramdisks and starts the
//     enclave binary from them as the Nitro init would (needs qemu-system-x86_64 and a kernel in
//     /boot).
package reprotest
