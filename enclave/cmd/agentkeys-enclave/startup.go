// Start-up: where the seed comes from (a file, or KMS through seed.Gate).

package main

import (
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/agentkeys/broker/enclave/attester"
	"github.com/agentkeys/broker/enclave/egress"
	"github.com/agentkeys/broker/enclave/seed"
	"github.com/agentkeys/broker/enclave/service"
	"github.com/agentkeys/broker/shared/policy"
	"github.com/agentkeys/broker/shared/protocol"
)

// sealConfig are the flags of the KMS-sealed seed.
type sealConfig struct {
	keyID, region, endpoint, egress string
	timeout                         time.Duration
}

// Seams for the nitro-mode test, which has no /dev/nsm, no vsock and no AWS:
// it replaces the NSM with a fake one, the vsock routes with TCP to a stand-in
// KMS, and the embedded roots with the stand-in's CA.
var (
	openNSM     = attester.OpenNSM
	nitroEgress = func(r egress.Routes) egress.Dialer { return r }
	kmsRoots    *x509.CertPool // nil: the roots embedded in the binary
)

// fileSeed is simulated mode's start-up: the seed is a file, the service
// serves at once.
func fileSeed(log *slog.Logger, pol policy.Policy, policyBytes []byte, stateDir string, tune serviceTuning, orig *originConfig) (protocol.Handler, attester.Attester, error) {
	log.Warn("WARNING: SIMULATED ENCLAVE. The seed is a file on this machine and attestation documents chain to a local root, never to AWS. Not for production.", "state_dir", stateDir)
	s, created, err := seed.LoadOrCreate(stateDir, rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	if created {
		log.Info("created a new seed", "path", filepath.Join(stateDir, seed.FileName))
	}
	att, err := attester.NewSimulated(attester.SimulatedOptions{StateDir: stateDir, AppData: policyBytes})
	if err != nil {
		seed.Wipe(s)
		return nil, nil, err
	}
	svc, err := service.New(orig.serviceConfig(tune.apply(service.Config{Policy: pol, Seed: s, Attester: att, Logger: log})))
	seed.Wipe(s)
	if err != nil {
		att.Close()
		return nil, nil, err
	}
	orig.attach(svc)
	return svc, att, nil
}

// sealedSeed is nitro mode's start-up (and simulated mode's with
// --kms-endpoint): the enclave serves a seed.Gate until the host unseals the
// seed through KMS.
func sealedSeed(log *slog.Logger, simulated bool, pol policy.Policy, policyBytes []byte, stateDir string, tune serviceTuning, sealing sealConfig, orig *originConfig) (protocol.Handler, attester.Attester, error) {
	if sealing.keyID == "" || sealing.region == "" {
		hint := "hint: pass the KMS key that seals the seed and its region; scripts/kms-policy.sh prints its key policy"
		if simulated {
			hint = "hint: --kms-endpoint needs --kms-key-id and --kms-region too; or drop --kms-endpoint for a file seed"
		}
		return nil, nil, fmt.Errorf("nitro mode needs a KMS-sealed seed: --kms-key-id and --kms-region are required\n\t%s\n\thint: run with --simulated on a laptop or in CI", hint)
	}
	var (
		att    attester.Attester
		dialer egress.Dialer
		err    error
	)
	if simulated {
		log.Warn("WARNING: SIMULATED ENCLAVE. Attestation documents chain to a local root, never to AWS; the seed is sealed by the KMS endpoint given. Not for production.",
			"state_dir", stateDir, "kms_endpoint", sealing.endpoint)
		sim, err := attester.NewSimulated(attester.SimulatedOptions{StateDir: stateDir, AppData: policyBytes})
		if err != nil {
			return nil, nil, err
		}
		att, dialer = sim, egress.Direct{}
	} else {
		routes, err := egress.ParseRoutes(sealing.egress)
		if err != nil {
			return nil, nil, fmt.Errorf("invalid --egress: %w", err)
		}
		if len(routes) == 0 {
			return nil, nil, fmt.Errorf("nitro mode needs --egress: the enclave reaches KMS only through the host's vsock-proxy\n\thint: --egress kms.%s.amazonaws.com:443=8000", sealing.region)
		}
		if att, err = openNSM(); err != nil {
			return nil, nil, err
		}
		dialer = nitroEgress(routes)
	}
	k, err := seed.NewKMS(seed.KMSConfig{KeyID: sealing.keyID, Region: sealing.region, Endpoint: sealing.endpoint,
		AllowHTTP: simulated, Dialer: dialer, RootCAs: kmsRoots, Attester: att, Timeout: sealing.timeout})
	if err != nil {
		att.Close()
		return nil, nil, err
	}
	g, err := seed.NewGate(seed.GateConfig{
		KMS: k,
		Info: protocol.InfoResponse{ProtocolVersion: protocol.Version, Mode: att.Mode(), Policy: pol,
			PolicyDigest: pol.Digest(), PCRs: att.PCRs()},
		Open: func(s []byte) (protocol.Handler, error) {
			svc, err := service.New(orig.serviceConfig(tune.apply(service.Config{Policy: pol, Seed: s, Attester: att, Logger: log})))
			if err != nil {
				return nil, err
			}
			orig.attach(svc)
			return svc, nil
		},
		Logger: log,
	})
	if err != nil {
		att.Close()
		return nil, nil, err
	}
	return g, att, nil
}

// serviceTuning is the service's bounds from the command line.
type serviceTuning struct {
	sessionCache    int // 0: none
	auditMaxBatch   int
	auditMaxUnacked int
}

// apply sets t's bounds in a service configuration.
func (t serviceTuning) apply(c service.Config) service.Config {
	c.SessionCache = t.sessionCache
	if t.sessionCache == 0 {
		c.SessionCache = -1 // service.Config: negative is none
	}
	c.Audit.MaxBatch, c.Audit.MaxUnacked = t.auditMaxBatch, int64(t.auditMaxUnacked)
	return c
}
