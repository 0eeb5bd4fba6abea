// Package origintest holds the in-process tests of the issuer origin end to
// end: the enclave's origin (enclave/origin, through enclave/service) behind
// the host's relay (host/relay), with a real ACME CA (Pebble), a real OIDC
// client (go-oidc), the STS emulator and the real aws-sdk-go-v2 STS client.
// It lives apart from both halves because host/ never imports enclave/.
// It has no code of its own.
package origintest
