package relay

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/agentkeys/broker/shared/protocol"
)

// ChainFile is the name, in the host's state directory, of the issuer
// origin's certificate chain (public: PEM, leaf first).
const ChainFile = "issuer-origin-chain.pem"

// DefaultChainPoll is how often the Keeper asks the enclave for its chain.
const DefaultChainPoll = 30 * time.Second

// maxChainFile bounds the stored chain read back.
const maxChainFile = protocol.MaxOriginChain * (protocol.MaxOriginCert*4/3 + 128)

// Keeper stores the issuer origin's certificate chain, which only the enclave
// can obtain, and hands it back to an enclave that lacks it (a restart), so
// the origin serves at once without asking the CA again. Nothing it holds is
// secret: the enclave keeps the key.
type Keeper struct {
	// Path is the chain file (STATE_DIR/issuer-origin-chain.pem).
	Path string
	// Call performs an enclave operation (enclaveclient.Client.Call).
	Call func(ctx context.Context, op protocol.Op, req, resp any) error
	// Poll is how often the enclave is asked (default DefaultChainPoll).
	Poll   time.Duration
	Logger *slog.Logger

	warned atomic.Bool // the mismatch of issuer origin modes was logged
}

// Run syncs at once and then every Poll until ctx is done. After a failure
// (the enclave not reached yet, at start) it retries sooner: after 1 s,
// doubling up to Poll, so a restarted enclave gets its chain back quickly.
func (k *Keeper) Run(ctx context.Context) {
	poll := k.Poll
	if poll <= 0 {
		poll = DefaultChainPoll
	}
	retry := min(time.Second, poll)
	for {
		cctx, cancel := context.WithTimeout(ctx, poll)
		err := k.Sync(cctx)
		cancel()
		wait := poll
		if err != nil && ctx.Err() == nil {
			k.log().Debug("issuer origin chain not synced", "err", err.Error(), "retry_in", retry.String())
			wait, retry = retry, min(2*retry, poll)
		} else {
			retry = min(time.Second, poll)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (k *Keeper) log() *slog.Logger {
	if k.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return k.Logger
}

// Sync reads the enclave's origin state. A stored chain the enclave lacks is
// offered to it (origin_install: the enclave takes it only if it carries its
// key and expires later than what it holds); otherwise a chain of the
// enclave's that differs from the stored one is stored.
func (k *Keeper) Sync(ctx context.Context) error {
	var st protocol.OriginStateResponse
	if err := k.Call(ctx, protocol.OpOriginState, protocol.OriginStateRequest{}, &st); err != nil {
		if errors.Is(err, protocol.ErrBadRequest) && !k.warned.Swap(true) {
			// An enclave started with --issuer-origin host: the relay has
			// nothing to reach.
			k.log().Error("the enclave does not serve the issuer origin, but this host relays it (--issuer-origin enclave); start the enclave with --issuer-origin enclave, or this host with --issuer-origin host", "err", err.Error())
		}
		return fmt.Errorf("failed to read the issuer origin's state: %w", err)
	}
	if st.ACMEError != "" {
		k.log().Warn("the enclave's ACME client reports an error", "acme_error", st.ACMEError)
	}
	stored, err := k.load()
	if err != nil {
		return err
	}
	if len(stored) > 0 && !sameChain(stored, st.Chain) {
		var res protocol.OriginInstallResponse
		err := k.Call(ctx, protocol.OpOriginInstall, protocol.OriginInstallRequest{Chain: stored}, &res)
		if err == nil && res.Installed {
			k.log().Info("installed the stored issuer origin chain in the enclave", "not_after", time.Unix(res.NotAfter, 0).UTC().Format(time.RFC3339))
			return nil
		}
		if err != nil {
			k.log().Warn("the enclave refused the stored issuer origin chain", "path", k.Path, "err", err.Error())
		}
	}
	if len(st.Chain) > 0 && !sameChain(st.Chain, stored) {
		if err := k.store(st.Chain); err != nil {
			return err
		}
		k.log().Info("stored the issuer origin's certificate chain", "path", k.Path, "not_after", time.Unix(st.NotAfter, 0).UTC().Format(time.RFC3339),
			"tls_spki_sha256", st.TLSSPKISHA256, "acme_account_uri", st.ACMEAccountURI)
	}
	return nil
}

func sameChain(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// load reads the stored chain; none is not an error.
func (k *Keeper) load() ([][]byte, error) {
	f, err := os.Open(k.Path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("failed to read the issuer origin chain: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxChainFile+1))
	if err != nil {
		return nil, fmt.Errorf("failed to read the issuer origin chain: %w", err)
	}
	if len(b) > maxChainFile {
		return nil, fmt.Errorf("%s is larger than %d bytes", k.Path, maxChainFile)
	}
	var chain [][]byte
	for len(chain) < protocol.MaxOriginChain {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil {
			break
		}
		if blk.Type == "CERTIFICATE" {
			chain = append(chain, blk.Bytes)
		}
	}
	return chain, nil
}

// store writes the chain atomically (0644: it is public).
func (k *Keeper) store(chain [][]byte) error {
	var buf bytes.Buffer
	for _, c := range chain {
		pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c})
	}
	tmp, err := os.CreateTemp(filepath.Dir(k.Path), ".chain-*")
	if err != nil {
		return fmt.Errorf("failed to store the issuer origin chain: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(buf.Bytes()); err != nil {
		tmp.Close()
		return fmt.Errorf("failed to store the issuer origin chain: %w", err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), k.Path); err != nil {
		return fmt.Errorf("failed to store the issuer origin chain: %w", err)
	}
	return nil
}
