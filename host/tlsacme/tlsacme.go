package tlsacme

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/mail"
	"net/url"
	"os"
	"runtime"
	"strings"
	"sync"

	"github.com/caddyserver/certmagic"
)

// Config configures a Manager. New calls Validate.
type Config struct {
	// Domain is the one DNS name the certificate is for, such as
	// "keys.example.com": no scheme, no port, no wildcard, lowercase.
	Domain string

	// CA is the ACME directory URL. Empty means Let's Encrypt production
	// (certmagic.LetsEncryptProductionCA); use certmagic.LetsEncryptStagingCA
	// for trials.
	CA string

	// Email is the optional contact address of the ACME account.
	Email string

	// StorageDir is where the certificate, its private key and the ACME
	// account key are kept (certmagic.FileStorage). Required. It is created
	// with mode 0700 and must not be accessible to other users.
	StorageDir string

	// CARoots, if not nil, replaces the system roots when verifying the
	// ACME server's own TLS certificate (tests: Pebble's).
	CARoots *x509.CertPool

	// HTTPPort and TLSPort are the local ports on which the HTTP-01 and
	// TLS-ALPN-01 challenges are answered; zero means 80 and 443. A public
	// CA always connects to 80 and 443, so other values only make sense
	// behind port forwarding or with a test CA.
	HTTPPort, TLSPort int

	// DisableTLSALPN turns off the TLS-ALPN-01 challenge, leaving HTTP-01.
	DisableTLSALPN bool

	// Logger receives certmagic's logs; nil means slog.Default().
	Logger *slog.Logger
}

// Validate reports the first problem with c, worded for the operator.
func (c Config) Validate() error {
	if err := checkDomain(c.Domain); err != nil {
		return err
	}
	if c.CA != "" {
		u, err := url.Parse(c.CA)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return fmt.Errorf("ACME directory %q is not an https:// URL (for example %s)", c.CA, certmagic.LetsEncryptStagingCA)
		}
	}
	if c.Email != "" {
		a, err := mail.ParseAddress(c.Email)
		if err != nil || a.Address != c.Email {
			return fmt.Errorf("ACME account email %q is not a plain address such as ops@example.com", c.Email)
		}
	}
	if c.StorageDir == "" {
		return errors.New("TLS storage directory is required: it keeps the certificate, its private key and the ACME account key across restarts")
	}
	if c.HTTPPort < 0 || c.HTTPPort > 65535 {
		return fmt.Errorf("HTTP challenge port %d is out of range 1-65535 (0 means 80)", c.HTTPPort)
	}
	if c.TLSPort < 0 || c.TLSPort > 65535 {
		return fmt.Errorf("TLS challenge port %d is out of range 1-65535 (0 means 443)", c.TLSPort)
	}
	if c.httpPort() == c.tlsPort() {
		return fmt.Errorf("HTTP and TLS challenge ports are both %d; they must differ", c.httpPort())
	}
	return nil
}

func (c Config) httpPort() int {
	if c.HTTPPort == 0 {
		return 80
	}
	return c.HTTPPort
}

func (c Config) tlsPort() int {
	if c.TLSPort == 0 {
		return 443
	}
	return c.TLSPort
}

// checkDomain accepts a lowercase DNS name (letters, digits, hyphens, dots)
// and explains what is wrong with anything else.
func checkDomain(d string) error {
	switch {
	case d == "":
		return errors.New("TLS domain is required")
	case strings.Contains(d, "://"):
		if u, err := url.Parse(d); err == nil && u.Hostname() != "" {
			return fmt.Errorf("TLS domain %q is a URL; give the bare name %q", d, u.Hostname())
		}
		return fmt.Errorf("TLS domain %q is a URL; give the bare DNS name", d)
	case net.ParseIP(strings.Trim(d, "[]")) != nil:
		return fmt.Errorf("TLS domain %q is an IP address; the certificate needs a DNS name that points at this host", d)
	case strings.Contains(d, "*"):
		return fmt.Errorf("TLS domain %q is a wildcard; wildcard certificates need the DNS-01 challenge, which is not supported: give one exact name", d)
	case strings.Contains(d, ":"):
		if h, _, err := net.SplitHostPort(d); err == nil && h != "" {
			return fmt.Errorf("TLS domain %q has a port; give the bare name %q (the challenges use ports 80 and 443)", d, h)
		}
		return fmt.Errorf("TLS domain %q contains ':', which is not allowed in a DNS name", d)
	case strings.HasSuffix(d, "."):
		return fmt.Errorf("TLS domain %q ends with a dot; give %q", d, strings.TrimSuffix(d, "."))
	case len(d) > 253:
		return fmt.Errorf("TLS domain is %d characters long; a DNS name has at most 253", len(d))
	case d != strings.ToLower(d):
		return fmt.Errorf("TLS domain %q has upper-case letters; give %q", d, strings.ToLower(d))
	}
	for label := range strings.SplitSeq(d, ".") {
		if label == "" {
			return fmt.Errorf("TLS domain %q has an empty label", d)
		}
		if len(label) > 63 {
			return fmt.Errorf("TLS domain %q has a label longer than 63 characters", d)
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("TLS domain %q has a label that starts or ends with '-'", d)
		}
		for _, r := range label {
			if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' {
				return fmt.Errorf("TLS domain %q contains %q, which is not allowed in a DNS name (internationalized names must be given in xn-- form)", d, r)
			}
		}
	}
	return nil
}

// Manager obtains and renews the certificate for one domain and serves it.
// Create it with New, start the HTTP and HTTPS listeners, call Obtain, and
// Close it on shutdown.
type Manager struct {
	domain   string
	ca       string
	httpPort int
	tlsPort  int
	tlsALPN  bool
	log      *slog.Logger

	cache *certmagic.Cache
	magic *certmagic.Config
	acme  *certmagic.ACMEIssuer

	closeOnce sync.Once
}

// New validates cfg, prepares its storage directory and returns a Manager.
// It does not contact the CA; Obtain does. New starts certmagic's
// maintenance goroutine, which Close stops.
func New(cfg Config) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.CA == "" {
		cfg.CA = certmagic.LetsEncryptProductionCA
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With(slog.String("component", "tlsacme"))
	if err := prepareStorageDir(cfg.StorageDir); err != nil {
		return nil, err
	}

	m := &Manager{
		domain:   cfg.Domain,
		ca:       cfg.CA,
		httpPort: cfg.httpPort(),
		tlsPort:  cfg.tlsPort(),
		tlsALPN:  !cfg.DisableTLSALPN,
		log:      log,
	}
	zl := newZapLogger(log)

	// A Cache and Config of our own, not certmagic's package-level default,
	// so that two Managers (or two tests) never share certificates. The
	// cache's maintenance goroutine renews through the Config it is given
	// here; it only asks once a certificate is cached, after New returned.
	var magic *certmagic.Config
	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) { return magic, nil },
		Logger:           zl,
	})
	magic = certmagic.New(m.cache, certmagic.Config{
		Storage: &certmagic.FileStorage{Path: cfg.StorageDir},
		// Clients that send no SNI still get our certificate.
		DefaultServerName: cfg.Domain,
		Logger:            zl,
	})
	m.magic = magic
	m.acme = certmagic.NewACMEIssuer(magic, certmagic.ACMEIssuer{
		CA:    cfg.CA,
		Email: cfg.Email,
		// Running the host with a TLS domain is accepting the CA's
		// subscriber agreement; there is nobody to ask.
		Agreed:                  true,
		DisableTLSALPNChallenge: cfg.DisableTLSALPN,
		// certmagic answers challenges through whatever listens on these
		// ports (our HTTPHandler and TLSConfig); if nothing does, it binds
		// them itself for the duration of the challenge.
		AltHTTPPort:    m.httpPort,
		AltTLSALPNPort: m.tlsPort,
		TrustedRoots:   cfg.CARoots,
		Logger:         zl,
	})
	magic.Issuers = []certmagic.Issuer{nonInteractiveIssuer{m.acme}}
	return m, nil
}

// prepareStorageDir creates dir with mode 0700 and refuses a directory that
// other users can read: it holds the private keys of the certificate and of
// the ACME account.
func prepareStorageDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("failed to create TLS storage directory: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("failed to inspect TLS storage directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("TLS storage directory %s is not a directory", dir)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("TLS storage directory %s is open to other users (mode %v) but holds private keys; run: chmod 700 %s", dir, fi.Mode().Perm(), dir)
	}
	return nil
}

// nonInteractiveIssuer stops certmagic from prompting on the terminal.
// certmagic's ManageSync treats its caller as an administrator at a
// terminal: with no email configured and no ACME account in storage,
// ACMEIssuer.PreCheck prints the CA's terms to stdout and reads an email
// address from stdin. The host is a daemon, so PreCheck always runs in
// non-interactive mode. The price: certmagic only tells the CA which
// certificate a renewal replaces (ARI "replaces") when the issuer is a bare
// *certmagic.ACMEIssuer; renewals still happen, and still follow the CA's
// ARI schedule.
type nonInteractiveIssuer struct {
	*certmagic.ACMEIssuer
}

func (i nonInteractiveIssuer) PreCheck(ctx context.Context, names []string, _ bool) error {
	return i.ACMEIssuer.PreCheck(ctx, names, false)
}

// Obtain loads the certificate from storage or obtains one from the CA,
// and returns when it is ready to be served or has failed; it does not
// retry. The HTTP handler on HTTPPort (or the TLS listener on TLSPort) must
// already be reachable by the CA. After a success the certificate is
// renewed in the background until Close.
func (m *Manager) Obtain(ctx context.Context) error {
	m.log.Info("loading or obtaining certificate", slog.String("domain", m.domain), slog.String("ca", m.ca))
	if err := m.magic.ManageSync(ctx, []string{m.domain}); err != nil {
		reach := fmt.Sprintf("port %d (HTTP-01)", m.httpPort)
		if m.tlsALPN {
			reach += fmt.Sprintf(" or port %d (TLS-ALPN-01)", m.tlsPort)
		}
		return fmt.Errorf("failed to obtain a certificate for %s from %s (check that %s resolves to this host and that the CA can reach %s): %w",
			m.domain, m.ca, m.domain, reach, err)
	}
	for _, c := range m.cache.AllMatchingCertificates(m.domain) {
		if c.Leaf != nil {
			m.log.Info("certificate ready",
				slog.String("domain", m.domain),
				slog.String("issuer", c.Leaf.Issuer.String()),
				slog.Time("not_after", c.Leaf.NotAfter))
		}
	}
	return nil
}

// TLSConfig returns the configuration for the HTTPS listener: it serves the
// managed certificate and answers TLS-ALPN-01 challenges. It can be used
// before Obtain; handshakes fail until a certificate is there.
func (m *Manager) TLSConfig() *tls.Config {
	c := m.magic.TLSConfig() // GetCertificate, and NextProtos = acme-tls/1
	c.NextProtos = append([]string{"h2", "http/1.1"}, c.NextProtos...)
	c.MinVersion = tls.VersionTLS12
	return c
}

// HTTPHandler returns the handler for the plain-HTTP listener: it answers
// the CA's requests under /.well-known/acme-challenge/ and passes every
// other request to fallback, which in production is RedirectHandler (the
// default when fallback is nil).
func (m *Manager) HTTPHandler(fallback http.Handler) http.Handler {
	if fallback == nil {
		fallback = RedirectHandler()
	}
	return m.acme.HTTPChallengeHandler(fallback)
}

// Close stops background renewal. It does not close any listener.
func (m *Manager) Close() {
	m.closeOnce.Do(m.cache.Stop)
}

// RedirectHandler answers GET and HEAD with a 308 redirect to the same
// host, path and query over https on the default port, and every other
// method with 400: a request with a body has already crossed the network in
// clear, and a client that sends one over plain HTTP is misconfigured and
// should fail loudly rather than be redirected. A missing or malformed
// Host header also gets 400.
func RedirectHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.Error(w, "plain HTTP only redirects GET and HEAD; use https://", http.StatusBadRequest)
			return
		}
		host, ok := redirectHost(r.Host)
		if !ok {
			http.Error(w, "missing or invalid Host header", http.StatusBadRequest)
			return
		}
		target := url.URL{
			Scheme:   "https",
			Host:     host,
			Path:     r.URL.Path,
			RawPath:  r.URL.RawPath,
			RawQuery: r.URL.RawQuery,
		}
		http.Redirect(w, r, target.String(), http.StatusPermanentRedirect)
	})
}

// redirectHost returns the Host header without its port, lowercased and
// bracketed if it is an IPv6 address, or false if it is not a DNS name or
// an IP address.
func redirectHost(hostport string) (string, bool) {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if ip := net.ParseIP(strings.Trim(host, "[]")); ip != nil {
		if ip.To4() == nil {
			return "[" + ip.String() + "]", true
		}
		return ip.String(), true
	}
	if checkDomain(host) != nil {
		return "", false
	}
	return host, true
}
