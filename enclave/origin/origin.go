package origin

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/mholt/acmez/v3"

	"github.com/agentkeys/broker/shared/httpapi"
	"github.com/agentkeys/broker/shared/jwk"
	"github.com/agentkeys/broker/shared/protocol"
)

// The SLIP-0010 labels of the origin's keys (both nist256p1).
const (
	// LabelTLS is the issuer origin's TLS key: every certificate for the
	// issuer's host that the enclave serves carries it.
	LabelTLS = "tls/issuer-origin/v1"
	// LabelACMEAccount is the ACME account key the enclave orders
	// certificates with.
	LabelACMEAccount = "acme/account/v1"
)

// Config configures an Origin.
type Config struct {
	// Issuer is the normalised issuer URL; its host is the certificate's name.
	Issuer string
	// TLSKey and AccountKey are the keys at LabelTLS and LabelACMEAccount.
	TLSKey, AccountKey *ecdsa.PrivateKey
	// JWKS is every published issuer key, in policy order.
	JWKS []jwk.Key
	// ACME, if set, obtains and renews the certificate (Run).
	ACME *ACME
	// SelfSigned serves a self-signed certificate for TLSKey while no chain
	// is installed. Development only: no relying party trusts it.
	SelfSigned bool
	Logger     *slog.Logger
	Now        func() time.Time // default time.Now
}

// Origin is the issuer origin's state: its keys, the documents it serves and
// its current certificate. It is safe for concurrent use.
type Origin struct {
	cfg        Config
	host       string // the issuer's host name (no port)
	log        *slog.Logger
	now        func() time.Time
	spki       string // hex SHA-256 of TLSKey's SubjectPublicKeyInfo
	thumbprint string // RFC 7638 thumbprint of AccountKey
	discovery  []byte
	jwks       []byte

	mu         sync.Mutex
	cert       *tls.Certificate // nil until a chain is installed
	chain      [][]byte
	notBefore  time.Time
	notAfter   time.Time
	accountURI string
	acmeErr    string
	challenges map[string]*tls.Certificate // TLS-ALPN-01 certificates by lowercase name
	installed  chan struct{}               // closed and replaced when a chain is installed
}

// New checks the configuration and builds the documents the origin serves.
func New(cfg Config) (*Origin, error) {
	u, err := url.Parse(cfg.Issuer)
	if err != nil || u.Hostname() == "" {
		return nil, fmt.Errorf("origin: issuer %q has no host", cfg.Issuer)
	}
	if cfg.TLSKey == nil || cfg.AccountKey == nil {
		return nil, errors.New("origin: the TLS key and the ACME account key are required")
	}
	if len(cfg.JWKS) == 0 {
		return nil, errors.New("origin: no issuer key to publish")
	}
	o := &Origin{cfg: cfg, host: strings.ToLower(u.Hostname()), log: cfg.Logger, now: cfg.Now,
		challenges: map[string]*tls.Certificate{}, installed: make(chan struct{})}
	if o.log == nil {
		o.log = slog.New(slog.DiscardHandler)
	}
	if o.now == nil {
		o.now = time.Now
	}
	if o.spki, err = SPKISHA256(&cfg.TLSKey.PublicKey); err != nil {
		return nil, err
	}
	aj, err := jwk.FromP256(&cfg.AccountKey.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("origin: account key: %w", err)
	}
	o.thumbprint = aj.Thumbprint()
	if o.jwks, err = json.Marshal(jwk.Set{Keys: cfg.JWKS}); err != nil {
		return nil, fmt.Errorf("origin: %w", err)
	}
	if o.discovery, err = Discovery(cfg.Issuer); err != nil {
		return nil, err
	}
	if cfg.SelfSigned {
		if err := o.selfSign(); err != nil {
			return nil, err
		}
	}
	return o, nil
}

// Discovery is the OpenID Provider metadata of an issuer, as the enclave's
// origin serves it (and as the host serves it in issuer_origin host mode).
func Discovery(issuer string) ([]byte, error) {
	b, err := json.Marshal(httpapi.NewDiscovery(issuer))
	if err != nil {
		return nil, fmt.Errorf("origin: %w", err)
	}
	return b, nil
}

// SPKISHA256 is the hex SHA-256 of a public key's DER SubjectPublicKeyInfo:
// the manifest's issuer_origin_tls_spki_sha256.
func SPKISHA256(pub any) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("origin: %w", err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

// SPKISHA256 is the hex SHA-256 of the TLS key's SubjectPublicKeyInfo.
func (o *Origin) SPKISHA256() string { return o.spki }

// AccountKeyThumbprint is the ACME account key's RFC 7638 thumbprint.
func (o *Origin) AccountKeyThumbprint() string { return o.thumbprint }

// Host is the name the origin's certificate is for.
func (o *Origin) Host() string { return o.host }

// State reports the certificate chain, the keys and the ACME account.
func (o *Origin) State() protocol.OriginStateResponse {
	o.mu.Lock()
	defer o.mu.Unlock()
	st := protocol.OriginStateResponse{Chain: append([][]byte(nil), o.chain...), TLSSPKISHA256: o.spki,
		ACMEAccountURI: o.accountURI, ACMEAccountKeyThumbprint: o.thumbprint, ACMEError: o.acmeErr}
	if o.cert != nil {
		st.NotAfter = o.notAfter.Unix()
	}
	return st
}

// Install installs a chain (DER, leaf first) the host stored. It refuses a
// chain whose leaf does not carry the origin's key, does not name the issuer's
// host or has expired; a chain that expires no later than the current one is
// ignored (Installed false), so a host cannot roll the origin back.
func (o *Origin) Install(chain [][]byte) (protocol.OriginInstallResponse, error) {
	if len(chain) == 0 || len(chain) > protocol.MaxOriginChain {
		return protocol.OriginInstallResponse{}, protocol.Errorf(protocol.CodeBadRequest, "chain must hold 1 to %d certificates", protocol.MaxOriginChain)
	}
	for _, c := range chain {
		if len(c) == 0 || len(c) > protocol.MaxOriginCert {
			return protocol.OriginInstallResponse{}, protocol.Errorf(protocol.CodeBadRequest, "each certificate must be 1 to %d bytes of DER", protocol.MaxOriginCert)
		}
	}
	installed, err := o.install(chain, false)
	if err != nil {
		return protocol.OriginInstallResponse{}, protocol.Errorf(protocol.CodeBadRequest, "%v", err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return protocol.OriginInstallResponse{Installed: installed, NotAfter: o.notAfter.Unix()}, nil
}

// install checks a chain and makes it current. Unless force (a chain just
// obtained from the CA), a chain no newer than the current one is ignored.
func (o *Origin) install(chain [][]byte, force bool) (bool, error) {
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return false, fmt.Errorf("leaf certificate does not parse: %v", err)
	}
	if !bytes.Equal(mustPKIX(leaf.PublicKey), mustPKIX(&o.cfg.TLSKey.PublicKey)) {
		return false, errors.New("the leaf certificate does not carry this enclave's issuer origin key")
	}
	if err := leaf.VerifyHostname(o.host); err != nil {
		return false, fmt.Errorf("the leaf certificate is not for %s: %v", o.host, err)
	}
	now := o.now()
	if !now.Before(leaf.NotAfter) {
		return false, fmt.Errorf("the leaf certificate expired at %s", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	for _, c := range chain[1:] {
		if _, err := x509.ParseCertificate(c); err != nil {
			return false, fmt.Errorf("a chain certificate does not parse: %v", err)
		}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if !force && o.cert != nil && !leaf.NotAfter.After(o.notAfter) && !o.selfSigned() {
		return false, nil
	}
	o.cert = &tls.Certificate{Certificate: append([][]byte(nil), chain...), PrivateKey: o.cfg.TLSKey, Leaf: leaf}
	o.chain = append([][]byte(nil), chain...)
	o.notBefore, o.notAfter = leaf.NotBefore, leaf.NotAfter
	close(o.installed)
	o.installed = make(chan struct{})
	o.log.Info("issuer origin certificate installed", "host", o.host, "not_after", leaf.NotAfter.UTC().Format(time.RFC3339),
		"issuer_cn", leaf.Issuer.CommonName, "tls_spki_sha256", o.spki)
	return true, nil
}

// selfSigned reports whether the current certificate is the development
// self-signed one (o.mu held).
func (o *Origin) selfSigned() bool {
	return o.cert != nil && o.cert.Leaf != nil && bytes.Equal(o.cert.Leaf.RawIssuer, o.cert.Leaf.RawSubject) &&
		o.cert.Leaf.Subject.CommonName == selfSignedCN
}

const selfSignedCN = "agentkeys dev issuer origin (self-signed)"

// selfSign makes the development certificate: the origin's key, the issuer's
// host, a year long.
func (o *Origin) selfSign() error {
	now := o.now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: selfSignedCN},
		DNSNames:     []string{o.host},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if ip := parseIP(o.host); ip != nil {
		tmpl.DNSNames, tmpl.IPAddresses = nil, ip
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &o.cfg.TLSKey.PublicKey, o.cfg.TLSKey)
	if err != nil {
		return fmt.Errorf("origin: failed to make the self-signed certificate: %w", err)
	}
	if _, err := o.install([][]byte{der}, true); err != nil {
		return fmt.Errorf("origin: %w", err)
	}
	o.log.Warn("WARNING: the issuer origin serves a SELF-SIGNED certificate (development only): no relying party such as AWS trusts it", "host", o.host)
	return nil
}

func parseIP(host string) []net.IP {
	if ip := net.ParseIP(host); ip != nil {
		return []net.IP{ip}
	}
	return nil
}

func mustPKIX(pub any) []byte {
	b, _ := x509.MarshalPKIXPublicKey(pub)
	return b
}

// renewAt is when the current certificate should be renewed: two thirds into
// its lifetime. Zero without a certificate (or with the self-signed one).
func (o *Origin) renewAt() time.Time {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.cert == nil || o.selfSigned() {
		return time.Time{}
	}
	return o.notBefore.Add(o.notAfter.Sub(o.notBefore) * 2 / 3)
}

// Installed returns a channel closed when the next chain is installed.
func (o *Origin) Installed() <-chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.installed
}

// TLSConfig is the origin's TLS configuration: its certificate, or for a
// client offering only ALPN acme-tls/1 the TLS-ALPN-01 challenge certificate
// for the name it asks for.
func (o *Origin) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			if isChallenge(hello.SupportedProtos) {
				o.mu.Lock()
				c := o.challenges[strings.ToLower(hello.ServerName)]
				o.mu.Unlock()
				if c == nil {
					return nil, fmt.Errorf("no TLS-ALPN-01 challenge for %q", hello.ServerName)
				}
				return &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{acmez.ACMETLS1Protocol},
					Certificates: []tls.Certificate{*c}}, nil
			}
			return nil, nil
		},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if hello.ServerName != "" && !strings.EqualFold(hello.ServerName, o.host) {
				return nil, fmt.Errorf("this origin serves %s only, not %q", o.host, hello.ServerName)
			}
			o.mu.Lock()
			defer o.mu.Unlock()
			if o.cert == nil {
				return nil, errors.New("the issuer origin has no certificate yet")
			}
			return o.cert, nil
		},
	}
}

func isChallenge(protos []string) bool {
	for _, p := range protos {
		if p == acmez.ACMETLS1Protocol {
			return true
		}
	}
	return false
}

// Handler serves discovery and the JWKS, and 404 for anything else.
func (o *Origin) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body []byte
		switch r.URL.Path {
		case httpapi.PathDiscovery:
			body = o.discovery
		case httpapi.PathJWKS:
			body = o.jwks
		default:
			http.NotFound(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "public, max-age=300")
		w.Write(body)
	})
}

// setChallenge records (or, with c nil, removes) a TLS-ALPN-01 certificate.
func (o *Origin) setChallenge(name string, c *tls.Certificate) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if c == nil {
		delete(o.challenges, strings.ToLower(name))
		return
	}
	o.challenges[strings.ToLower(name)] = c
}

func (o *Origin) setACME(accountURI string, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if accountURI != "" {
		o.accountURI = accountURI
	}
	if err != nil {
		o.acmeErr = truncate(err.Error(), 512)
	} else {
		o.acmeErr = ""
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
