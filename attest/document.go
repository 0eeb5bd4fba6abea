package attest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/hf/nitrite"
)

// MaxDocumentSize bounds an attestation document. A real one is about 4.5 KiB;
// nitrite allows at most 1024 bytes per certificate.
const MaxDocumentSize = 64 << 10

// DocumentOptions say what to trust and what to expect of a document.
type DocumentOptions struct {
	// Roots are the trusted roots; nil means the embedded AWS Nitro Enclaves
	// root G1 alone. The document's own cabundle root is never trusted.
	Roots *x509.CertPool
	// RootName names Roots in the report (default AWSRootName, or "the
	// given root" when Roots is set).
	RootName string

	// At is when to verify: certificate validity and the document's age are
	// judged at At. Zero means time.Now().
	At time.Time
	// AtDocument verifies at the document's own timestamp instead, for
	// archived documents; then MaxAge is not applied.
	AtDocument bool
	// MaxAge is the oldest a document may be at At (0: no limit).
	MaxAge time.Duration
	// MaxSkew is how far after At the document's timestamp may lie.
	MaxSkew time.Duration

	// Nonce, if not nil, is the nonce the verifier sent: the document must
	// echo it exactly. Nil skips the check (an offline document).
	Nonce []byte
	// PCRs are pinned values by index: each must be present and equal.
	PCRs map[uint][]byte
	// AllowDebug accepts a debug-mode enclave (PCR0, PCR1 and PCR2 all zero)
	// with a warning instead of failing.
	AllowDebug bool
}

// Document is what a verified attestation document says. It is only returned
// when the document could be decoded; whether it verified is in the Report.
type Document struct {
	ModuleID  string
	Timestamp time.Time
	PCRs      map[uint][]byte
	UserData  []byte
	Nonce     []byte
	PublicKey []byte
	// Leaf is the certificate whose key signed the document; CABundle the
	// other certificates it carries, root first.
	Leaf     *x509.Certificate
	CABundle []*x509.Certificate
}

// coseSign1 and payload mirror what nitrite decodes, with the same library, so
// that the leaf this package checks is the leaf nitrite uses.
type coseSign1 struct {
	_           struct{} `cbor:",toarray"`
	Protected   []byte
	Unprotected cbor.RawMessage
	Payload     []byte
	Signature   []byte
}

type payload struct {
	ModuleID    string          `cbor:"module_id"`
	Timestamp   uint64          `cbor:"timestamp"`
	Digest      string          `cbor:"digest"`
	PCRs        map[uint][]byte `cbor:"pcrs"`
	Certificate []byte          `cbor:"certificate"`
	CABundle    [][]byte        `cbor:"cabundle"`
	PublicKey   []byte          `cbor:"public_key"`
	UserData    []byte          `cbor:"user_data"`
	Nonce       []byte          `cbor:"nonce"`
}

// DecodeDocumentFile returns the COSE_Sign1 bytes of a document file, which
// holds either the raw CBOR or its base64 (standard or URL alphabet, padded or
// not, whitespace ignored).
func DecodeDocumentFile(b []byte) ([]byte, error) {
	if len(b) > 2*MaxDocumentSize {
		return nil, fmt.Errorf("document file is larger than %d bytes", 2*MaxDocumentSize)
	}
	// A COSE_Sign1 starts with a 4-element array (0x84) or tag 18 (0xd2);
	// neither is a base64 character.
	if len(b) > 0 && (b[0] == 0x84 || b[0] == 0xd2) {
		return b, nil
	}
	s := strings.Map(func(r rune) rune {
		if r == ' ' || r == '\n' || r == '\r' || r == '\t' {
			return -1
		}
		return r
	}, string(b))
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if raw, err := enc.DecodeString(s); err == nil && len(raw) > 0 {
			return raw, nil
		}
	}
	return nil, errors.New("document file is neither a CBOR COSE_Sign1 nor base64 of one")
}

// decodeLeaf decodes the document far enough to find its leaf certificate and
// rejects a leaf key other than ECDSA P-384, the only one Nitro uses (nitrite
// panics on P-521).
func decodeLeaf(raw []byte) (*payload, *x509.Certificate, error) {
	if len(raw) > MaxDocumentSize {
		return nil, nil, fmt.Errorf("the document is %d bytes, more than %d", len(raw), MaxDocumentSize)
	}
	var cose coseSign1
	if err := cbor.Unmarshal(raw, &cose); err != nil {
		return nil, nil, fmt.Errorf("not a CBOR COSE_Sign1 array: %v", err)
	}
	var p payload
	if err := cbor.Unmarshal(cose.Payload, &p); err != nil {
		return nil, nil, fmt.Errorf("the COSE payload is not an attestation document map: %v", err)
	}
	if len(p.Certificate) == 0 {
		return nil, nil, errors.New("the document has no leaf certificate")
	}
	leaf, err := x509.ParseCertificate(p.Certificate)
	if err != nil {
		return nil, nil, fmt.Errorf("the leaf certificate does not parse: %v", err)
	}
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return nil, nil, fmt.Errorf("the leaf key is %v, not ECDSA P-384 as Nitro's", leaf.PublicKeyAlgorithm)
	}
	if pub.Curve != elliptic.P384() {
		return nil, nil, fmt.Errorf("the leaf key is ECDSA %s, not P-384 as Nitro's", pub.Curve.Params().Name)
	}
	return &p, leaf, nil
}

// callNitrite calls nitrite.Verify and turns a panic into an error.
func callNitrite(raw []byte, opts nitrite.VerifyOptions) (res *nitrite.Result, err error, panicked error) {
	defer func() {
		if r := recover(); r != nil {
			res, err, panicked = nil, nil, fmt.Errorf("nitrite panicked: %v", r)
		}
	}()
	res, err = nitrite.Verify(raw, opts)
	return res, err, nil
}

// VerifyDocument verifies an attestation document: its format and leaf key,
// the COSE signature, the chain to the trusted root at the verification time,
// its age, the nonce, the pinned PCRs and that it is not from a debug-mode
// enclave. It checks nothing about user_data: see [VerifyManifest].
//
// The returned Document is nil when the document could not be decoded; it is
// not nil for a document that decoded but failed a check.
func VerifyDocument(raw []byte, opts DocumentOptions) (*Document, Report) {
	var r Report
	p, leaf, err := decodeLeaf(raw)
	if err != nil {
		r.fail("document", "%v", err)
		return nil, r
	}
	ts := time.UnixMilli(int64(min(p.Timestamp, 1<<62)))
	at := opts.At
	if opts.AtDocument {
		at = ts
	}
	if at.IsZero() {
		at = time.Now()
	}
	roots, rootName := opts.Roots, opts.RootName
	if roots == nil {
		roots = AWSRootPool()
		if rootName == "" {
			rootName = AWSRootName
		}
	}
	if rootName == "" {
		rootName = "the given root"
	}

	res, nerr, panicked := callNitrite(raw, nitrite.VerifyOptions{Roots: roots, CurrentTime: at})
	switch {
	case panicked != nil:
		r.fail("document", "%v", panicked)
		return nil, r
	case res == nil || res.Document == nil:
		r.fail("document", "not a valid Nitro attestation document: %v", nerr)
		return nil, r
	case !bytes.Equal(res.Document.Certificate, leaf.Raw):
		r.fail("document", "the leaf certificate nitrite used is not the one this verifier checked")
		return nil, r
	}
	d := &Document{
		ModuleID: p.ModuleID, Timestamp: ts, PCRs: res.Document.PCRs,
		UserData: res.Document.UserData, Nonce: res.Document.Nonce, PublicKey: res.Document.PublicKey,
		Leaf: leaf, CABundle: res.Certificates[1:],
	}
	r.pass("document", "COSE_Sign1 ES384, module_id %s, timestamp %s, %d PCRs, leaf P-384", d.ModuleID, ts.UTC().Format(time.RFC3339Nano), len(d.PCRs))

	if res.SignatureOK {
		r.pass("signature", "ES384 over the document by the leaf key (%s)", leaf.Subject.CommonName)
	} else {
		r.fail("signature", "the COSE signature does not verify with the leaf's key: the document was altered or not signed by its leaf")
	}

	atText := at.UTC().Format(time.RFC3339)
	if opts.AtDocument {
		atText += " (the document's own time)"
	}
	var uae x509.UnknownAuthorityError
	var cie x509.CertificateInvalidError
	switch {
	case nerr == nil || errors.Is(nerr, nitrite.ErrBadSignature):
		r.pass("chain", "leaf → %d cabundle certificates → %s, valid at %s", len(d.CABundle), rootName, atText)
	case errors.As(nerr, &uae):
		if opts.Roots == nil {
			r.fail("chain", "the chain does not lead to the %s, so the document is not AWS's (a simulated document needs --root): %v", rootName, nerr)
		} else {
			r.fail("chain", "the chain does not lead to %s: %v", rootName, nerr)
		}
	case errors.As(nerr, &cie) && cie.Reason == x509.Expired:
		r.fail("chain", "a certificate is expired or not yet valid at %s: %v", atText, nerr)
	default:
		r.fail("chain", "%v", nerr)
	}

	age := at.Sub(ts)
	switch {
	case opts.AtDocument:
		r.pass("age", "verified at the document's own time; no age limit")
	case age < -opts.MaxSkew:
		r.fail("age", "the document's timestamp %s is %s after the verification time %s (allowed skew %s)", ts.UTC().Format(time.RFC3339), (-age).Round(time.Millisecond), atText, opts.MaxSkew)
	case opts.MaxAge > 0 && age > opts.MaxAge:
		r.fail("age", "the document is %s old at %s, more than the %s allowed: a stale or replayed document (an archived one is verified at its own time: --at document)", age.Round(time.Second), atText, opts.MaxAge)
	case opts.MaxAge > 0:
		r.pass("age", "%s old at %s (at most %s)", age.Round(time.Millisecond), atText, opts.MaxAge)
	default:
		r.pass("age", "%s old at %s; no age limit", age.Round(time.Second), atText)
	}

	switch {
	case opts.Nonce == nil:
		r.skip("nonce", "no nonce was sent (offline document): freshness rests on the timestamp alone; document nonce %s", hexOrNull(d.Nonce))
	case bytes.Equal(d.Nonce, opts.Nonce):
		r.pass("nonce", "%s = the nonce sent", hex.EncodeToString(d.Nonce))
	default:
		r.fail("nonce", "the document's nonce %s is not the nonce sent, %s: a replayed or substituted document", hexOrNull(d.Nonce), hex.EncodeToString(opts.Nonce))
	}

	for _, i := range slices.Sorted(maps.Keys(opts.PCRs)) {
		name := fmt.Sprintf("pcr%d", i)
		want := opts.PCRs[i]
		got, ok := d.PCRs[i]
		switch {
		case !ok:
			r.fail(name, "PCR%d is pinned to %x but the document has no PCR%d", i, want, i)
		case !bytes.Equal(got, want):
			r.fail(name, "PCR%d is %x, pinned %x: a different enclave image", i, got, want)
		default:
			r.pass(name, "%x = pinned", got)
		}
	}

	var missing []string
	zero := true
	for _, i := range []uint{0, 1, 2} {
		v, ok := d.PCRs[i]
		if !ok {
			missing = append(missing, fmt.Sprintf("PCR%d", i))
		}
		if !allZero(v) {
			zero = false
		}
	}
	switch {
	case len(missing) > 0:
		r.fail("debug mode", "the document lacks %s, which every Nitro document carries", strings.Join(missing, ", "))
	case zero && opts.AllowDebug:
		r.warn("debug mode", "PCR0, PCR1 and PCR2 are all zero: a debug-mode enclave, whose memory its host can read (allowed by --allow-debug)")
	case zero:
		r.fail("debug mode", "PCR0, PCR1 and PCR2 are all zero: a debug-mode enclave, whose memory its host can read")
	default:
		r.pass("debug mode", "PCR0, PCR1 and PCR2 are not all zero: not a debug-mode enclave")
	}
	return d, r
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func hexOrNull(b []byte) string {
	if b == nil {
		return "null"
	}
	return hex.EncodeToString(b)
}
