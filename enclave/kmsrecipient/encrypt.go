package kmsrecipient

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
)

// chunkSize is the size of the encryptedContent OCTET STRING chunks Encrypt
// writes.
const chunkSize = 1024

// Encrypt seals plaintext to pub the way KMS builds a CiphertextForRecipient:
// a fresh AES-256 content key and IV from rand, AES-256-CBC with PKCS#7
// padding, the content key wrapped with RSAES-OAEP-SHA-256 and MGF1-SHA-256,
// the recipient named by the SHA-256 of its SubjectPublicKeyInfo, all in BER
// with indefinite lengths and the content as a constructed OCTET STRING.
//
// It is for tests and for a KMS stand-in; the enclave only decrypts. It
// refuses a plaintext whose envelope would exceed [MaxEnvelopeSize].
func Encrypt(plaintext []byte, pub *rsa.PublicKey, rand io.Reader) ([]byte, error) {
	if pub == nil {
		return nil, errors.New("kmsrecipient: no public key")
	}
	// The envelope's fixed part is under 200 bytes plus the RSA block; a
	// generous margin keeps the check simple.
	if len(plaintext) > MaxEnvelopeSize-pub.Size()-1024 {
		return nil, fmt.Errorf("kmsrecipient: plaintext of %d bytes is too large for a %d-byte envelope", len(plaintext), MaxEnvelopeSize)
	}
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("kmsrecipient: failed to encode the public key: %w", err)
	}
	ski := sha256.Sum256(spki)

	secret := make([]byte, contentKeySize+aes.BlockSize)
	if _, err := io.ReadFull(rand, secret); err != nil {
		return nil, fmt.Errorf("kmsrecipient: failed to read randomness: %w", err)
	}
	cek, iv := secret[:contentKeySize], secret[contentKeySize:]
	encKey, err := rsa.EncryptOAEP(sha256.New(), rand, pub, cek, nil)
	if err != nil {
		return nil, fmt.Errorf("kmsrecipient: failed to wrap the content key: %w", err)
	}
	block, err := aes.NewCipher(cek)
	if err != nil {
		return nil, fmt.Errorf("kmsrecipient: failed to set up AES: %w", err)
	}
	ct := pad(plaintext)
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(ct, ct)

	e := sealed{
		contentType: oidEnvelopedData,
		version:     2,
		recipients:  [][]byte{keyTransRecipient(2, tlv(tagContext0, ski[:]), oaepSHA256(), encKey)},
		dataType:    oidData,
		contentAlg:  tlv(tagSequence, oidBytes(oidAES256CBC), tlv(tagOctetString, iv)),
		ciphertext:  ct,
	}
	return e.ber(), nil
}

// sealed holds the parts of an envelope for [sealed.ber].
type sealed struct {
	contentType asn1.ObjectIdentifier
	version     int
	recipients  [][]byte // DER RecipientInfos
	dataType    asn1.ObjectIdentifier
	contentAlg  []byte // DER AlgorithmIdentifier
	ciphertext  []byte
}

// ber encodes the envelope as KMS does: indefinite lengths on ContentInfo,
// its [0], EnvelopedData, EncryptedContentInfo and encryptedContent, the
// rest definite.
func (e sealed) ber() []byte {
	var chunks [][]byte
	for c := e.ciphertext; len(c) > 0; {
		n := min(len(c), chunkSize)
		chunks = append(chunks, tlv(tagOctetString, c[:n]))
		c = c[n:]
	}
	eci := indefinite(tagSequence,
		oidBytes(e.dataType),
		e.contentAlg,
		indefinite(tagContext0Cons, chunks...))
	ed := indefinite(tagSequence,
		tlv(tagInteger, []byte{byte(e.version)}),
		tlv(tagSet, e.recipients...),
		eci)
	return indefinite(tagSequence, oidBytes(e.contentType), indefinite(tagContext0Cons, ed))
}

// keyTransRecipient encodes a KeyTransRecipientInfo.
func keyTransRecipient(version int, rid, keyEncAlg, encKey []byte) []byte {
	return tlv(tagSequence, tlv(tagInteger, []byte{byte(version)}), rid, keyEncAlg, tlv(tagOctetString, encKey))
}

// oaepSHA256 is the keyEncryptionAlgorithm KMS writes: RSAES-OAEP with
// SHA-256 and MGF1-SHA-256 (pSourceAlgorithm left at its default, an empty
// label).
func oaepSHA256() []byte {
	return oaepAlg(oidSHA256, oidSHA256)
}

// oaepAlg encodes RSAES-OAEP with the given hash and MGF1 hash.
func oaepAlg(hash, mgfHash asn1.ObjectIdentifier) []byte {
	null := []byte{0x05, 0x00}
	return tlv(tagSequence, oidBytes(oidRSAESOAEP), tlv(tagSequence,
		tlv(0xa0, tlv(tagSequence, oidBytes(hash), null)),
		tlv(0xa1, tlv(tagSequence, oidBytes(oidMGF1), tlv(tagSequence, oidBytes(mgfHash), null)))))
}

// pad applies PKCS#7 padding to the AES block size, into a new slice.
func pad(b []byte) []byte {
	n := aes.BlockSize - len(b)%aes.BlockSize
	out := make([]byte, len(b)+n)
	copy(out, b)
	for i := len(b); i < len(out); i++ {
		out[i] = byte(n)
	}
	return out
}

// tlv encodes a definite-length value from its parts.
func tlv(tag byte, parts ...[]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	out := appendHeader(make([]byte, 0, n+5), tag, n)
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// indefinite encodes a constructed value with an indefinite length.
func indefinite(tag byte, parts ...[]byte) []byte {
	out := []byte{tag, 0x80}
	for _, p := range parts {
		out = append(out, p...)
	}
	return append(out, 0, 0)
}

func oidBytes(oid asn1.ObjectIdentifier) []byte {
	b, err := asn1.Marshal(oid)
	if err != nil {
		panic(err) // only constant OIDs reach here
	}
	return b
}
