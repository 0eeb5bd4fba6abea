package kmsrecipient

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/asn1"
	"errors"
	"fmt"
)

// Object identifiers of the one envelope shape this package reads and writes.
var (
	oidEnvelopedData = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 3}
	oidData          = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidRSAESOAEP     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 7}
	oidMGF1          = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 8}
	oidPSpecified    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 9}
	oidSHA256        = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	oidAES256CBC     = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
)

// contentKeySize is the AES-256 key size.
const contentKeySize = 32

var (
	// ErrWrongRecipient means the envelope names another recipient key
	// (its SubjectKeyIdentifier is not the SHA-256 of this key's
	// SubjectPublicKeyInfo): KMS encrypted it for another enclave key.
	ErrWrongRecipient = errors.New("kmsrecipient: the envelope is for another recipient key")
	// ErrDecryption means the content key or the content did not decrypt:
	// a wrong key, or an envelope damaged in transit.
	ErrDecryption = errors.New("kmsrecipient: failed to decrypt the envelope: wrong key or damaged envelope")
)

// errTooMany is wrapped by fields when a value has more elements than allowed.
var errTooMany = errors.New("kmsrecipient: malformed envelope: too many fields")

// malformed returns an error about the envelope's structure.
func malformed(format string, a ...any) error {
	return fmt.Errorf("kmsrecipient: malformed envelope: "+format, a...)
}

// unsupported returns an error about a well-formed envelope this package
// refuses to open.
func unsupported(format string, a ...any) error {
	return fmt.Errorf("kmsrecipient: unsupported envelope: "+format, a...)
}

// Decrypt opens a KMS CiphertextForRecipient (a CMS EnvelopedData, BER or
// DER) with the recipient's private key and returns the plaintext. It
// accepts only the shape described in the package documentation and at most
// [MaxEnvelopeSize] bytes.
func Decrypt(envelope []byte, key *rsa.PrivateKey) ([]byte, error) {
	if key == nil {
		return nil, errors.New("kmsrecipient: no private key")
	}
	der, err := berToDER(envelope)
	if err != nil {
		return nil, err
	}
	env, err := parseEnvelope(der)
	if err != nil {
		return nil, err
	}
	if env.ski != nil {
		spki, err := PublicKeyDER(key)
		if err != nil {
			return nil, err
		}
		want := sha256.Sum256(spki)
		if !bytes.Equal(env.ski, want[:]) {
			return nil, ErrWrongRecipient
		}
	}
	if len(env.encryptedKey) != key.Size() {
		return nil, ErrDecryption
	}
	cek, err := rsa.DecryptOAEP(sha256.New(), nil, key, env.encryptedKey, nil)
	if err != nil {
		return nil, ErrDecryption
	}
	if len(cek) != contentKeySize {
		return nil, fmt.Errorf("%w: content key is %d bytes, want %d", ErrDecryption, len(cek), contentKeySize)
	}
	block, err := aes.NewCipher(cek)
	if err != nil {
		return nil, fmt.Errorf("kmsrecipient: failed to set up AES: %w", err)
	}
	pt := make([]byte, len(env.ciphertext))
	cipher.NewCBCDecrypter(block, env.iv).CryptBlocks(pt, env.ciphertext)
	return unpad(pt)
}

// envelope is the part of a parsed EnvelopedData that Decrypt needs.
type envelope struct {
	ski          []byte // nil for issuerAndSerialNumber
	encryptedKey []byte
	iv           []byte
	ciphertext   []byte
}

// parseEnvelope walks the DER ContentInfo.
func parseEnvelope(der []byte) (*envelope, error) {
	ci, err := parseOne(der)
	if err != nil {
		return nil, err
	}
	f, err := fields(ci, tagSequence, "ContentInfo", 2, 2)
	if err != nil {
		return nil, err
	}
	ct, err := parseOID(f[0], "ContentInfo contentType")
	if err != nil {
		return nil, err
	}
	if !ct.Equal(oidEnvelopedData) {
		return nil, unsupported("content type %v is not envelopedData (%v)", ct, oidEnvelopedData)
	}
	wrapped, err := fields(f[1], tagContext0Cons, "ContentInfo content [0]", 1, 1)
	if err != nil {
		return nil, err
	}

	ed, err := fields(wrapped[0], tagSequence, "EnvelopedData", 3, 5)
	if err != nil {
		return nil, err
	}
	if len(ed) != 3 {
		// [0] originatorInfo or [1] unprotectedAttrs: KMS sends neither.
		return nil, unsupported("EnvelopedData has %d fields; originatorInfo and unprotectedAttrs are not accepted", len(ed))
	}
	version, err := parseSmallInt(ed[0], "EnvelopedData version")
	if err != nil {
		return nil, err
	}
	ris, err := fields(ed[1], tagSet, "recipientInfos", 0, 1)
	if errors.Is(err, errTooMany) {
		return nil, unsupported("several recipients; want exactly one")
	}
	if err != nil {
		return nil, err
	}
	if len(ris) != 1 {
		return nil, unsupported("no recipient")
	}
	env := &envelope{}
	riVersion, err := parseRecipient(ris[0], env)
	if err != nil {
		return nil, err
	}
	if version != riVersion {
		return nil, malformed("EnvelopedData version %d with a version %d recipient", version, riVersion)
	}
	if err := parseContent(ed[2], env); err != nil {
		return nil, err
	}
	return env, nil
}

// parseRecipient reads a KeyTransRecipientInfo into env and returns its
// version.
func parseRecipient(ri asn1.RawValue, env *envelope) (int, error) {
	if ri.Class != asn1.ClassUniversal || ri.Tag != asn1.TagSequence {
		// [1] kari, [2] kekri, [3] pwri, [4] ori.
		return 0, unsupported("recipient is not a KeyTransRecipientInfo (tag [%d] class %d)", ri.Tag, ri.Class)
	}
	f, err := fields(ri, tagSequence, "KeyTransRecipientInfo", 4, 4)
	if err != nil {
		return 0, err
	}
	version, err := parseSmallInt(f[0], "KeyTransRecipientInfo version")
	if err != nil {
		return 0, err
	}
	rid := f[1]
	switch {
	case rid.Class == asn1.ClassContextSpecific && rid.Tag == 0 && !rid.IsCompound:
		if version != 2 {
			return 0, malformed("subjectKeyIdentifier recipient with version %d, want 2", version)
		}
		if len(rid.Bytes) == 0 {
			return 0, malformed("empty subjectKeyIdentifier")
		}
		env.ski = rid.Bytes
	case rid.Class == asn1.ClassUniversal && rid.Tag == asn1.TagSequence && rid.IsCompound:
		// IssuerAndSerialNumber: there is no certificate to compare it with;
		// the OAEP decryption decides.
		if version != 0 {
			return 0, malformed("issuerAndSerialNumber recipient with version %d, want 0", version)
		}
	default:
		return 0, unsupported("recipient identifier (tag [%d] class %d) is neither a subjectKeyIdentifier nor an issuerAndSerialNumber", rid.Tag, rid.Class)
	}
	if err := checkOAEP(f[2]); err != nil {
		return 0, err
	}
	if err := primitive(f[3], asn1.TagOctetString, "encryptedKey"); err != nil {
		return 0, err
	}
	env.encryptedKey = f[3].Bytes
	return version, nil
}

// checkOAEP accepts exactly RSAES-OAEP with SHA-256, MGF1-SHA-256 and an
// empty label: what KMS uses (RSAES_OAEP_SHA_256).
func checkOAEP(alg asn1.RawValue) error {
	oid, params, err := algorithm(alg, "keyEncryptionAlgorithm")
	if err != nil {
		return err
	}
	if !oid.Equal(oidRSAESOAEP) {
		return unsupported("key encryption algorithm %v is not RSAES-OAEP (%v)", oid, oidRSAESOAEP)
	}
	if params == nil {
		return unsupported("RSAES-OAEP without parameters means SHA-1; want SHA-256")
	}
	p, err := fields(*params, tagSequence, "RSAES-OAEP-params", 0, 3)
	if err != nil {
		return err
	}
	// DEFAULTs are SHA-1 and MGF1-SHA-1, so hashAlgorithm [0] and
	// maskGenAlgorithm [1] must both be present; pSourceAlgorithm [2] may be
	// absent (empty label) or an explicitly empty label.
	var hash, mgf, psrc *asn1.RawValue
	next := 0
	for i := range p {
		e := &p[i]
		if e.Class != asn1.ClassContextSpecific || !e.IsCompound || e.Tag < next || e.Tag > 2 {
			return malformed("RSAES-OAEP-params field %d (tag [%d] class %d)", i, e.Tag, e.Class)
		}
		next = e.Tag + 1
		switch e.Tag {
		case 0:
			hash = e
		case 1:
			mgf = e
		case 2:
			psrc = e
		}
	}
	if hash == nil {
		return unsupported("RSAES-OAEP with the default hash SHA-1; want SHA-256")
	}
	if mgf == nil {
		return unsupported("RSAES-OAEP with the default mask generation MGF1-SHA-1; want MGF1-SHA-256")
	}
	if err := checkSHA256(*hash, "OAEP hash"); err != nil {
		return err
	}
	inner, err := explicit(*mgf, "OAEP maskGenAlgorithm")
	if err != nil {
		return err
	}
	mgfOID, mgfParams, err := algorithm(inner, "OAEP maskGenAlgorithm")
	if err != nil {
		return err
	}
	if !mgfOID.Equal(oidMGF1) {
		return unsupported("OAEP mask generation %v is not MGF1 (%v)", mgfOID, oidMGF1)
	}
	if mgfParams == nil {
		return malformed("MGF1 without a hash algorithm")
	}
	if err := checkHashAlgorithm(*mgfParams, "MGF1 hash"); err != nil {
		return err
	}
	if psrc != nil {
		inner, err := explicit(*psrc, "OAEP pSourceAlgorithm")
		if err != nil {
			return err
		}
		pOID, pParams, err := algorithm(inner, "OAEP pSourceAlgorithm")
		if err != nil {
			return err
		}
		if !pOID.Equal(oidPSpecified) || pParams == nil {
			return unsupported("OAEP pSourceAlgorithm %v; want pSpecified (%v) with an empty label", pOID, oidPSpecified)
		}
		if err := primitive(*pParams, asn1.TagOctetString, "OAEP label"); err != nil {
			return err
		}
		if len(pParams.Bytes) != 0 {
			return unsupported("OAEP with a %d-byte label; want an empty label", len(pParams.Bytes))
		}
	}
	return nil
}

// checkSHA256 checks an EXPLICIT-tagged AlgorithmIdentifier for SHA-256.
func checkSHA256(tagged asn1.RawValue, what string) error {
	inner, err := explicit(tagged, what)
	if err != nil {
		return err
	}
	return checkHashAlgorithm(inner, what)
}

// checkHashAlgorithm checks an AlgorithmIdentifier for SHA-256 with NULL or
// absent parameters.
func checkHashAlgorithm(alg asn1.RawValue, what string) error {
	oid, params, err := algorithm(alg, what)
	if err != nil {
		return err
	}
	if !oid.Equal(oidSHA256) {
		return unsupported("%s %v is not SHA-256 (%v)", what, oid, oidSHA256)
	}
	if params != nil && (params.Class != asn1.ClassUniversal || params.Tag != asn1.TagNull || len(params.Bytes) != 0) {
		return malformed("%s parameters are not NULL", what)
	}
	return nil
}

// parseContent reads the EncryptedContentInfo: id-data, AES-256-CBC with a
// 16-byte IV, and the encrypted content.
func parseContent(v asn1.RawValue, env *envelope) error {
	f, err := fields(v, tagSequence, "EncryptedContentInfo", 2, 3)
	if err != nil {
		return err
	}
	ct, err := parseOID(f[0], "EncryptedContentInfo contentType")
	if err != nil {
		return err
	}
	if !ct.Equal(oidData) {
		return unsupported("encrypted content type %v is not data (%v)", ct, oidData)
	}
	oid, params, err := algorithm(f[1], "contentEncryptionAlgorithm")
	if err != nil {
		return err
	}
	if !oid.Equal(oidAES256CBC) {
		return unsupported("content encryption algorithm %v is not AES-256-CBC (%v)", oid, oidAES256CBC)
	}
	if params == nil {
		return malformed("AES-256-CBC without an IV")
	}
	if err := primitive(*params, asn1.TagOctetString, "AES-256-CBC IV"); err != nil {
		return err
	}
	if len(params.Bytes) != aes.BlockSize {
		return malformed("AES-256-CBC IV of %d bytes, want %d", len(params.Bytes), aes.BlockSize)
	}
	env.iv = params.Bytes
	if len(f) != 3 {
		return unsupported("no encryptedContent (detached content)")
	}
	ec := f[2]
	if ec.Class != asn1.ClassContextSpecific || ec.Tag != 0 {
		return malformed("encryptedContent has tag [%d] class %d, want [0]", ec.Tag, ec.Class)
	}
	if !ec.IsCompound {
		env.ciphertext = ec.Bytes
	} else {
		// [0] IMPLICIT over a constructed OCTET STRING: join the chunks.
		// The normaliser's header reader walks them; asn1.Unmarshal would
		// allocate for each of what may be thousands of chunks.
		ct := make([]byte, 0, len(ec.Bytes))
		for rest := ec.Bytes; len(rest) > 0; {
			tag, n, h, err := header(rest)
			if err != nil {
				return err
			}
			if tag != tagOctetString || n < 0 {
				return malformed("encryptedContent chunk has identifier 0x%02x, want a primitive OCTET STRING", tag)
			}
			ct = append(ct, rest[h:h+n]...)
			rest = rest[h+n:]
		}
		env.ciphertext = ct
	}
	if len(env.ciphertext) == 0 || len(env.ciphertext)%aes.BlockSize != 0 {
		return malformed("encrypted content of %d bytes is not a positive multiple of %d", len(env.ciphertext), aes.BlockSize)
	}
	return nil
}

// unpad removes PKCS#7 padding. It looks at the last block whatever the
// padding length, and does not branch on the padding bytes until the end.
func unpad(b []byte) ([]byte, error) {
	n := len(b)
	if n == 0 || n%aes.BlockSize != 0 {
		return nil, ErrDecryption
	}
	p := int(b[n-1])
	good := subtle.ConstantTimeLessOrEq(1, p) & subtle.ConstantTimeLessOrEq(p, aes.BlockSize)
	for i := 0; i < aes.BlockSize; i++ {
		inPad := subtle.ConstantTimeLessOrEq(i+1, p)
		same := subtle.ConstantTimeByteEq(b[n-1-i], byte(p))
		good &= same | (inPad ^ 1)
	}
	if good != 1 {
		return nil, fmt.Errorf("%w: bad PKCS#7 padding", ErrDecryption)
	}
	return b[:n-p], nil
}

// parseOne parses the single DER value that spans all of der.
func parseOne(der []byte) (asn1.RawValue, error) {
	var v asn1.RawValue
	rest, err := asn1.Unmarshal(der, &v)
	if err != nil {
		return v, malformed("%v", err)
	}
	if len(rest) != 0 {
		return v, malformed("%d trailing bytes", len(rest))
	}
	return v, nil
}

// fields checks that v has the given identifier octet and returns its
// elements, refusing fewer than lo or more than hi of them.
func fields(v asn1.RawValue, tag byte, what string, lo, hi int) ([]asn1.RawValue, error) {
	if !is(v, tag) {
		return nil, malformed("%s has tag [%d] class %d compound %v, want identifier 0x%02x", what, v.Tag, v.Class, v.IsCompound, tag)
	}
	var out []asn1.RawValue
	rest := v.Bytes
	for len(rest) > 0 {
		if len(out) == hi {
			return nil, fmt.Errorf("%w: %s has more than %d", errTooMany, what, hi)
		}
		var e asn1.RawValue
		var err error
		rest, err = asn1.Unmarshal(rest, &e)
		if err != nil {
			return nil, malformed("%s: %v", what, err)
		}
		out = append(out, e)
	}
	if len(out) < lo {
		return nil, malformed("%s has %d fields, want at least %d", what, len(out), lo)
	}
	return out, nil
}

// is reports whether v's identifier octet is tag (low tag numbers only).
func is(v asn1.RawValue, tag byte) bool {
	return v.Class == int(tag>>6) && v.IsCompound == (tag&constructedBit != 0) && v.Tag == int(tag&0x1f)
}

// explicit unwraps an EXPLICIT context tag holding one value.
func explicit(v asn1.RawValue, what string) (asn1.RawValue, error) {
	if v.Class != asn1.ClassContextSpecific || v.Tag > 30 {
		return asn1.RawValue{}, malformed("%s is not a context-specific tag", what)
	}
	f, err := fields(v, 0xa0|byte(v.Tag), what, 1, 1)
	if err != nil {
		return asn1.RawValue{}, err
	}
	return f[0], nil
}

// algorithm reads an AlgorithmIdentifier: its OID and its parameters (nil
// when absent).
func algorithm(v asn1.RawValue, what string) (asn1.ObjectIdentifier, *asn1.RawValue, error) {
	f, err := fields(v, tagSequence, what, 1, 2)
	if err != nil {
		return nil, nil, err
	}
	oid, err := parseOID(f[0], what)
	if err != nil {
		return nil, nil, err
	}
	if len(f) == 1 {
		return oid, nil, nil
	}
	return oid, &f[1], nil
}

// primitive checks that v is a primitive universal value with the given tag.
func primitive(v asn1.RawValue, tag int, what string) error {
	if v.Class != asn1.ClassUniversal || v.Tag != tag || v.IsCompound {
		return malformed("%s has tag [%d] class %d, want universal %d", what, v.Tag, v.Class, tag)
	}
	return nil
}

func parseOID(v asn1.RawValue, what string) (asn1.ObjectIdentifier, error) {
	if err := primitive(v, asn1.TagOID, what); err != nil {
		return nil, err
	}
	var oid asn1.ObjectIdentifier
	if _, err := asn1.Unmarshal(v.FullBytes, &oid); err != nil {
		return nil, malformed("%s: %v", what, err)
	}
	return oid, nil
}

// parseSmallInt reads a CMS version: an INTEGER from 0 to 4.
func parseSmallInt(v asn1.RawValue, what string) (int, error) {
	if err := primitive(v, asn1.TagInteger, what); err != nil {
		return 0, err
	}
	var n int
	if _, err := asn1.Unmarshal(v.FullBytes, &n); err != nil {
		return 0, malformed("%s: %v", what, err)
	}
	if n < 0 || n > 4 {
		return 0, malformed("%s %d is not a CMS version", what, n)
	}
	return n, nil
}
