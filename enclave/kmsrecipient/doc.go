// Package kmsrecipient opens what AWS KMS returns to an attested Nitro
// enclave: the CiphertextForRecipient of GenerateDataKey or Decrypt called
// with a Recipient.
//
// In nitro mode the enclave's seed is sealed by KMS. The enclave makes an
// RSA-2048 key pair that never leaves its memory ([GenerateKey]), puts the
// public key ([PublicKeyDER], a SubjectPublicKeyInfo) in the public_key field
// of an attestation document, and sends that document to KMS as the
// Recipient. KMS checks the document against the key policy (for example
// kms:RecipientAttestation:ImageSha384 = PCR0) and, instead of a plaintext,
// returns CiphertextForRecipient: the plaintext encrypted to that public key.
// The host relays the bytes and cannot read them. [Decrypt] opens them.
//
// Start with [Decrypt]; [Encrypt] exists for tests and for a KMS stand-in in
// simulated mode.
//
// # Format
//
// CiphertextForRecipient is a CMS (RFC 5652) ContentInfo holding an
// EnvelopedData, encoded in BER with indefinite lengths. This package
// accepts exactly this shape and refuses everything else:
//
//	ContentInfo ::= SEQUENCE {
//	    contentType  id-envelopedData (1.2.840.113549.1.7.3),
//	    content      [0] EXPLICIT EnvelopedData }
//
//	EnvelopedData ::= SEQUENCE {
//	    version               2 (0 with issuerAndSerialNumber),
//	    -- no originatorInfo
//	    recipientInfos        SET SIZE (1) OF KeyTransRecipientInfo,
//	    encryptedContentInfo  EncryptedContentInfo
//	    -- no unprotectedAttrs }
//
//	KeyTransRecipientInfo ::= SEQUENCE {
//	    version                 2 (0 with issuerAndSerialNumber),
//	    rid                     [0] IMPLICIT SubjectKeyIdentifier
//	                            (or IssuerAndSerialNumber),
//	    keyEncryptionAlgorithm  id-RSAES-OAEP (1.2.840.113549.1.1.7) with
//	                            RSAES-OAEP-params {
//	                                hashAlgorithm     [0] sha256,
//	                                maskGenAlgorithm  [1] mgf1 (1.2.840.113549.1.1.8) with sha256,
//	                                pSourceAlgorithm  [2] empty label (or absent) },
//	    encryptedKey            OCTET STRING (the 32-byte content key,
//	                            RSA-OAEP-SHA-256 encrypted) }
//
//	EncryptedContentInfo ::= SEQUENCE {
//	    contentType                 id-data (1.2.840.113549.1.7.1),
//	    contentEncryptionAlgorithm  aes256-CBC (2.16.840.1.101.3.4.1.42),
//	                                parameters: the 16-byte IV (OCTET STRING),
//	    encryptedContent            [0] IMPLICIT OCTET STRING
//	                                (primitive, or constructed from chunks) }
//
// The content is PKCS#7-padded to the AES block size.
//
// KMS sets the SubjectKeyIdentifier to the SHA-256 of the recipient's
// SubjectPublicKeyInfo DER (the bytes [PublicKeyDER] returns), so [Decrypt]
// can tell "this envelope is for another key" ([ErrWrongRecipient]) from
// "this envelope is damaged" ([ErrDecryption]) before any RSA operation.
// KMS only uses RSAES_OAEP_SHA_256 for recipients; SHA-1 OAEP, other content
// ciphers, several recipients, other CMS content types, originatorInfo and
// unprotectedAttrs are all refused.
//
// # Parsing
//
// [Decrypt] first rewrites the BER input as DER with a small bounded
// normaliser (indefinite lengths become definite, constructed OCTET STRINGs
// are joined, long-form lengths become minimal), then walks the DER with
// encoding/asn1, one element at a time, checking tag, class and element
// count at every step. Limits, all constants: the input is at most
// [MaxEnvelopeSize] bytes, nesting is at most [MaxDepth] levels, and the
// normalised DER is never longer than the input, so a hostile input cannot
// make Decrypt allocate more than a small multiple of its own size. Trailing
// bytes after the ContentInfo are refused. Padding is checked without
// branching on the padding bytes.
//
// The package runs inside the enclave: it imports only the standard library.
package kmsrecipient
