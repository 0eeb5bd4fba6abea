// Package sealedseed is the host's half of the enclave's KMS-sealed seed: it
// keeps the sealed blob (KMS CiphertextBlob) in the state directory and lends
// the enclave the host's AWS credentials for its KMS calls.
//
// The host cannot read the seed. The blob opens only through KMS Decrypt with
// a Recipient (an attestation document of the pinned enclave image), and KMS
// then encrypts the seed to an RSA key that never leaves the enclave. The
// credentials let the enclave sign its calls; the key policy, not the
// credentials, decides who gets the seed (docs/deploy.md, "Seed").
//
// # Start here
//
// [New] returns a [Keeper]. Pass [Keeper.Unseal] as enclaveclient.Config.Unseal:
// on every connection to an enclave that reports seed: needs_unseal it
//
//  1. reads the blob from [Config.BlobPath];
//  2. if there is none (first start), calls unseal without one: the enclave
//     calls KMS GenerateDataKey and returns a new blob, which the Keeper writes
//     (0600, fsync'd, never overwriting a blob that exists);
//  3. calls unseal with the blob: the enclave calls KMS Decrypt and derives its
//     keys.
//
// Run [Keeper.Refresh] alongside: it sends fresh credentials with
// provide_credentials before the ones the enclave holds expire.
package sealedseed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"

	"github.com/agentkeys/broker/host/enclaveclient"
	"github.com/agentkeys/broker/shared/protocol"
)

// FileName is the blob's default name in the host's state directory.
const FileName = "sealed-seed"

// Config configures a Keeper.
type Config struct {
	// BlobPath is where the sealed seed is kept. Required.
	BlobPath string
	// Credentials are the host's AWS credentials (its default chain), lent to
	// the enclave for KMS. Required.
	Credentials aws.CredentialsProvider
	// RefreshBefore is how long before the enclave's credentials expire new
	// ones are sent (default 5m). The provider must itself hand out new ones
	// that early (aws.CredentialsCacheOptions.ExpiryWindow).
	RefreshBefore time.Duration
	Logger        *slog.Logger
	Now           func() time.Time // default time.Now
}

// Keeper keeps the sealed blob and the enclave's credentials.
type Keeper struct {
	cfg Config
	log *slog.Logger

	mu   sync.Mutex
	sent aws.Credentials // last credentials the enclave accepted
}

// New checks cfg and returns a Keeper.
func New(cfg Config) (*Keeper, error) {
	if cfg.BlobPath == "" || cfg.Credentials == nil {
		return nil, errors.New("sealedseed: a blob path and AWS credentials are required")
	}
	if cfg.RefreshBefore <= 0 {
		cfg.RefreshBefore = 5 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	k := &Keeper{cfg: cfg, log: cfg.Logger}
	if k.log == nil {
		k.log = slog.New(slog.DiscardHandler)
	}
	return k, nil
}

// Unseal unseals a sealed enclave on the connection call belongs to, creating
// and storing the blob on first start. It is the enclaveclient.Config.Unseal
// hook.
func (k *Keeper) Unseal(ctx context.Context, call enclaveclient.CallFunc) error {
	creds, wire, err := k.credentials(ctx)
	if err != nil {
		return err
	}
	blob, err := readBlob(k.cfg.BlobPath)
	if err != nil {
		return err
	}
	if blob == nil {
		k.log.Info("no sealed seed yet: asking the enclave to generate one", "path", k.cfg.BlobPath)
		var resp protocol.UnsealResponse
		if err := call(ctx, protocol.OpUnseal, protocol.UnsealRequest{Credentials: wire}, &resp); err != nil {
			return err
		}
		if !resp.Created || len(resp.CiphertextBlob) == 0 || len(resp.CiphertextBlob) > protocol.MaxCiphertextBlob {
			return fmt.Errorf("the enclave answered a first unseal without a new sealed seed (created=%v, %d bytes)", resp.Created, len(resp.CiphertextBlob))
		}
		if err := writeBlob(k.cfg.BlobPath, resp.CiphertextBlob); err != nil {
			return err
		}
		k.log.Info("stored a new sealed seed: back it up with the state dir; losing it means new keys", "path", k.cfg.BlobPath, "kms_key_id", resp.KeyID)
		blob = resp.CiphertextBlob
	}
	var resp protocol.UnsealResponse
	if err := call(ctx, protocol.OpUnseal, protocol.UnsealRequest{CiphertextBlob: blob, Credentials: wire}, &resp); err != nil {
		return err
	}
	if resp.Created {
		return errors.New("the enclave made a new seed when asked to unseal the stored one")
	}
	k.mu.Lock()
	k.sent = creds
	k.mu.Unlock()
	k.log.Info("enclave seed unsealed", "path", k.cfg.BlobPath, "kms_key_id", resp.KeyID)
	return nil
}

// Refresh sends the enclave new credentials with provide_credentials before
// the ones it holds expire, until ctx ends. call is the host's enclave client
// (enclaveclient.Client.Call). Failures are logged and retried in 30s.
func (k *Keeper) Refresh(ctx context.Context, call enclaveclient.CallFunc) {
	const retry = 30 * time.Second
	for {
		wait := k.nextRefresh()
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		if ctx.Err() != nil {
			return
		}
		k.mu.Lock()
		unsealed := k.sent.AccessKeyID != ""
		k.mu.Unlock()
		if !unsealed {
			continue // this host has not unsealed the enclave (a file seed, or not yet)
		}
		if err := k.provide(ctx, call); err != nil {
			k.log.Warn("failed to refresh the enclave's AWS credentials; retrying", "err", err.Error(), "retry_in", retry.String())
			select {
			case <-ctx.Done():
				return
			case <-time.After(retry):
			}
		}
	}
}

// nextRefresh is how long until the enclave's credentials need replacing:
// RefreshBefore ahead of their expiry, at most 15 minutes (so a restarted
// enclave gets current ones soon), at least 30 seconds once some were sent.
func (k *Keeper) nextRefresh() time.Duration {
	k.mu.Lock()
	sent := k.sent
	k.mu.Unlock()
	if sent.AccessKeyID == "" {
		return 30 * time.Second // nothing accepted yet: the Unseal hook sends them first
	}
	wait := 15 * time.Minute
	if sent.CanExpire {
		wait = min(wait, sent.Expires.Sub(k.cfg.Now())-k.cfg.RefreshBefore)
	}
	return max(wait, 30*time.Second)
}

func (k *Keeper) provide(ctx context.Context, call enclaveclient.CallFunc) error {
	creds, wire, err := k.credentials(ctx)
	if err != nil {
		return err
	}
	var resp protocol.ProvideCredentialsResponse
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := call(cctx, protocol.OpProvideCredentials, protocol.ProvideCredentialsRequest{Credentials: wire}, &resp); err != nil {
		return err
	}
	k.mu.Lock()
	k.sent = creds
	k.mu.Unlock()
	k.log.Debug("sent the enclave fresh AWS credentials", "credentials", wire)
	return nil
}

// credentials retrieves the host's credentials, refusing ones about to expire.
func (k *Keeper) credentials(ctx context.Context) (aws.Credentials, protocol.AWSCredentials, error) {
	c, err := k.cfg.Credentials.Retrieve(ctx)
	if err != nil {
		return aws.Credentials{}, protocol.AWSCredentials{}, fmt.Errorf("failed to get the host's AWS credentials for the enclave's KMS calls: %w\n\thint: give the instance a role (the default credential chain) allowed by the KMS key policy", err)
	}
	wire := protocol.AWSCredentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken}
	if c.CanExpire {
		if !c.Expires.After(k.cfg.Now()) {
			return aws.Credentials{}, protocol.AWSCredentials{}, fmt.Errorf("the host's AWS credentials expired at %s", c.Expires.UTC().Format(time.RFC3339))
		}
		wire.Expiration = c.Expires.Unix()
	}
	return c, wire, nil
}

// DefaultCredentials are the host's default AWS credential chain (environment,
// shared config, instance role), cached and renewed refreshBefore ahead of
// their expiry. Nothing is loaded until the enclave needs them, so a host
// whose enclave has a file seed never reads its AWS configuration.
func DefaultCredentials(region string, refreshBefore time.Duration) aws.CredentialsProvider {
	return &defaultChain{region: region, window: refreshBefore}
}

type defaultChain struct {
	region string
	window time.Duration
	mu     sync.Mutex
	p      aws.CredentialsProvider // nil until loaded
}

func (d *defaultChain) Retrieve(ctx context.Context) (aws.Credentials, error) {
	d.mu.Lock()
	if d.p == nil {
		cfg, err := config.LoadDefaultConfig(ctx, config.WithRegion(d.region),
			config.WithCredentialsCacheOptions(func(o *aws.CredentialsCacheOptions) { o.ExpiryWindow = d.window }))
		if err != nil {
			d.mu.Unlock()
			return aws.Credentials{}, fmt.Errorf("failed to load the host's AWS configuration: %w", err)
		}
		d.p = cfg.Credentials
	}
	p := d.p
	d.mu.Unlock()
	return p.Retrieve(ctx)
}

// readBlob returns the stored blob, or nil if there is none. A blob others
// can read is refused: it is not secret (only the attested enclave can open
// it), but losing it means new keys, so it is kept as carefully as the seed
// file of simulated mode.
func readBlob(path string) ([]byte, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("failed to open the sealed seed: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("failed to stat the sealed seed: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("the sealed seed %s is not a regular file", path)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("the sealed seed %s has mode %04o; run: chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	b, err := io.ReadAll(io.LimitReader(f, protocol.MaxCiphertextBlob+1))
	if err != nil {
		return nil, fmt.Errorf("failed to read the sealed seed: %w", err)
	}
	if len(b) == 0 || len(b) > protocol.MaxCiphertextBlob {
		return nil, fmt.Errorf("the sealed seed %s holds %d bytes, not 1 to %d: a damaged file; restore it from backup (a new seed means new keys, see docs/deploy.md)", path, len(b), protocol.MaxCiphertextBlob)
	}
	return b, nil
}

// writeBlob creates path (0600) with b and syncs it and its directory. It
// never replaces a blob that exists.
func writeBlob(path string, b []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("failed to create %s: %w", dir, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("failed to create the sealed seed: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("failed to write the sealed seed %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
