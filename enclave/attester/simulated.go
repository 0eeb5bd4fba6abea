package attester

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"
)

// Files the simulated root is kept in, inside SimulatedOptions.StateDir.
const (
	SimulatedRootCertFile = "simulated-root.pem"     // certificate, 0644
	SimulatedRootKeyFile  = "simulated-root-key.pem" // PKCS#8 private key, 0600
)

const (
	rootLifetime = 30 * 365 * 24 * time.Hour // like the AWS root
	// rootBackdate lets a root created now survive a small backwards clock
	// step on the next start.
	rootBackdate         = time.Hour
	intermediateLifetime = 7 * 24 * time.Hour
	leafLifetime         = 3 * time.Hour // like real NSM leaves
	leafRenewBefore      = 30 * time.Minute

	// maxCertSize is the largest certificate nitrite (and the AWS spec)
	// accepts in cabundle.
	maxCertSize = 1024
	maxPEMSize  = 64 << 10

	simulatedOrg       = "agentkeys SIMULATED Nitro (NOT AWS)"
	simulatedRootCN    = "agentkeys simulated nitro root — NOT AWS"
	simulatedInterCN   = "agentkeys simulated nitro intermediate — NOT AWS"
	simulatedModulePfx = "i-simulated0000000-enc"
)

// SimulatedOptions configures NewSimulated.
type SimulatedOptions struct {
	// StateDir holds the persistent simulated root (SimulatedRootCertFile
	// and SimulatedRootKeyFile). It is created, 0700, if missing. Required.
	StateDir string

	// Executable is measured into PCR0. Default: os.Executable().
	Executable string

	// AppData is measured into PCR2, e.g. the policy the enclave enforces.
	AppData []byte

	// Now is the clock for document timestamps and certificate validity.
	// Default: time.Now.
	Now func() time.Time
}

// Simulated is an Attester that stands in for the NSM off-Nitro. Its
// documents have the exact NSM format but chain to a local root, which never
// verifies against the AWS root. Create it with NewSimulated.
type Simulated struct {
	now      func() time.Time
	stateDir string
	moduleID string
	pcrs     map[int][]byte
	root     *x509.Certificate
	rootPEM  []byte

	mu      sync.Mutex // guards the fields below
	closed  bool
	rootKey *ecdsa.PrivateKey
	inter   *issuer
	leaf    *issuer
}

var _ Attester = (*Simulated)(nil)

type issuer struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
}

// NewSimulated measures the executable and AppData into PCRs, loads the
// simulated root from StateDir (creating it on first start) and issues an
// intermediate and a leaf.
func NewSimulated(opts SimulatedOptions) (*Simulated, error) {
	if opts.StateDir == "" {
		return nil, errors.New("simulated attester: StateDir is required")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Executable == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("failed to find the executable to measure into PCR0: %w", err)
		}
		opts.Executable = exe
	}
	pcrs, err := SimulatedPCRs(opts.Executable, opts.AppData)
	if err != nil {
		return nil, err
	}
	now := opts.Now()
	rootKey, root, err := loadOrCreateRoot(opts.StateDir, now)
	if err != nil {
		return nil, err
	}
	// The module ID is stable for a StateDir, like a real one for an
	// enclave, and says "simulated" in plain text.
	fp := sha256.Sum256(root.Raw)
	s := &Simulated{
		now:      opts.Now,
		stateDir: opts.StateDir,
		moduleID: simulatedModulePfx + hex.EncodeToString(fp[:8]),
		pcrs:     pcrs,
		root:     root,
		rootPEM:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw}),
		rootKey:  rootKey,
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.rotateLocked(now); err != nil {
		return nil, err
	}
	return s, nil
}

// Attest returns a document signed by the current leaf, issuing a new leaf
// first if the current one has less than 30 minutes left.
func (s *Simulated) Attest(nonce, userData, publicKey []byte) ([]byte, error) {
	nonce, userData, publicKey, err := checkInputs(nonce, userData, publicKey)
	if err != nil {
		return nil, err
	}
	now := s.now()
	ms := now.UnixMilli()
	if ms <= 0 {
		return nil, fmt.Errorf("clock reads %v, before the Unix epoch", now)
	}

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	if err := s.rotateLocked(now); err != nil {
		s.mu.Unlock()
		return nil, err
	}
	leaf, inter := s.leaf, s.inter
	s.mu.Unlock()

	d := document{
		moduleID:    s.moduleID,
		timestamp:   uint64(ms),
		pcrs:        s.pcrs,
		certificate: leaf.cert.Raw,
		cabundle:    [][]byte{s.root.Raw, inter.cert.Raw},
		publicKey:   publicKey,
		userData:    userData,
		nonce:       nonce,
	}
	return signSign1(leaf.key, d.marshal())
}

// Read fills p from crypto/rand.
func (s *Simulated) Read(p []byte) (int, error) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return 0, ErrClosed
	}
	return rand.Read(p)
}

// Mode returns ModeSimulated.
func (s *Simulated) Mode() string { return ModeSimulated }

// PCRs returns a copy of the PCRs the documents carry.
func (s *Simulated) PCRs() map[int][]byte { return copyPCRs(s.pcrs) }

// RootPEM returns the simulated root certificate, PEM encoded: what a verifier
// of simulated documents must trust instead of the AWS root.
func (s *Simulated) RootPEM() []byte { return bytes.Clone(s.rootPEM) }

// RootPool returns a pool holding only the simulated root, for
// nitrite.VerifyOptions.Roots.
func (s *Simulated) RootPool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(s.root)
	return pool
}

// Close drops the keys held in memory. The root key stays in StateDir.
func (s *Simulated) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.rootKey, s.inter, s.leaf = nil, nil, nil
	return nil
}

// rotateLocked makes sure the intermediate and the leaf are valid at now, the
// intermediate for at least a full leaf lifetime and the leaf for more than
// leafRenewBefore. It is also how a backwards clock step is handled: a
// certificate not yet valid at now is replaced.
func (s *Simulated) rotateLocked(now time.Time) error {
	if now.Before(s.root.NotBefore) || now.Add(intermediateLifetime).After(s.root.NotAfter) {
		return fmt.Errorf("simulated root in %s is valid from %v to %v, not from now (%v) for another %v; remove %s and %s there to create a new one",
			s.stateDir, s.root.NotBefore, s.root.NotAfter, now.UTC(), intermediateLifetime, SimulatedRootCertFile, SimulatedRootKeyFile)
	}
	if s.inter == nil || now.Before(s.inter.cert.NotBefore) || now.Add(leafLifetime).After(s.inter.cert.NotAfter) {
		inter, err := newIssuer(&x509.Certificate{
			Subject:               pkix.Name{Organization: []string{simulatedOrg}, CommonName: simulatedInterCN},
			NotBefore:             now.Truncate(time.Second),
			NotAfter:              now.Truncate(time.Second).Add(intermediateLifetime),
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
			BasicConstraintsValid: true,
			IsCA:                  true,
			MaxPathLenZero:        true,
		}, s.root, s.rootKey)
		if err != nil {
			return fmt.Errorf("failed to issue the simulated intermediate: %w", err)
		}
		s.inter, s.leaf = inter, nil
	}
	if s.leaf == nil || now.Before(s.leaf.cert.NotBefore) || now.Add(leafRenewBefore).After(s.leaf.cert.NotAfter) {
		leaf, err := newIssuer(&x509.Certificate{
			Subject:               pkix.Name{Organization: []string{simulatedOrg}, CommonName: s.moduleID + ".simulated"},
			NotBefore:             now.Truncate(time.Second),
			NotAfter:              now.Truncate(time.Second).Add(leafLifetime),
			KeyUsage:              x509.KeyUsageDigitalSignature,
			BasicConstraintsValid: true,
		}, s.inter.cert, s.inter.key)
		if err != nil {
			return fmt.Errorf("failed to issue the simulated leaf: %w", err)
		}
		s.leaf = leaf
	}
	return nil
}

// newIssuer generates a P-384 key and a certificate for it from template,
// signed by parent (self-signed if parent is nil).
func newIssuer(template, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*issuer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		return nil, err
	}
	if parent == nil {
		parent, parentKey = template, key
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	template.SerialNumber = serial.Add(serial, big.NewInt(1))
	// nitrite requires ECDSA-SHA384 on the leaf; use it throughout.
	template.SignatureAlgorithm = x509.ECDSAWithSHA384
	der, err := x509.CreateCertificate(rand.Reader, template, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, err
	}
	if len(der) > maxCertSize {
		return nil, fmt.Errorf("certificate %q is %d bytes, more than the %d a document allows", template.Subject.CommonName, len(der), maxCertSize)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &issuer{key: key, cert: cert}, nil
}

// loadOrCreateRoot returns the root kept in dir, creating it if neither file
// exists. Exactly one of the two files existing is an error: silently
// replacing a root would change what verifiers must trust.
func loadOrCreateRoot(dir string, now time.Time) (*ecdsa.PrivateKey, *x509.Certificate, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("failed to create the state directory: %w", err)
	}
	keyPath := filepath.Join(dir, SimulatedRootKeyFile)
	certPath := filepath.Join(dir, SimulatedRootCertFile)
	keyExists, err := exists(keyPath)
	if err != nil {
		return nil, nil, err
	}
	certExists, err := exists(certPath)
	if err != nil {
		return nil, nil, err
	}
	switch {
	case !keyExists && !certExists:
		return createRoot(keyPath, certPath, now)
	case keyExists && certExists:
		return loadRoot(keyPath, certPath, now)
	default:
		return nil, nil, fmt.Errorf("found only one of %s and %s in %s; remove it to create a new simulated root", SimulatedRootKeyFile, SimulatedRootCertFile, dir)
	}
}

func exists(path string) (bool, error) {
	_, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("failed to check for %s: %w", path, err)
	}
	return true, nil
}

func createRoot(keyPath, certPath string, now time.Time) (*ecdsa.PrivateKey, *x509.Certificate, error) {
	notBefore := now.Truncate(time.Second).Add(-rootBackdate)
	root, err := newIssuer(&x509.Certificate{
		Subject:               pkix.Name{Organization: []string{simulatedOrg}, CommonName: simulatedRootCN},
		NotBefore:             notBefore,
		NotAfter:              notBefore.Add(rootLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            1, // root → intermediate → leaf
	}, nil, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("failed to create the simulated root: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(root.key)
	if err != nil {
		return nil, nil, fmt.Errorf("failed to encode the simulated root key: %w", err)
	}
	// O_EXCL: if another process created the root meanwhile, fail rather
	// than overwrite it.
	if err := writeNewFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, nil, err
	}
	if err := writeNewFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.cert.Raw}), 0o644); err != nil {
		os.Remove(keyPath)
		return nil, nil, err
	}
	return root.key, root.cert, nil
}

func writeNewFile(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("failed to create %s: %w", path, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("failed to write %s: %w", path, err)
	}
	return nil
}

func loadRoot(keyPath, certPath string, now time.Time) (*ecdsa.PrivateKey, *x509.Certificate, error) {
	keyPEM, err := readSmallFile(keyPath, true)
	if err != nil {
		return nil, nil, err
	}
	block, _ := pem.Decode(keyPEM)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, nil, fmt.Errorf("%s does not hold a PEM \"PRIVATE KEY\" block", keyPath)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("failed to parse %s: %w", keyPath, err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P384() {
		return nil, nil, fmt.Errorf("%s is not a P-384 ECDSA key", keyPath)
	}

	certPEM, err := readSmallFile(certPath, false)
	if err != nil {
		return nil, nil, err
	}
	block, _ = pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("%s does not hold a PEM \"CERTIFICATE\" block", certPath)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("failed to parse %s: %w", certPath, err)
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	switch {
	case !ok || !pub.Equal(&key.PublicKey):
		return nil, nil, fmt.Errorf("%s does not match the key in %s", certPath, keyPath)
	case !cert.IsCA || cert.SignatureAlgorithm != x509.ECDSAWithSHA384 || len(cert.Raw) > maxCertSize:
		return nil, nil, fmt.Errorf("%s is not a simulated root this package created", certPath)
	case cert.CheckSignatureFrom(cert) != nil:
		return nil, nil, fmt.Errorf("%s is not self-signed", certPath)
	case now.Before(cert.NotBefore) || now.Add(intermediateLifetime).After(cert.NotAfter):
		return nil, nil, fmt.Errorf("simulated root %s is valid from %v to %v, not now (%v); remove it and %s to create a new one",
			certPath, cert.NotBefore, cert.NotAfter, now.UTC(), keyPath)
	}
	return key, cert, nil
}

// readSmallFile reads at most maxPEMSize bytes of a regular file. With
// private set, it refuses a file that group or others can access: the key
// signs everything a simulated enclave attests to.
func readSmallFile(path string, private bool) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("failed to open %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat() // the opened file, not the path: no race with a swap
	if err != nil {
		return nil, fmt.Errorf("failed to stat %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	// Windows has no Unix permission bits to check; the enclave runs on Linux.
	if private && runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s is accessible by group or others (mode %04o); restrict it with: chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxPEMSize+1))
	if err != nil {
		return nil, fmt.Errorf("failed to read %s: %w", path, err)
	}
	if len(b) > maxPEMSize {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxPEMSize)
	}
	return b, nil
}
