// Package build makes the AgentKeys enclave image: an EIF whose bytes, and so whose PCRs,
// depend only on the source tree, the Go toolchain and the pinned AWS Nitro Enclaves blobs.
package build
