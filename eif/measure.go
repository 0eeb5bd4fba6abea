package eif

import (
	"crypto/sha512"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"github.com/fxamacker/cbor/v2"
)

// HashAlgorithm is the "HashAlgorithm" value nitro-cli prints: Rust's Debug formatting of the
// sha2 crate's Sha384 hasher.
const HashAlgorithm = "Sha384 { ... }"

// Measurements are an EIF's PCRs as nitro-cli prints them: lowercase hex of 48-byte SHA-384 values.
//
// Its JSON is exactly the "Measurements" object of `nitro-cli build-enclave` and `nitro-cli
// describe-eif` (keys in nitro-cli's order; PCR8 only for a signed image). Unmarshalling it checks
// what ParseMeasurementsJSON checks.
type Measurements struct {
	HashAlgorithm string `json:"HashAlgorithm"`
	PCR0          string `json:"PCR0"`           // kernel, cmdline and every ramdisk
	PCR1          string `json:"PCR1"`           // kernel, cmdline and the first ramdisk
	PCR2          string `json:"PCR2"`           // every ramdisk after the first
	PCR8          string `json:"PCR8,omitempty"` // the signing certificate (DER); empty when unsigned
}

// Measurements computes the image's PCRs. Each is SHA384(48 zero bytes ‖ SHA384(content)), the
// content being the concatenated section data in file order (headers excluded):
//
//	PCR0: kernel ‖ cmdline ‖ every ramdisk
//	PCR1: kernel ‖ cmdline ‖ first ramdisk
//	PCR2: every ramdisk after the first (SHA384 of nothing when there is one ramdisk)
//	PCR8: the DER of the first signature entry's certificate, only when the image is signed
//
// It fails only if the signature section cannot be decoded (see DecodeSignature) or its
// certificate is not a PEM X.509 certificate.
func (im *Image) Measurements() (Measurements, error) {
	if im.r == nil {
		return Measurements{}, errors.New("eif: Measurements called on an Image that Parse did not return")
	}
	m := Measurements{
		HashAlgorithm: HashAlgorithm,
		PCR0:          extendHex(im.image),
		PCR1:          extendHex(im.bootstrap),
		PCR2:          extendHex(im.app),
	}
	if im.signature != nil {
		der, err := im.SigningCertificate()
		if err != nil {
			return Measurements{}, err
		}
		m.PCR8 = extendHex(sha512.Sum384(der))
	}
	return m, nil
}

// SigningCertificate returns the DER of the certificate PCR8 measures: that of the first entry of
// the signature section. It fails if the image is unsigned.
func (im *Image) SigningCertificate() ([]byte, error) {
	if im.signature == nil {
		return nil, errors.New("eif: the image is not signed (it has no signature section)")
	}
	sigs, err := DecodeSignature(im.signature)
	if err != nil {
		return nil, err
	}
	der, err := certificateDER(sigs[0].SigningCertificate)
	if err != nil {
		return nil, fmt.Errorf("eif: signature section: %w", err)
	}
	return der, nil
}

// extendHex is a TPM-style extend of a zeroed SHA-384 PCR with digest d (the reference's
// EifHasher::tpm_extend_finalize_reset), as lowercase hex.
func extendHex(d [sha384Size]byte) string {
	var buf [2 * sha384Size]byte // 48 zero bytes, then d
	copy(buf[sha384Size:], d[:])
	pcr := sha512.Sum384(buf[:])
	return hex.EncodeToString(pcr[:])
}

// certificateDER returns the DER of the first CERTIFICATE block of pemBytes, as OpenSSL's
// X509::from_pem(...).to_der() would. It insists on a certificate Go's x509 parser accepts, which
// is strict DER: for such a certificate OpenSSL's re-encoding returns the same bytes.
func certificateDER(pemBytes []byte) ([]byte, error) {
	rest := pemBytes
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, errors.New("the signing certificate is not a PEM CERTIFICATE block")
		}
		if b.Type != "CERTIFICATE" && b.Type != "X509 CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("failed to parse the signing certificate: %w", err)
		}
		return c.Raw, nil
	}
}

// PCRSignature is one entry of the signature section (PcrSignature in src/defs/mod.rs).
type PCRSignature struct {
	SigningCertificate []byte // the PEM certificate, as given to nitro-cli
	Signature          []byte // a serialized COSE_Sign1 over the CBOR of {register_index, register_value}
}

const (
	keyCert = "signing_certificate"
	keySig  = "signature"
)

var sigDecMode = func() cbor.DecMode {
	m, err := cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF, // serde rejects a duplicate field
		MaxNestedLevels:  4,
		MaxArrayElements: MaxSignatureSize,
		MaxMapPairs:      16,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return m
}()

// DecodeSignature decodes signature section data as the reference does (serde_cbor into
// Vec<PcrSignature>): a CBOR array of maps with text keys "signing_certificate" and "signature",
// each an array of unsigned integers 0-255 (serde's encoding of Vec<u8>, not a CBOR byte string).
// Other keys are ignored, as serde ignores unknown fields. The array must not be empty, since
// the first entry is the one PCR8 measures.
func DecodeSignature(b []byte) ([]PCRSignature, error) {
	var raw []map[string]cbor.RawMessage
	if err := sigDecMode.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("eif: failed to decode the signature section as CBOR: %w", err)
	}
	if len(raw) == 0 {
		return nil, errors.New("eif: the signature section holds no signature")
	}
	out := make([]PCRSignature, len(raw))
	for i, entry := range raw {
		var err error
		if out[i].SigningCertificate, err = byteArray(entry, keyCert); err != nil {
			return nil, fmt.Errorf("eif: signature entry %d: %w", i, err)
		}
		if out[i].Signature, err = byteArray(entry, keySig); err != nil {
			return nil, fmt.Errorf("eif: signature entry %d: %w", i, err)
		}
	}
	return out, nil
}

func byteArray(entry map[string]cbor.RawMessage, key string) ([]byte, error) {
	v, ok := entry[key]
	if !ok {
		return nil, fmt.Errorf("no %q field", key)
	}
	if len(v) == 0 || v[0]>>5 != 4 { // CBOR major type 4: array
		return nil, fmt.Errorf("field %q is not an array of bytes", key)
	}
	var b []byte
	if err := sigDecMode.Unmarshal(v, &b); err != nil {
		return nil, fmt.Errorf("field %q: %w", key, err)
	}
	if b == nil {
		b = []byte{}
	}
	return b, nil
}

// EncodeSignature encodes signature section data the way the reference's serde_cbor::to_vec of a
// Vec<PcrSignature> does, for Write.
func EncodeSignature(sigs []PCRSignature) ([]byte, error) {
	if len(sigs) == 0 {
		return nil, errors.New("eif: no signature to encode")
	}
	type entry struct {
		Cert []uint16 `cbor:"signing_certificate"`
		Sig  []uint16 `cbor:"signature"`
	}
	widen := func(b []byte) []uint16 {
		w := make([]uint16, len(b))
		for i, c := range b {
			w[i] = uint16(c)
		}
		return w
	}
	es := make([]entry, len(sigs))
	for i, s := range sigs {
		es[i] = entry{widen(s.SigningCertificate), widen(s.Signature)}
	}
	b, err := cbor.Marshal(es) // struct fields in declaration order, integers in shortest form
	if err != nil {
		return nil, fmt.Errorf("eif: failed to encode the signature section: %w", err)
	}
	if len(b) > MaxSignatureSize {
		return nil, fmt.Errorf("eif: the signature section would be %d bytes, more than the format's %d", len(b), MaxSignatureSize)
	}
	return b, nil
}

// ParseMeasurementsJSON reads measurements printed by nitro-cli: either its whole output
// (`build-enclave` prints {"Measurements": {...}}, `describe-eif` adds "EifVersion", "IsSigned" and
// more beside it, which are ignored) or just the inner Measurements object.
//
// It is strict: "HashAlgorithm" must name SHA-384, PCR0, PCR1 and PCR2 must be present, PCR8 may
// be, no other key is allowed in the object, and every PCR must be exactly 96 hex digits (returned
// in lowercase).
func ParseMeasurementsJSON(b []byte) (Measurements, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		return Measurements{}, fmt.Errorf("eif: measurements are not a JSON object: %w", err)
	}
	inner := b
	if v, ok := top["Measurements"]; ok {
		inner = v
	}
	var m Measurements
	if err := json.Unmarshal(inner, &m); err != nil {
		return Measurements{}, err
	}
	return m, nil
}

// UnmarshalJSON decodes and checks the inner Measurements object (see ParseMeasurementsJSON).
// Keys are matched exactly (encoding/json alone would also take "pcr0").
func (m *Measurements) UnmarshalJSON(b []byte) error {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil {
		return fmt.Errorf("eif: measurements are not a JSON object: %w", err)
	}
	var p Measurements
	fields := map[string]*string{"HashAlgorithm": &p.HashAlgorithm, "PCR0": &p.PCR0, "PCR1": &p.PCR1, "PCR2": &p.PCR2, "PCR8": &p.PCR8}
	for k, v := range obj {
		dst, ok := fields[k]
		if !ok {
			return fmt.Errorf("eif: measurements have an unexpected key %q (want HashAlgorithm, PCR0, PCR1, PCR2 and optionally PCR8)", k)
		}
		if err := json.Unmarshal(v, dst); err != nil {
			return fmt.Errorf("eif: measurements: %s is not a string: %w", k, err)
		}
	}
	if !strings.HasPrefix(p.HashAlgorithm, "Sha384") {
		return fmt.Errorf("eif: measurements use hash algorithm %q; only Sha384 (nitro-cli's %q) is supported", p.HashAlgorithm, HashAlgorithm)
	}
	for _, f := range []struct {
		name     string
		v        *string
		optional bool
	}{{"PCR0", &p.PCR0, false}, {"PCR1", &p.PCR1, false}, {"PCR2", &p.PCR2, false}, {"PCR8", &p.PCR8, true}} {
		if _, present := obj[f.name]; !present && f.optional {
			continue
		}
		if err := checkPCRHex(*f.v); err != nil {
			return fmt.Errorf("eif: measurements: %s %w", f.name, err)
		}
		*f.v = strings.ToLower(*f.v)
	}
	*m = p
	return nil
}

func checkPCRHex(s string) error {
	if s == "" {
		return errors.New("is missing")
	}
	if len(s) != 2*sha384Size {
		return fmt.Errorf("is %d characters, want %d hex digits", len(s), 2*sha384Size)
	}
	if _, err := hex.DecodeString(s); err != nil {
		return fmt.Errorf("is not hex: %w", err)
	}
	return nil
}
