package seed

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	"github.com/agentkeys/broker/shared/protocol"
)

// GateConfig configures a Gate.
type GateConfig struct {
	// KMS unseals the seed. Required.
	KMS *KMS
	// Info is what info answers until the seed is unsealed: the mode, policy
	// and PCRs, no keys. The Gate sets its Seed field.
	Info protocol.InfoResponse
	// Open derives the keys from the seed and returns the handler that serves
	// every op from then on (the enclave service). It must not keep seed: the
	// Gate wipes it once Open returns. Required.
	Open   func(seed []byte) (protocol.Handler, error)
	Logger *slog.Logger
}

// Gate is the enclave's protocol handler while its seed is sealed. It answers
// info (with seed = needs_unseal), provide_credentials and unseal, and every
// other op with unavailable; once unseal succeeds it hands every op to the
// handler Open returned.
type Gate struct {
	cfg GateConfig
	log *slog.Logger

	mu        sync.Mutex
	inner     protocol.Handler // nil until unsealed
	unsealing bool
}

// NewGate returns a Gate waiting for unseal.
func NewGate(cfg GateConfig) (*Gate, error) {
	if cfg.KMS == nil || cfg.Open == nil {
		return nil, errors.New("seed: a gate needs KMS and Open")
	}
	cfg.Info.Seed = protocol.SeedNeedsUnseal
	g := &Gate{cfg: cfg, log: cfg.Logger}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	return g, nil
}

// Unsealed reports whether the keys are derived.
func (g *Gate) Unsealed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.inner != nil
}

// Handle implements protocol.Handler.
func (g *Gate) Handle(ctx context.Context, op protocol.Op, body []byte) (any, error) {
	g.mu.Lock()
	inner := g.inner
	g.mu.Unlock()
	switch op {
	case protocol.OpProvideCredentials:
		var req protocol.ProvideCredentialsRequest
		if err := decode(body, &req); err != nil {
			return nil, err
		}
		if err := g.cfg.KMS.SetCredentials(req.Credentials); err != nil {
			return nil, protocol.Errorf(protocol.CodeBadRequest, "refused the credentials: %v", err)
		}
		g.log.Info("AWS credentials for KMS replaced", "credentials", req.Credentials)
		return protocol.ProvideCredentialsResponse{}, nil
	case protocol.OpUnseal:
		if inner != nil {
			return nil, protocol.Errorf(protocol.CodeBadRequest, "the seed is already unsealed")
		}
		var req protocol.UnsealRequest
		if err := decode(body, &req); err != nil {
			return nil, err
		}
		return g.unseal(ctx, req)
	}
	if inner != nil {
		return inner.Handle(ctx, op, body)
	}
	if op == protocol.OpInfo {
		var req protocol.InfoRequest
		if err := decode(body, &req); err != nil {
			return nil, err
		}
		return g.cfg.Info, nil
	}
	return nil, protocol.Errorf(protocol.CodeUnavailable, "the enclave's seed is still sealed: the host must call unseal with the sealed seed (see docs/deploy.md, \"Seed\")")
}

func (g *Gate) unseal(ctx context.Context, req protocol.UnsealRequest) (protocol.UnsealResponse, error) {
	g.mu.Lock()
	if g.inner != nil { // another unseal finished since Handle looked
		g.mu.Unlock()
		return protocol.UnsealResponse{}, protocol.Errorf(protocol.CodeBadRequest, "the seed is already unsealed")
	}
	if g.unsealing {
		g.mu.Unlock()
		return protocol.UnsealResponse{}, protocol.Errorf(protocol.CodeUnavailable, "an unseal is already under way; retry")
	}
	g.unsealing = true
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.unsealing = false
		g.mu.Unlock()
	}()
	if err := g.cfg.KMS.SetCredentials(req.Credentials); err != nil {
		return protocol.UnsealResponse{}, protocol.Errorf(protocol.CodeBadRequest, "refused the credentials: %v", err)
	}
	keyID := g.cfg.KMS.KeyID()
	if len(req.CiphertextBlob) == 0 {
		// First start: make a seed, hand back its sealed form, use nothing.
		s, blob, err := g.cfg.KMS.Generate(ctx)
		if err != nil {
			g.log.Error("failed to generate a sealed seed", "err", err.Error(), "kms_key_id", keyID)
			return protocol.UnsealResponse{}, protocol.Errorf(protocol.CodeInternal, "%v", err)
		}
		Wipe(s)
		g.log.Info("generated a new sealed seed; waiting for the host to store it and unseal with it", "kms_key_id", keyID)
		return protocol.UnsealResponse{Created: true, CiphertextBlob: blob, KeyID: keyID}, nil
	}
	s, err := g.cfg.KMS.Unseal(ctx, req.CiphertextBlob)
	if err != nil {
		g.log.Error("failed to unseal the seed", "err", err.Error(), "kms_key_id", keyID)
		return protocol.UnsealResponse{}, protocol.Errorf(protocol.CodeInternal, "%v", err)
	}
	h, err := g.cfg.Open(s)
	Wipe(s)
	if err != nil {
		return protocol.UnsealResponse{}, err
	}
	g.mu.Lock()
	g.inner = h
	g.mu.Unlock()
	g.log.Info("seed unsealed; serving", "kms_key_id", keyID)
	return protocol.UnsealResponse{KeyID: keyID}, nil
}

func decode(body []byte, v any) error {
	if err := protocol.Unmarshal(body, v); err != nil {
		return protocol.Errorf(protocol.CodeBadRequest, "malformed request body: %v", err)
	}
	return nil
}
