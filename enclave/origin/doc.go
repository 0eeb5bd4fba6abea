// Package origin serves the issuer origin from inside the enclave: TLS for the
// issuer URL ends here, so the discovery document and the JWKS that AWS STS
// fetches come from the enclave's memory, not from the host.
//
// # Why
//
// AWS checks no attestation: it trusts whatever JWKS the issuer URL serves. A
// host that terminated TLS for the issuer could publish a key of its own and
// forge tokens. Here the host only relays the origin's TCP connections (by SNI
// on :443, or on a port of their own, see host/relay) and cannot read or change
// them.
//
// # Start here
//
// [New] takes the origin's TLS key and ACME account key (derived by the
// service from the seed at [LabelTLS] and [LabelACMEAccount], so every enclave
// of the image serves the same key) and the issuer's JWKS. A [Server] accepts
// the relayed connections on the enclave's --origin-listen address and serves,
// over crypto/tls, exactly two paths:
//
//	GET /.well-known/openid-configuration
//	GET /.well-known/jwks.json
//
// and 404 for anything else. The server starts before the seed is open (nitro
// mode waits for unseal); until [Server.Set] gives it an Origin every handshake
// fails.
//
// # Certificates
//
// [Origin.Run] keeps a certificate: with an ACME CA configured ([ACME]) it
// registers the account key, orders a certificate for the issuer's host, and
// answers the CA's TLS-ALPN-01 challenge on the relayed connection itself
// (ALPN acme-tls/1), so nothing the host holds would convince a CA. It renews
// at two thirds of the certificate's lifetime. It talks to the CA through
// enclave/egress (vsock-proxy in nitro mode) with TLS it verifies against the
// roots it carries. The chain is public: the host reads it with the
// origin_state operation, stores it, and hands it back at the next start with
// origin_install ([Origin.Install]), which accepts only a chain whose leaf
// carries the origin's own key, names the issuer's host and is unexpired.
//
// For local development only, [Config.SelfSigned] serves a self-signed
// certificate for the origin's key when no CA is configured.
//
// # Binding for auditors
//
// The attested key manifest names the SHA-256 of the TLS key's
// SubjectPublicKeyInfo ([Origin.SPKISHA256]) and the ACME account key's RFC 7638
// thumbprint. agentkeys-attest verify and watch compare the certificate a TLS
// client sees at the issuer URL with the first; the account URI that a CAA
// record's accounturi names is assigned by the CA at registration and is
// reported by origin_state and logged.
package origin
