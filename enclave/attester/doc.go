// Package attester is the seam between the enclave and the Nitro Secure
// Module (NSM): it produces attestation documents and random bytes.
//
// Everything in the enclave that needs to prove what it is, or needs entropy,
// goes through the [Attester] interface. There are two implementations, one
// per enclave mode:
//
//   - [OpenNSM] talks to /dev/nsm inside a real AWS Nitro enclave ("nitro").
//   - [NewSimulated] stands in for the NSM on a laptop or in CI
//     ("simulated"). Its documents have the exact NSM format and verify with
//     github.com/hf/nitrite, but only against a local root that
//     [Simulated.RootPEM] exports, never against the AWS root.
//
// The enclave's main picks one from its mode flag and passes the Attester
// down; nothing else in the enclave should know which one it has, except to
// say "simulated" loudly at start.
//
// # Nitro mode
//
// [OpenNSM] opens a session on /dev/nsm with github.com/hf/nsm and reads PCRs
// 0 to 15 with DescribePCR. Those PCRs are locked before the enclave
// application starts, so [Attester.PCRs] is read once. [Attester.Attest]
// sends an Attestation request and returns the document the NSM produced,
// unchanged. [Attester.Read] sends GetRandom requests until the buffer is
// full. On a platform other than Linux, OpenNSM always returns an error.
//
// # Simulated mode
//
// [NewSimulated] keeps a P-384 root CA in [SimulatedOptions.StateDir]:
// the certificate in simulated-root.pem (0644) and the PKCS#8 private key in
// simulated-root-key.pem (0600). The root is created on first start and
// reused afterwards, so verifiers can pin it. NewSimulated refuses a key file
// that group or others can access, and refuses to start if only one of the
// two files exists rather than silently replacing the root. The root's
// subject is "agentkeys simulated nitro root — NOT AWS" (organization
// "agentkeys SIMULATED Nitro (NOT AWS)"); it is valid for 30 years, starting
// one hour before its creation.
//
// At start, and again when needed, the simulated attester issues an
// intermediate CA (P-384, valid 7 days, signed by the root) and a leaf
// (P-384, valid 3 hours like a real NSM leaf, signed by the intermediate).
// Attest replaces the leaf when it has less than 30 minutes left, and the
// intermediate when it could not cover a full leaf lifetime. Every
// certificate is signed ECDSA-SHA384 and is at most 1024 bytes of DER, as
// nitrite requires. The module_id is "i-simulated0000000-enc" followed by 16
// hex digits of the SHA-256 of the root certificate: stable for a state
// directory and plainly simulated.
//
// Read uses crypto/rand.
//
// # Document format
//
// Both modes return the same bytes on the wire: an untagged COSE_Sign1 (no
// CBOR tag 18), as /dev/nsm returns it.
//
//	COSE_Sign1 = [                    ; definite-length array of 4
//	    protected:   h'A1013822',     ; bstr holding {1: -35}, alg ES384
//	    unprotected: {},              ; A0
//	    payload:     bstr,            ; the attestation document below
//	    signature:   bstr .size 96,   ; r || s, 48 bytes each
//	]
//
// The signature is ECDSA P-384 with SHA-384 over the COSE Sig_structure
//
//	["Signature1", h'A1013822', h'', payload]
//
// made by the key of the leaf certificate in the payload.
//
// The payload is an indefinite-length CBOR map (BF ... FF) with exactly these
// keys, in this order, all text strings:
//
//	module_id:   tstr                   ; e.g. "i-0340e0cb833504eb6-enc019c12d31f78864d"
//	digest:      "SHA384"
//	timestamp:   uint                   ; milliseconds since the Unix epoch
//	pcrs:        {* uint => bstr .size 48}  ; definite map, indexes 0..15 ascending
//	certificate: bstr                   ; the leaf, DER
//	cabundle:    [* bstr]               ; DER, root first: [root, intermediate...]
//	public_key:  bstr / null
//	user_data:   bstr / null
//	nonce:       bstr / null
//
// All integers and lengths use the shortest CBOR encoding. An absent
// public_key, user_data or nonce is present as CBOR null; an empty slice
// passed to Attest counts as absent. Attest limits nonce and user_data to 512
// bytes and public_key to 1024, like the NSM, and otherwise returns an error
// wrapping [ErrTooLarge].
//
// This is what a real document looks like (testdata/nitro-attestation-2026.b64
// is one, and the tests compare a simulated document with it). The one
// difference is the chain: a real cabundle has the AWS root and three
// intermediates, a simulated one the simulated root and one intermediate.
//
// # PCRs in simulated mode
//
// Real PCRs measure the enclave image; simulated ones measure the running
// binary, so that they change whenever the code does. With
// Extend(prev, data) = SHA-384(prev || data), the NSM's extend operation
// ([Extend]), and Z = 48 zero bytes:
//
//	PCR0 = Extend(Z, SHA-384(contents of the executable))   ; at most 512 MiB
//	PCR1 = Extend(Z, SHA-384("agentkeys simulated kernel"))
//	PCR2 = Extend(Z, SHA-384(AppData))
//	PCR3 .. PCR15 = Z                                       ; incl. 3, 4 and 8
//
// The executable is [SimulatedOptions.Executable], by default
// os.Executable(). AppData is whatever the enclave wants bound to its
// identity, such as its policy. [SimulatedPCRs] computes the same values from
// a file, for a verifier that wants to pin a simulated build.
//
// # Verifying documents
//
// Verify with github.com/hf/nitrite: nitrite.Verify(doc,
// nitrite.VerifyOptions{Roots: roots, CurrentTime: now}), with Roots nil (the
// AWS root) in production and [Simulated.RootPool] (or a pool built from
// RootPEM) in simulated mode. Then check the nonce, the PCRs and the user data
// yourself: nitrite checks signatures and the chain, not what they vouch for.
//
// Two pitfalls. nitrite.Verify returns a non-nil result together with an
// error when the signature or the chain is bad: always check the error first.
// And it panics on a document whose leaf key is P-521, so a verifier of
// documents from untrusted parties must guard the call (this package never
// produces one).
//
// A verifier that trusts a simulated root accepts anything a developer's
// laptop signs: a production deployment must never be configured with one.
package attester
