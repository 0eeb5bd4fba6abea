package seed

import (
	"context"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"golang.org/x/crypto/x509roots/fallback/bundle"

	"github.com/agentkeys/broker/enclave/attester"
	"github.com/agentkeys/broker/enclave/egress"
	"github.com/agentkeys/broker/enclave/kmsrecipient"
	"github.com/agentkeys/broker/shared/protocol"
)

// EncryptionContext is bound to every sealed seed: KMS refuses to Decrypt a
// blob under another context, and a key policy may require it
// (kms:EncryptionContext:agentkeys:purpose).
var EncryptionContext = map[string]string{"agentkeys:purpose": "seed"}

// Errors a sealed-seed start-up can end with. Each is a security error: the
// enclave refuses the seed rather than use a seed anyone else may know.
var (
	// ErrPlaintextInAnswer: KMS answered with Plaintext set. KMS only does
	// that when it ignored the Recipient, so the seed crossed the host in
	// clear.
	ErrPlaintextInAnswer = errors.New("seed: security error: KMS answered with the plaintext in clear (the Recipient was ignored); refusing this seed")
	// ErrNoRecipientCiphertext: KMS answered without CiphertextForRecipient.
	ErrNoRecipientCiphertext = errors.New("seed: KMS answered without CiphertextForRecipient")
	// ErrNoCredentials: the host has not provided AWS credentials yet, or they
	// have expired.
	ErrNoCredentials = errors.New("seed: no valid AWS credentials for KMS: the host must call provide_credentials (or pass them with unseal)")
)

// maxKMSResponse bounds a KMS response body. GenerateDataKey and Decrypt
// answers are a few KiB.
const maxKMSResponse = 64 << 10

// KMSConfig configures a KMS sealer.
type KMSConfig struct {
	// KeyID is the KMS key (ARN, key id or alias ARN) that seals the seed.
	// It is part of the enclave's command line, hence of its measurement; the
	// host cannot choose it. Required.
	KeyID string
	// Region is the KMS region. Required.
	Region string
	// Endpoint is the KMS URL. Default: https://kms.REGION.amazonaws.com.
	// http:// is accepted only with AllowHTTP (simulated mode, tests).
	Endpoint  string
	AllowHTTP bool
	// Dialer opens the TCP connection: egress.Routes in nitro mode,
	// egress.Direct in simulated mode. Required.
	Dialer egress.Dialer
	// RootCAs verify KMS's TLS certificate. Default: the roots embedded in
	// the binary (golang.org/x/crypto/x509roots/fallback/bundle), never the
	// system pool, which the enclave does not have.
	RootCAs *x509.CertPool
	// Attester makes the Recipient's attestation documents and is the source
	// of all randomness (the recipient key, TLS). Required.
	Attester attester.Attester
	// Timeout bounds one KMS call, retries included. Default 30s.
	Timeout time.Duration
	// Now is the clock for credential expiry. Default time.Now.
	Now func() time.Time
}

// KMS seals the seed with AWS KMS, released only to an attested enclave:
// every call carries a Recipient, an attestation document with a fresh
// in-enclave RSA-2048 public key, and KMS answers with the data key
// encrypted to that key (CiphertextForRecipient), which only this process can
// open. It is safe for concurrent use.
type KMS struct {
	cfg    KMSConfig
	client *kms.Client

	mu    sync.Mutex
	creds protocol.AWSCredentials
}

// DefaultRoots returns the embedded root pool KMS TLS is verified with.
func DefaultRoots() (*x509.CertPool, error) {
	p := x509.NewCertPool()
	for c := range bundle.Roots() {
		cert, err := x509.ParseCertificate(c.Certificate)
		if err != nil {
			return nil, fmt.Errorf("seed: failed to parse an embedded root: %w", err)
		}
		if c.Constraint == nil {
			p.AddCert(cert)
		} else {
			p.AddCertWithConstraint(cert, c.Constraint)
		}
	}
	return p, nil
}

// NewKMS checks cfg and returns a sealer. It makes no call yet.
func NewKMS(cfg KMSConfig) (*KMS, error) {
	if cfg.KeyID == "" || cfg.Region == "" {
		return nil, errors.New("seed: a KMS key id and region are required (--kms-key-id, --kms-region)")
	}
	if cfg.Dialer == nil || cfg.Attester == nil {
		return nil, errors.New("seed: KMS needs a dialer and an attester")
	}
	if cfg.Endpoint == "" {
		cfg.Endpoint = "https://kms." + cfg.Region + ".amazonaws.com"
	}
	u, err := url.Parse(cfg.Endpoint)
	if err != nil || u.Host == "" || (u.Scheme != "https" && !(cfg.AllowHTTP && u.Scheme == "http")) {
		return nil, fmt.Errorf("seed: KMS endpoint %q must be an https URL (http only in simulated mode)", cfg.Endpoint)
	}
	if cfg.RootCAs == nil {
		if cfg.RootCAs, err = DefaultRoots(); err != nil {
			return nil, err
		}
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	k := &KMS{cfg: cfg}
	tr := &http.Transport{
		Proxy:       nil, // never an environment proxy: the route is the egress dialer
		DialContext: cfg.Dialer.DialContext,
		TLSClientConfig: &tls.Config{
			RootCAs:    cfg.RootCAs,
			MinVersion: tls.VersionTLS12,
			Rand:       cfg.Attester,
		},
		TLSHandshakeTimeout:    10 * time.Second,
		ResponseHeaderTimeout:  cfg.Timeout,
		MaxResponseHeaderBytes: 64 << 10,
		MaxIdleConns:           2,
		IdleConnTimeout:        30 * time.Second,
	}
	k.client = kms.New(kms.Options{
		Region:           cfg.Region,
		BaseEndpoint:     aws.String(cfg.Endpoint),
		Credentials:      aws.CredentialsProviderFunc(k.retrieve),
		HTTPClient:       &http.Client{Transport: limitedBody{tr}, Timeout: cfg.Timeout},
		RetryMaxAttempts: 3,
	})
	return k, nil
}

// KeyID returns the configured KMS key.
func (k *KMS) KeyID() string { return k.cfg.KeyID }

// SetCredentials replaces the AWS credentials KMS calls are signed with.
func (k *KMS) SetCredentials(c protocol.AWSCredentials) error {
	if c.AccessKeyID == "" || c.SecretAccessKey == "" {
		return errors.New("credentials need an access_key_id and a secret_access_key")
	}
	if len(c.AccessKeyID) > 128 || len(c.SecretAccessKey) > 128 || len(c.SessionToken) > 8<<10 {
		return errors.New("credentials are longer than AWS issues")
	}
	if c.Expiration != 0 && !time.Unix(c.Expiration, 0).After(k.cfg.Now()) {
		return fmt.Errorf("credentials expired at %s", time.Unix(c.Expiration, 0).UTC().Format(time.RFC3339))
	}
	k.mu.Lock()
	k.creds = c
	k.mu.Unlock()
	return nil
}

func (k *KMS) retrieve(context.Context) (aws.Credentials, error) {
	k.mu.Lock()
	c := k.creds
	k.mu.Unlock()
	if c.AccessKeyID == "" {
		return aws.Credentials{}, ErrNoCredentials
	}
	out := aws.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken, Source: "agentkeys-host"}
	if c.Expiration != 0 {
		out.CanExpire, out.Expires = true, time.Unix(c.Expiration, 0)
		if !out.Expires.After(k.cfg.Now()) {
			return aws.Credentials{}, ErrNoCredentials
		}
	}
	return out, nil
}

// Generate asks KMS for a new data key (GenerateDataKey, AES_256) released to
// this enclave, and returns the seed and its CiphertextBlob for the host to
// store.
func (k *KMS) Generate(ctx context.Context) (seed, blob []byte, err error) {
	key, recipient, err := k.recipient()
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, k.cfg.Timeout)
	defer cancel()
	out, err := k.client.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{
		KeyId:             aws.String(k.cfg.KeyID),
		KeySpec:           types.DataKeySpecAes256,
		EncryptionContext: EncryptionContext,
		Recipient:         recipient,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("seed: KMS GenerateDataKey with key %s failed: %w", k.cfg.KeyID, err)
	}
	if len(out.CiphertextBlob) == 0 || len(out.CiphertextBlob) > protocol.MaxCiphertextBlob {
		return nil, nil, fmt.Errorf("seed: KMS GenerateDataKey returned a CiphertextBlob of %d bytes", len(out.CiphertextBlob))
	}
	seed, err = open(out.Plaintext, out.CiphertextForRecipient, key)
	if err != nil {
		return nil, nil, err
	}
	return seed, out.CiphertextBlob, nil
}

// Unseal asks KMS to Decrypt blob for this enclave and returns the seed.
// The configured KeyID is pinned: a blob sealed under any other key (one the
// host controls, say) is refused by KMS.
func (k *KMS) Unseal(ctx context.Context, blob []byte) ([]byte, error) {
	if len(blob) == 0 || len(blob) > protocol.MaxCiphertextBlob {
		return nil, fmt.Errorf("seed: a sealed seed is 1 to %d bytes, not %d", protocol.MaxCiphertextBlob, len(blob))
	}
	key, recipient, err := k.recipient()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, k.cfg.Timeout)
	defer cancel()
	out, err := k.client.Decrypt(ctx, &kms.DecryptInput{
		CiphertextBlob:    blob,
		KeyId:             aws.String(k.cfg.KeyID),
		EncryptionContext: EncryptionContext,
		Recipient:         recipient,
	})
	if err != nil {
		return nil, fmt.Errorf("seed: KMS Decrypt with key %s failed: %w", k.cfg.KeyID, err)
	}
	return open(out.Plaintext, out.CiphertextForRecipient, key)
}

// recipient makes a fresh RSA-2048 key and an attestation document carrying
// its public key: one per KMS call, so a document a host recorded is useless
// without the private key that never leaves this process.
func (k *KMS) recipient() (*rsaKey, *types.RecipientInfo, error) {
	key, err := kmsrecipient.GenerateKey(k.cfg.Attester)
	if err != nil {
		return nil, nil, err
	}
	pub, err := kmsrecipient.PublicKeyDER(key)
	if err != nil {
		return nil, nil, err
	}
	doc, err := k.cfg.Attester.Attest(nil, nil, pub)
	if err != nil {
		return nil, nil, fmt.Errorf("seed: failed to attest the KMS recipient key: %w", err)
	}
	return key, &types.RecipientInfo{AttestationDocument: doc, KeyEncryptionAlgorithm: types.KeyEncryptionMechanismRsaesOaepSha256}, nil
}

// open checks KMS's answer and decrypts the seed from CiphertextForRecipient.
func open(plaintext, forRecipient []byte, key *rsaKey) ([]byte, error) {
	if len(plaintext) != 0 {
		clear(plaintext)
		return nil, ErrPlaintextInAnswer
	}
	if len(forRecipient) == 0 {
		return nil, ErrNoRecipientCiphertext
	}
	seed, err := kmsrecipient.Decrypt(forRecipient, key)
	if err != nil {
		return nil, fmt.Errorf("seed: failed to open KMS's CiphertextForRecipient: %w", err)
	}
	if len(seed) != Size {
		clear(seed)
		return nil, fmt.Errorf("seed: KMS released %d bytes, want %d", len(seed), Size)
	}
	return seed, nil
}

type rsaKey = rsa.PrivateKey

// limitedBody bounds every response body the KMS client reads.
type limitedBody struct{ rt http.RoundTripper }

func (l limitedBody) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := l.rt.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	res.Body = &limitedReadCloser{r: io.LimitReader(res.Body, maxKMSResponse+1), c: res.Body}
	return res, nil
}

type limitedReadCloser struct {
	r io.Reader
	c io.Closer
	n int64
}

func (l *limitedReadCloser) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	l.n += int64(n)
	if l.n > maxKMSResponse {
		return 0, fmt.Errorf("seed: KMS response is larger than %d bytes", maxKMSResponse)
	}
	return n, err
}

func (l *limitedReadCloser) Close() error { return l.c.Close() }
