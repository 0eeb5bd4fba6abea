// The issuer origin: flags, and the server the enclave runs for it.

package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/agentkeys/broker/enclave/egress"
	"github.com/agentkeys/broker/enclave/origin"
	"github.com/agentkeys/broker/enclave/seed"
	"github.com/agentkeys/broker/enclave/service"
	"github.com/agentkeys/broker/shared/manifest"
	"github.com/agentkeys/broker/shared/policy"
	"github.com/agentkeys/broker/shared/protocol"
)

// DefaultACMEDirectory is Let's Encrypt's production directory: nitro mode's
// default CA for the issuer origin.
const DefaultACMEDirectory = "https://acme-v02.api.letsencrypt.org/directory"

// originConfig are the issuer origin's flags.
type originConfig struct {
	mode             string // --issuer-origin: "", enclave or host ("" = by mode)
	listen           string
	acmeDirectory    string
	acmeDirectorySet bool
	acmeCARoot       string
	acmeEmail        string
	maxConns         int
	readTimeout      time.Duration
	idleTimeout      time.Duration
	acmeTimeout      time.Duration
	acmeRetryMin     time.Duration
	acmeRetryMax     time.Duration
	server           *origin.Server // set by setup when the enclave serves the origin
	acme             *origin.ACME
	selfSigned       bool
	ctx              context.Context
	log              *slog.Logger
}

// resolve applies the defaults: enclave in nitro mode, host in simulated
// mode; vsock:5006 for the listener in nitro mode; Let's Encrypt in nitro
// mode. It checks the issuer can be served over TLS.
func (o *originConfig) resolve(simulated bool, pol policy.Policy) error {
	if o.mode == "" {
		o.mode = manifest.OriginEnclave
		if simulated {
			o.mode = manifest.OriginHost
		}
	}
	switch o.mode {
	case manifest.OriginHost:
		return nil
	case manifest.OriginEnclave:
	default:
		return fmt.Errorf("--issuer-origin %q: want enclave or host", o.mode)
	}
	if u, _ := url.Parse(pol.Issuer); u == nil || u.Scheme != "https" {
		return fmt.Errorf("--issuer-origin enclave serves the issuer over TLS, but the policy's issuer %q is not https\n\thint: use an https issuer (https://localhost:8443 on a laptop), or --issuer-origin host", pol.Issuer)
	}
	if o.listen == "" {
		if simulated {
			return errors.New("--issuer-origin enclave needs --origin-listen in simulated mode\n\thint: --origin-listen tcp:127.0.0.1:8444 (or unix:PATH); the host relays to it")
		}
		o.listen = "vsock:5006"
	}
	if !o.acmeDirectorySet && !simulated {
		o.acmeDirectory = DefaultACMEDirectory
	}
	if o.maxConns < 1 || o.readTimeout <= 0 || o.idleTimeout <= 0 || o.acmeTimeout <= 0 || o.acmeRetryMin <= 0 || o.acmeRetryMax < o.acmeRetryMin {
		return errors.New("--origin-max-conns, --origin-read-timeout, --origin-idle-timeout and the --acme-* durations must be positive (and --acme-retry-max at least --acme-retry-min)")
	}
	return nil
}

// prepare builds the ACME configuration (or the dev self-signed fallback)
// and listens. The origin itself comes when the seed is open (attach).
func (o *originConfig) prepare(simulated bool, egressRoutes string) (net.Listener, error) {
	if o.mode != manifest.OriginEnclave {
		return nil, nil
	}
	if o.acmeDirectory != "" {
		u, err := url.Parse(o.acmeDirectory)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return nil, fmt.Errorf("--acme-directory %q must be an https URL", o.acmeDirectory)
		}
		a := &origin.ACME{Directory: o.acmeDirectory, Timeout: o.acmeTimeout, RetryMin: o.acmeRetryMin, RetryMax: o.acmeRetryMax}
		if o.acmeEmail != "" {
			a.Contact = []string{"mailto:" + o.acmeEmail}
		}
		if o.acmeCARoot != "" {
			pem, err := os.ReadFile(o.acmeCARoot)
			if err != nil {
				return nil, fmt.Errorf("--acme-ca-root: %w", err)
			}
			a.RootCAs = x509.NewCertPool()
			if !a.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("--acme-ca-root %s holds no PEM certificate", o.acmeCARoot)
			}
		} else if a.RootCAs, err = seed.DefaultRoots(); err != nil {
			return nil, err
		}
		if simulated {
			a.Dialer = egress.Direct{}
		} else {
			routes, err := egress.ParseRoutes(egressRoutes)
			if err != nil {
				return nil, fmt.Errorf("invalid --egress: %w", err)
			}
			hostport := u.Host
			if u.Port() == "" {
				hostport += ":443"
			}
			if _, ok := routes[strings.ToLower(hostport)]; !ok {
				return nil, fmt.Errorf("the ACME CA %s is not reachable: --egress has no route for it\n\thint: run a vsock-proxy to it on the parent and add %s=PORT to --egress (docs/deploy.md, \"Issuer origin\"); or --acme-directory '' to serve only a chain the host installs", hostport, hostport)
			}
			a.Dialer = nitroEgress(routes)
		}
		o.acme = a
	} else if simulated {
		o.selfSigned = true
	}
	l, err := protocol.Listen(o.listen)
	if err != nil {
		return nil, fmt.Errorf("failed to listen on --origin-listen %s: %w", o.listen, err)
	}
	o.server = &origin.Server{MaxConns: o.maxConns, ReadTimeout: o.readTimeout, IdleTimeout: o.idleTimeout, Logger: o.log}
	return l, nil
}

// serviceConfig adds the origin's settings to a service configuration.
func (o *originConfig) serviceConfig(c service.Config) service.Config {
	c.IssuerOrigin = o.mode
	c.OriginACME = o.acme
	c.OriginSelfSigned = o.selfSigned
	return c
}

// attach starts serving the origin of a service whose seed is open, and its
// ACME loop.
func (o *originConfig) attach(svc *service.Service) {
	if o.server == nil || svc.Origin() == nil {
		return
	}
	o.server.Set(svc.Origin())
	go svc.Origin().Run(o.ctx)
	o.log.Info("issuer origin ready", "origin_listen", o.listen, "host", svc.Origin().Host(),
		"tls_spki_sha256", svc.Origin().SPKISHA256(), "acme_account_key_thumbprint", svc.Origin().AccountKeyThumbprint(),
		"acme_directory", o.acmeDirectory, "self_signed", o.selfSigned)
}

// warnHost says loudly what issuer_origin host means.
func (o *originConfig) warnHost(log *slog.Logger) {
	if o.mode == manifest.OriginHost {
		log.Warn("WARNING: --issuer-origin host: the host serves the issuer's discovery document and JWKS, so a compromised host could publish a key of its own that AWS would trust. The manifest says issuer_origin host and agentkeys-attest verify warns. Use --issuer-origin enclave in production (docs/trust.md).")
	}
}
