// Package kmstest is a KMS endpoint for tests that behaves like AWS KMS with
// Nitro attestation: nsmithuk/local-kms (the real KMS JSON API) behind a shim
// that adds what local-kms lacks, the Recipient parameter.
//
// For GenerateDataKey and Decrypt the shim
//
//   - refuses a request without a Recipient (as the DenyWithoutAttestation
//     statement of scripts/kms-policy.sh does),
//   - verifies the Recipient's attestation document with hf/nitrite against
//     [Options.Roots] (the simulated root; a document from another root fails),
//   - refuses a debug-mode document (PCR0, PCR1 and PCR2 all zero),
//   - enforces the key-policy conditions kms:RecipientAttestation:ImageSha384
//     (PCR0) and kms:RecipientAttestation:PCR<n> against [Options.PCRs],
//   - calls local-kms without the Recipient, then encrypts the Plaintext to
//     the document's RSA public key with kmsrecipient.Encrypt (a CMS envelope
//     shaped as KMS emits it), and answers with it as CiphertextForRecipient
//     and no Plaintext.
//
// [Server.Misbehave] makes the shim break one of these promises on purpose, so
// tests can show the enclave refuses the result.
//
// # Start here
//
// [Start] builds local-kms from the module cache on first use (like
// internal/pebbletest builds Pebble), starts it with one AES key ([KeyID]) and
// returns the shim's URL. Call [Cleanup] from TestMain after m.Run.
package kmstest

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hf/nitrite"

	"github.com/agentkeys/broker/enclave/kmsrecipient"
)

// The one key local-kms is seeded with.
const (
	Region    = "eu-west-2"
	AccountID = "111122223333"
	KeyUUID   = "4f4c6b3e-6a8f-4c35-9d36-2b6f0d7d9e11"
	KeyID     = "arn:aws:kms:" + Region + ":" + AccountID + ":key/" + KeyUUID
	// keyMaterial is the AES-256 backing key: a test key, public.
	keyMaterial = "5cdaead27fe7da2de47945d73cd6d79e36494e73802f3cd3869f1d2cb0b5d7a9"
)

// Misbehaviour is a promise the shim breaks on purpose.
type Misbehaviour int

const (
	Behave          Misbehaviour = iota
	AnswerInClear                // set Plaintext in the answer, as KMS does when it ignores the Recipient
	WrongEnvelope                // a CiphertextForRecipient that is not a well-formed envelope
	ForAnotherKey                // a well-formed envelope, encrypted to another RSA key
	IgnoreRecipient              // answer with Plaintext and no CiphertextForRecipient
	maxMisbehaviour
)

// Options configure the shim's key policy.
type Options struct {
	// Roots are what attestation documents must chain to. Required.
	Roots *x509.CertPool
	// PCRs are the allowed values: PCRs[0] is
	// kms:RecipientAttestation:ImageSha384, the others
	// kms:RecipientAttestation:PCR<n>. At least PCR0 is required.
	PCRs map[int][]byte
	// Now is the clock documents are verified at. Default time.Now.
	Now func() time.Time
}

// Server is a running shim in front of a running local-kms.
type Server struct {
	URL string

	opts  Options
	upURL string

	mu        sync.Mutex
	misbehave Misbehaviour
	pcrs      map[int][]byte
	calls     map[string]int
}

// Start starts local-kms and the shim; both stop when the test ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	if opts.Roots == nil || len(opts.PCRs[0]) == 0 {
		t.Fatal("kmstest: Options.Roots and Options.PCRs[0] are required")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	dir := t.TempDir()
	seed := fmt.Sprintf("Keys:\n  Symmetric:\n    Aes:\n      - Metadata:\n          KeyId: %s\n        BackingKeys:\n          - %s\n", KeyUUID, keyMaterial)
	if err := os.WriteFile(filepath.Join(dir, "seed.yaml"), []byte(seed), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := &exec.Cmd{Args: []string{"local-kms"}}
	cmd.Env = append(os.Environ(), "PORT=0", "KMS_REGION="+Region, "KMS_ACCOUNT_ID="+AccountID,
		"KMS_DATA_PATH="+filepath.Join(dir, "data"), "KMS_SEED_PATH="+filepath.Join(dir, "seed.yaml"))
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := startBinary(cmd); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); pw.Close(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })

	// local-kms logs "Local KMS started on 0.0.0.0:PORT" once it listens.
	portc := make(chan string, 1)
	var logMu sync.Mutex
	var logBuf bytes.Buffer
	go func() {
		re := regexp.MustCompile(`Local KMS started on [0-9.]+:([0-9]+)`)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			logMu.Lock()
			if logBuf.Len() < 64<<10 {
				logBuf.Write(sc.Bytes())
				logBuf.WriteByte('\n')
			}
			logMu.Unlock()
			if m := re.FindSubmatch(sc.Bytes()); m != nil {
				select {
				case portc <- string(m[1]):
				default:
				}
			}
		}
		io.Copy(io.Discard, pr)
	}()
	var port string
	select {
	case port = <-portc:
	case <-exited:
		logMu.Lock()
		defer logMu.Unlock()
		t.Fatalf("local-kms exited before listening:\n%s", logBuf.String())
	case <-time.After(60 * time.Second):
		t.Fatal("local-kms did not start listening within 60s")
	}

	s := &Server{opts: opts, upURL: "http://127.0.0.1:" + port, pcrs: clonePCRs(opts.PCRs), calls: map[string]int{}}
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close)
	s.URL = hs.URL
	return s
}

// Misbehave makes the shim break a promise from now on (Behave to stop).
func (s *Server) Misbehave(m Misbehaviour) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.misbehave = m
}

// SetPCRs replaces the key policy's allowed PCR values, as a new
// kms-policy.sh output would.
func (s *Server) SetPCRs(pcrs map[int][]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pcrs = clonePCRs(pcrs)
}

// SetRoots replaces the roots attestation documents must chain to.
func (s *Server) SetRoots(roots *x509.CertPool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opts.Roots = roots
}

// Calls returns how many requests of an operation (e.g. "Decrypt") local-kms
// was asked to serve.
func (s *Server) Calls(op string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[op]
}

func clonePCRs(p map[int][]byte) map[int][]byte {
	out := make(map[int][]byte, len(p))
	for i, v := range p {
		out[i] = bytes.Clone(v)
	}
	return out
}

// kmsError writes an error in the KMS JSON protocol.
func kmsError(w http.ResponseWriter, status int, typ, format string, a ...any) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"__type": typ, "message": fmt.Sprintf(format, a...)})
}

// recipientOps are the operations whose key policy the shim enforces.
var recipientOps = map[string]bool{"GenerateDataKey": true, "Decrypt": true}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil {
		kmsError(w, 400, "ValidationException", "request body: %v", err)
		return
	}
	op := strings.TrimPrefix(r.Header.Get("X-Amz-Target"), "TrentService.")
	var req map[string]json.RawMessage
	if err := json.Unmarshal(body, &req); err != nil {
		kmsError(w, 400, "SerializationException", "request body is not a JSON object: %v", err)
		return
	}
	var pub *rsa.PublicKey
	if recipientOps[op] {
		raw, ok := req["Recipient"]
		if !ok {
			kmsError(w, 400, "AccessDeniedException", "kmstest: %s without a Recipient is denied by the key policy (DenyWithoutAttestation)", op)
			return
		}
		var rec struct {
			AttestationDocument    []byte
			KeyEncryptionAlgorithm string
		}
		if err := json.Unmarshal(raw, &rec); err != nil {
			kmsError(w, 400, "ValidationException", "Recipient: %v", err)
			return
		}
		if rec.KeyEncryptionAlgorithm != "RSAES_OAEP_SHA_256" {
			kmsError(w, 400, "ValidationException", "Recipient.KeyEncryptionAlgorithm must be RSAES_OAEP_SHA_256")
			return
		}
		var typ string
		pub, typ, err = s.checkDocument(rec.AttestationDocument)
		if err != nil {
			kmsError(w, 400, typ, "kmstest: %v", err)
			return
		}
		delete(req, "Recipient")
		if body, err = json.Marshal(req); err != nil {
			kmsError(w, 500, "KMSInternalException", "%v", err)
			return
		}
	}
	s.mu.Lock()
	s.calls[op]++
	m := s.misbehave
	s.mu.Unlock()

	up, err := http.NewRequestWithContext(r.Context(), http.MethodPost, s.upURL+"/", bytes.NewReader(body))
	if err != nil {
		kmsError(w, 500, "KMSInternalException", "%v", err)
		return
	}
	up.Header.Set("Content-Type", r.Header.Get("Content-Type"))
	up.Header.Set("X-Amz-Target", r.Header.Get("X-Amz-Target"))
	res, err := http.DefaultClient.Do(up)
	if err != nil {
		kmsError(w, 500, "KMSInternalException", "local-kms: %v", err)
		return
	}
	defer res.Body.Close()
	out, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		kmsError(w, 500, "KMSInternalException", "local-kms: %v", err)
		return
	}
	if res.StatusCode != http.StatusOK || pub == nil {
		w.Header().Set("Content-Type", res.Header.Get("Content-Type"))
		w.WriteHeader(res.StatusCode)
		w.Write(out)
		return
	}
	var answer map[string]any
	if err := json.Unmarshal(out, &answer); err != nil {
		kmsError(w, 500, "KMSInternalException", "local-kms answer: %v", err)
		return
	}
	ptB64, _ := answer["Plaintext"].(string)
	pt, err := base64.StdEncoding.DecodeString(ptB64)
	if err != nil || len(pt) == 0 {
		kmsError(w, 500, "KMSInternalException", "local-kms answered without a Plaintext")
		return
	}
	if m == ForAnotherKey {
		other, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			kmsError(w, 500, "KMSInternalException", "%v", err)
			return
		}
		pub = &other.PublicKey
	}
	env, err := kmsrecipient.Encrypt(pt, pub, rand.Reader)
	if err != nil {
		kmsError(w, 500, "KMSInternalException", "%v", err)
		return
	}
	if m == WrongEnvelope {
		// A ContentInfo of type id-data (1.2.840.113549.1.7.1) instead of
		// id-envelopedData: the right length, the wrong shape.
		env = bytes.Replace(env, []byte{0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03}, []byte{0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01}, 1)
	}
	switch m {
	case AnswerInClear:
		answer["CiphertextForRecipient"] = env
	case IgnoreRecipient:
	default:
		delete(answer, "Plaintext")
		answer["CiphertextForRecipient"] = env
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	json.NewEncoder(w).Encode(answer)
}

// checkDocument verifies an attestation document as KMS does for a Recipient
// and applies the key policy. It returns the document's RSA public key, or the
// KMS error type and why.
func (s *Server) checkDocument(doc []byte) (*rsa.PublicKey, string, error) {
	if len(doc) == 0 || len(doc) > 64<<10 {
		return nil, "ValidationException", fmt.Errorf("attestation document of %d bytes", len(doc))
	}
	s.mu.Lock()
	roots := s.opts.Roots
	s.mu.Unlock()
	res, err := verify(doc, nitrite.VerifyOptions{Roots: roots, CurrentTime: s.opts.Now()})
	if err != nil {
		return nil, "ValidationException", fmt.Errorf("the attestation document does not verify: %v", err)
	}
	d := res.Document
	if allZero(d.PCRs[0]) && allZero(d.PCRs[1]) && allZero(d.PCRs[2]) {
		return nil, "AccessDeniedException", fmt.Errorf("a debug-mode enclave (all-zero PCRs) is denied by the key policy")
	}
	s.mu.Lock()
	pcrs := clonePCRs(s.pcrs)
	s.mu.Unlock()
	idx := make([]int, 0, len(pcrs))
	for i := range pcrs {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	for _, i := range idx {
		got := d.PCRs[uint(i)]
		if !bytes.Equal(got, pcrs[i]) {
			key := fmt.Sprintf("kms:RecipientAttestation:PCR%d", i)
			if i == 0 {
				key = "kms:RecipientAttestation:ImageSha384"
			}
			return nil, "AccessDeniedException", fmt.Errorf("%s is %s; the key policy allows %s", key, hex.EncodeToString(got), hex.EncodeToString(pcrs[i]))
		}
	}
	k, err := x509.ParsePKIXPublicKey(d.PublicKey)
	if err != nil {
		return nil, "ValidationException", fmt.Errorf("the document's public_key is not a SubjectPublicKeyInfo: %v", err)
	}
	pub, ok := k.(*rsa.PublicKey)
	if !ok || pub.N.BitLen() < 2048 {
		return nil, "ValidationException", fmt.Errorf("the document's public_key is not an RSA key of at least 2048 bits")
	}
	return pub, "", nil
}

// verify calls nitrite.Verify, which panics on some hostile documents, and
// turns a panic into an error. nitrite returns a result with its errors: the
// error is what counts.
func verify(doc []byte, opts nitrite.VerifyOptions) (res *nitrite.Result, err error) {
	defer func() {
		if r := recover(); r != nil {
			res, err = nil, fmt.Errorf("nitrite panicked: %v", r)
		}
	}()
	res, err = nitrite.Verify(doc, opts)
	if err == nil && (res == nil || res.Document == nil) {
		err = fmt.Errorf("no document")
	}
	return res, err
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
