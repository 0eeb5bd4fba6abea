// Package tlsacme gives agentkeys-host a publicly trusted TLS certificate,
// obtained and renewed over ACME (Let's Encrypt by default) with certmagic.
//
// The host is an OIDC issuer: AWS fetches its discovery document and its
// JWKS over HTTPS and only trusts a certificate from a public CA. With
// --tls-domain NAME the host serves HTTPS on :443 with a certificate for
// NAME, and plain HTTP on :80 for the ACME HTTP-01 challenge and for
// redirects to HTTPS. The TLS-ALPN-01 challenge is answered on :443 by the
// same listener.
//
// # Using it
//
// Call New with a Config, start both listeners, then call Obtain:
//
//	m, err := tlsacme.New(tlsacme.Config{
//		Domain:     "keys.example.com",
//		Email:      "ops@example.com",
//		StorageDir: "/var/lib/agentkeys-host/tls",
//		Logger:     logger,
//	})
//	if err != nil { … }
//	defer m.Close()
//	go (&http.Server{Addr: ":80", Handler: m.HTTPHandler(tlsacme.RedirectHandler())}).ListenAndServe()
//	go (&http.Server{Addr: ":443", Handler: api, TLSConfig: m.TLSConfig()}).ListenAndServeTLS("", "")
//	if err := m.Obtain(ctx); err != nil { … } // exit: the issuer is useless without a certificate
//
// Obtain returns once the certificate is in memory (loaded from storage, or
// freshly issued) or the attempt has failed; it does not retry, so a
// misconfiguration shows up at start, with the CA's reason in the error.
// From then on certmagic renews the certificate in the background (a third
// of its lifetime before expiry, or when the CA's ARI says so) until Close.
// Renewals that fail are retried with backoff and logged.
//
// Starting the listeners first matters: certmagic answers challenges
// through whatever is listening on the challenge ports, and only binds them
// itself, on all interfaces, if nothing is.
//
// # Production
//
//   - DNS: NAME must resolve (A/AAAA) to this host.
//   - Ports: the CA connects to port 80 (HTTP-01) and 443 (TLS-ALPN-01)
//     from the internet; both must be open to the world, not only to AWS.
//     Binding them needs root or CAP_NET_BIND_SERVICE.
//   - Storage: StorageDir keeps the certificate, its private key and the
//     ACME account key. It must survive restarts, or every start asks the
//     CA for a new certificate and soon hits Let's Encrypt's rate limits
//     (5 certificates per exact name per week). New creates it with mode
//     0700 and refuses one that other users can read.
//   - Trials: point CA at Let's Encrypt staging,
//     https://acme-staging-v02.api.letsencrypt.org/directory
//     (certmagic.LetsEncryptStagingCA), whose limits are generous and whose
//     certificates no client trusts; switch to the default production CA
//     once issuance works. Certificates of different CAs are stored apart.
//   - Running with a TLS domain accepts the CA's subscriber agreement.
//
// # Logging
//
// certmagic logs through zap; its entries are passed to the Config's
// slog.Logger with a "logger" attribute naming the certmagic component.
// They contain names, URLs, ACME account IDs and the contact email, never a
// private key.
//
// # Tests
//
// The tests obtain real certificates from Pebble, Let's Encrypt's test ACME
// server, on loopback. Pebble's packages cannot be imported here without
// adding its dependencies (go-jose, challtestsrv) to the shared go.mod, so
// the first test that needs Pebble builds its binary from the module cache
// ("go build" in the directory "go list -m" reports; tools.go keeps the
// requirement in go.mod) and each test starts its own Pebble process,
// whose validation authority is told which ports to fetch challenges from.
// Pebble validates for real: PEBBLE_VA_ALWAYS_VALID is never set, only its
// random sleeps, nonce rejections and authorization reuse are turned off.
//
// The domain is "localhost". Pebble resolves it with Go's resolver (from
// /etc/hosts) and connects to the first address; the test resolves it the
// same way and listens there. Pebble's own HTTPS uses a certificate the
// test generates, passed to the Manager as CARoots. The HTTPS client trusts
// only the issuance root Pebble publishes on its management port, and
// checks the chain and the name; the response must come from the test's
// handler. Another test points Pebble at a closed port and expects Obtain
// to fail with Pebble's connection problem, well before its deadline.
package tlsacme
