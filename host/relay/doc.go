// Package relay carries the issuer origin's TCP connections to the enclave
// without opening them, so that TLS for the issuer URL ends inside the enclave
// and the host cannot change the discovery document or the JWKS that AWS STS
// fetches (docs/trust.md).
//
// # Start here
//
// [New] takes the issuer's host name and a way to dial the enclave's origin
// listener (its --origin-listen, over the enclave transport). [Relay.Serve]
// accepts on the public listener, and for each connection either:
//
//   - reads the ClientHello (TLS records only, at most [MaxHello] bytes,
//     within HelloTimeout), and if its server_name is the issuer's host,
//     relays the connection byte for byte to the enclave, ClientHello
//     included; or
//   - hands it, ClientHello replayed, to [Relay.API]: the listener the host's
//     own TLS server (certmagic, for the API origin) accepts from.
//
// With Config.AllToEnclave (the issuer origin on a port of its own) every
// connection is relayed without being read.
//
// # Limits
//
// MaxConns bounds the connections held at once (both routes; more are closed
// at once), HelloTimeout the wait for a whole ClientHello, IdleTimeout a
// relayed connection without traffic. A ClientHello that is malformed, too
// large or not TLS closes the connection; nothing a client sends stops the
// relay. The metrics agentkeys_relay_connections_total{route,outcome} and
// agentkeys_relay_active_connections{route} (host/metrics) count what
// happened.
package relay
