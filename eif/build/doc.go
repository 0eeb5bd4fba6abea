// Package build makes the AgentKeys enclave image: an EIF whose bytes, and so whose PCRs, depend
// only on the source tree, the Go toolchain, the policy file and the AWS Nitro Enclaves blobs,
// each blob checked against a SHA-384 pin.
//
// The steps, as `make eif` runs them through cmd/agentkeys-eif:
//
//	g := build.GoBuild{SourceDir: ".", Arch: build.X86_64}
//	err := g.Run(ctx, "bin/eif/agentkeys-enclave")   // go build -trimpath -buildvcs=false -ldflags=-buildid=, pinned env
//	pins, err := build.LoadPins("eif/blobs.sha384")
//	blobs, err := build.LoadBlobs("/usr/share/nitro_enclaves/blobs", build.X86_64, pins, "eif/blobs.sha384", build.DefaultMaxInputSize)
//	err = build.Build(w, build.Inputs{Arch: build.X86_64, Blobs: blobs, EnclaveBinary: bin, Policy: policy})
//
// # Layout
//
// The image follows nitro-cli's (aws/aws-nitro-enclaves-cli, enclave_build): sections kernel,
// cmdline, metadata, then two ramdisks. The first (BootstrapRamdisk, measured in PCR1 with the
// kernel and cmdline) holds dev/, init and nsm.ko; the second (ApplicationRamdisk, PCR2) holds
// the enclave's root file system under rootfs/ and the cmd and env files that init reads
// (aws/aws-nitro-enclaves-sdk-bootstrap, init/init.c). Both are newc cpio archives written by
// package eif/cpio. The metadata section's fields that nitro-cli takes from the clock and the
// build machine are fixed (BuildTime, BuildTool, ...). docs/eif.md, "Building the image", has
// the tables and the reference commits.
//
// # Reproducibility
//
// GoBuild sets the variables that could change the binary (CGO_ENABLED, GOOS, GOARCH, GOAMD64,
// GOARM64, GOFLAGS, GOEXPERIMENT, GOFIPS140, GOENV=off, GOTOOLCHAIN) whatever the caller's
// environment holds; CheckBinary refuses a binary built otherwise. The package eif/reprotest
// builds the image from two checkouts at different paths and compares the bytes.
package build
