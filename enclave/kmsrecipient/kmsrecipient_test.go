package kmsrecipient

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// vector is testdata/kms-ciphertext-for-recipient.json.
type vector struct {
	Envelope  []byte
	Key       *rsa.PrivateKey
	Plaintext []byte
}

var loadVector = sync.OnceValues(func() (*vector, error) {
	b, err := os.ReadFile("testdata/kms-ciphertext-for-recipient.json")
	if err != nil {
		return nil, err
	}
	var j struct {
		Ciphertext string `json:"ciphertext_for_recipient_b64"`
		Key        string `json:"recipient_private_key_pkcs8_b64"`
		Plaintext  string `json:"plaintext"`
	}
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, err
	}
	env, err := base64.StdEncoding.DecodeString(j.Ciphertext)
	if err != nil {
		return nil, err
	}
	kb, err := base64.StdEncoding.DecodeString(j.Key)
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(kb)
	if err != nil {
		return nil, err
	}
	return &vector{Envelope: env, Key: k.(*rsa.PrivateKey), Plaintext: []byte(j.Plaintext)}, nil
})

func testVector(t testing.TB) *vector {
	t.Helper()
	v, err := loadVector()
	if err != nil {
		t.Fatalf("failed to load the test vector: %v", err)
	}
	return v
}

func TestRealKMSVector(t *testing.T) {
	v := testVector(t)
	if string(v.Plaintext) != "Hello, World" {
		t.Fatalf("vector plaintext %q", v.Plaintext)
	}
	got, err := Decrypt(v.Envelope, v.Key)
	if err != nil {
		t.Fatalf("Decrypt: %v", err)
	}
	if !bytes.Equal(got, v.Plaintext) {
		t.Fatalf("Decrypt = %q, want %q", got, v.Plaintext)
	}

	// The same envelope in DER opens too.
	der, err := berToDER(v.Envelope)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(der, v.Envelope) {
		t.Fatal("the vector is BER with indefinite lengths; its DER form must differ")
	}
	if got, err := Decrypt(der, v.Key); err != nil || !bytes.Equal(got, v.Plaintext) {
		t.Fatalf("Decrypt(DER) = %q, %v", got, err)
	}

	// KMS names the recipient by SHA-256 of its SubjectPublicKeyInfo.
	env, err := parseEnvelope(der)
	if err != nil {
		t.Fatal(err)
	}
	spki, err := PublicKeyDER(v.Key)
	if err != nil {
		t.Fatal(err)
	}
	if want := sha256.Sum256(spki); !bytes.Equal(env.ski, want[:]) {
		t.Fatalf("SKI %x, want SHA-256(SPKI) %x", env.ski, want)
	}
}

func TestEncryptDecryptRoundTrip(t *testing.T) {
	v := testVector(t)
	maxPlain := MaxEnvelopeSize - v.Key.Size() - 1024
	for _, n := range []int{0, 1, 12, 15, 16, 17, 32, chunkSize - 1, chunkSize, 3*chunkSize + 5, 4096, maxPlain} {
		pt := make([]byte, n)
		rand.Read(pt)
		env, err := Encrypt(pt, &v.Key.PublicKey, rand.Reader)
		if err != nil {
			t.Fatalf("Encrypt(%d bytes): %v", n, err)
		}
		if len(env) > MaxEnvelopeSize {
			t.Fatalf("Encrypt(%d bytes) made a %d-byte envelope, over the limit", n, len(env))
		}
		got, err := Decrypt(env, v.Key)
		if err != nil {
			t.Fatalf("Decrypt(Encrypt(%d bytes)): %v", n, err)
		}
		if !bytes.Equal(got, pt) {
			t.Fatalf("round trip of %d bytes changed the plaintext", n)
		}
	}
	if _, err := Encrypt(make([]byte, maxPlain+1), &v.Key.PublicKey, rand.Reader); err == nil {
		t.Fatal("Encrypt accepted a plaintext too large for an envelope")
	}
}

// TestEncryptShapeMatchesKMS checks that Encrypt writes the envelope byte for
// byte as KMS does, apart from the random parts.
func TestEncryptShapeMatchesKMS(t *testing.T) {
	v := testVector(t)
	env, err := Encrypt(v.Plaintext, &v.Key.PublicKey, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if len(env) != len(v.Envelope) {
		t.Fatalf("Encrypt made %d bytes, KMS %d", len(env), len(v.Envelope))
	}
	// Offsets from `openssl asn1parse` of the vector: encryptedKey contents
	// 131..387, IV contents 415..431, ciphertext chunk contents 435..451.
	// The SKI (33..65) is the same: same key.
	random := [][2]int{{131, 387}, {415, 431}, {435, 451}}
	for i := range env {
		skip := false
		for _, r := range random {
			skip = skip || (i >= r[0] && i < r[1])
		}
		if !skip && env[i] != v.Envelope[i] {
			t.Fatalf("byte %d: Encrypt wrote 0x%02x, KMS 0x%02x", i, env[i], v.Envelope[i])
		}
	}
}

func TestGenerateKeyAndPublicKeyDER(t *testing.T) {
	key, err := GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if key.N.BitLen() != 2048 {
		t.Fatalf("key of %d bits, want 2048", key.N.BitLen())
	}
	der, err := PublicKeyDER(key)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		t.Fatalf("PublicKeyDER is not a SubjectPublicKeyInfo: %v", err)
	}
	if !key.PublicKey.Equal(pub) {
		t.Fatal("PublicKeyDER encodes another key")
	}
	env, err := Encrypt([]byte("seed"), &key.PublicKey, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := Decrypt(env, key); err != nil || string(got) != "seed" {
		t.Fatalf("Decrypt = %q, %v", got, err)
	}
	if _, err := PublicKeyDER(nil); err == nil {
		t.Fatal("PublicKeyDER(nil) succeeded")
	}
}

// fixture builds envelopes piece by piece so that each refusal test changes
// exactly one thing in an otherwise valid envelope.
type fixture struct {
	key    *rsa.PrivateKey
	cek    []byte
	iv     []byte
	plain  []byte
	sealed sealed
}

func newFixture(t *testing.T) *fixture {
	v := testVector(t)
	f := &fixture{key: v.Key, cek: bytes.Repeat([]byte{7}, 32), iv: bytes.Repeat([]byte{9}, 16), plain: []byte("a 32-byte seed, more or less....")}
	f.sealed = sealed{
		contentType: oidEnvelopedData,
		version:     2,
		recipients:  [][]byte{f.recipient(oaepSHA256(), f.wrap(f.cek))},
		dataType:    oidData,
		contentAlg:  tlv(tagSequence, oidBytes(oidAES256CBC), tlv(tagOctetString, f.iv)),
		ciphertext:  f.encrypt(f.cek, pad(f.plain)),
	}
	if got, err := Decrypt(f.sealed.ber(), f.key); err != nil || !bytes.Equal(got, f.plain) {
		t.Fatalf("the unmutated fixture does not decrypt: %q, %v", got, err)
	}
	return f
}

func (f *fixture) ski() []byte {
	spki, _ := PublicKeyDER(f.key)
	s := sha256.Sum256(spki)
	return s[:]
}

func (f *fixture) recipient(alg, encKey []byte) []byte {
	return keyTransRecipient(2, tlv(tagContext0, f.ski()), alg, encKey)
}

func (f *fixture) wrap(cek []byte) []byte {
	k, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, &f.key.PublicKey, cek, nil)
	if err != nil {
		panic(err)
	}
	return k
}

func (f *fixture) encrypt(cek, padded []byte) []byte {
	b, err := aes.NewCipher(cek)
	if err != nil {
		panic(err)
	}
	out := make([]byte, len(padded))
	cipher.NewCBCEncrypter(b, f.iv).CryptBlocks(out, padded)
	return out
}

func oid(s ...int) asn1.ObjectIdentifier { return asn1.ObjectIdentifier(s) }

var (
	oidSHA1      = oid(1, 3, 14, 3, 2, 26)
	oidAES128CBC = oid(2, 16, 840, 1, 101, 3, 4, 1, 2)
	oidAES256GCM = oid(2, 16, 840, 1, 101, 3, 4, 1, 46)
)

func TestDecryptRefuses(t *testing.T) {
	v := testVector(t)
	other, err := GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	null := []byte{0x05, 0x00}
	hashAlg := func(o asn1.ObjectIdentifier) []byte { return tlv(tagSequence, oidBytes(o), null) }

	tests := []struct {
		name   string
		mutate func(f *fixture) []byte
		key    func(f *fixture) *rsa.PrivateKey // nil: the fixture's key
		want   string                           // substring of the error
		is     error                            // or an error it wraps
	}{
		{name: "signedData content type", want: "is not envelopedData", mutate: func(f *fixture) []byte {
			f.sealed.contentType = oid(1, 2, 840, 113549, 1, 7, 2)
			return f.sealed.ber()
		}},
		{name: "encrypted content not id-data", want: "is not data", mutate: func(f *fixture) []byte {
			f.sealed.dataType = oid(1, 2, 840, 113549, 1, 9, 16, 1, 4)
			return f.sealed.ber()
		}},
		{name: "two recipients", want: "several recipients; want exactly one", mutate: func(f *fixture) []byte {
			f.sealed.recipients = append(f.sealed.recipients, f.sealed.recipients[0])
			return f.sealed.ber()
		}},
		{name: "no recipient", want: "no recipient", mutate: func(f *fixture) []byte {
			f.sealed.recipients = nil
			return f.sealed.ber()
		}},
		{name: "key agreement recipient", want: "not a KeyTransRecipientInfo", mutate: func(f *fixture) []byte {
			r := bytes.Clone(f.sealed.recipients[0])
			r[0] = 0xa1 // [1] KeyAgreeRecipientInfo
			f.sealed.recipients[0] = r
			return f.sealed.ber()
		}},
		{name: "SHA-1 OAEP", want: "OAEP hash 1.3.14.3.2.26 is not SHA-256", mutate: func(f *fixture) []byte {
			f.sealed.recipients[0] = f.recipient(oaepAlg(oidSHA1, oidSHA1), f.wrap(f.cek))
			return f.sealed.ber()
		}},
		{name: "MGF1-SHA-1", want: "MGF1 hash 1.3.14.3.2.26 is not SHA-256", mutate: func(f *fixture) []byte {
			f.sealed.recipients[0] = f.recipient(oaepAlg(oidSHA256, oidSHA1), f.wrap(f.cek))
			return f.sealed.ber()
		}},
		{name: "OAEP without parameters (SHA-1)", want: "without parameters means SHA-1", mutate: func(f *fixture) []byte {
			f.sealed.recipients[0] = f.recipient(tlv(tagSequence, oidBytes(oidRSAESOAEP)), f.wrap(f.cek))
			return f.sealed.ber()
		}},
		{name: "OAEP with default parameters (SHA-1)", want: "default hash SHA-1", mutate: func(f *fixture) []byte {
			f.sealed.recipients[0] = f.recipient(tlv(tagSequence, oidBytes(oidRSAESOAEP), tlv(tagSequence)), f.wrap(f.cek))
			return f.sealed.ber()
		}},
		{name: "OAEP with default MGF (MGF1-SHA-1)", want: "default mask generation", mutate: func(f *fixture) []byte {
			alg := tlv(tagSequence, oidBytes(oidRSAESOAEP), tlv(tagSequence, tlv(0xa0, hashAlg(oidSHA256))))
			f.sealed.recipients[0] = f.recipient(alg, f.wrap(f.cek))
			return f.sealed.ber()
		}},
		{name: "OAEP with a label", want: "3-byte label", mutate: func(f *fixture) []byte {
			alg := tlv(tagSequence, oidBytes(oidRSAESOAEP), tlv(tagSequence,
				tlv(0xa0, hashAlg(oidSHA256)),
				tlv(0xa1, tlv(tagSequence, oidBytes(oidMGF1), hashAlg(oidSHA256))),
				tlv(0xa2, tlv(tagSequence, oidBytes(oidPSpecified), tlv(tagOctetString, []byte("abc"))))))
			f.sealed.recipients[0] = f.recipient(alg, f.wrap(f.cek))
			return f.sealed.ber()
		}},
		{name: "OAEP params out of order", want: "RSAES-OAEP-params field 1", mutate: func(f *fixture) []byte {
			alg := tlv(tagSequence, oidBytes(oidRSAESOAEP), tlv(tagSequence,
				tlv(0xa1, tlv(tagSequence, oidBytes(oidMGF1), hashAlg(oidSHA256))),
				tlv(0xa0, hashAlg(oidSHA256))))
			f.sealed.recipients[0] = f.recipient(alg, f.wrap(f.cek))
			return f.sealed.ber()
		}},
		{name: "PKCS#1 v1.5 key transport", want: "is not RSAES-OAEP", mutate: func(f *fixture) []byte {
			f.sealed.recipients[0] = f.recipient(tlv(tagSequence, oidBytes(oid(1, 2, 840, 113549, 1, 1, 1)), null), f.wrap(f.cek))
			return f.sealed.ber()
		}},
		{name: "AES-128-CBC", want: "is not AES-256-CBC", mutate: func(f *fixture) []byte {
			cek := f.cek[:16]
			f.sealed.recipients[0] = f.recipient(oaepSHA256(), f.wrap(cek))
			f.sealed.contentAlg = tlv(tagSequence, oidBytes(oidAES128CBC), tlv(tagOctetString, f.iv))
			f.sealed.ciphertext = f.encrypt(cek, pad(f.plain))
			return f.sealed.ber()
		}},
		{name: "AES-256-GCM", want: "is not AES-256-CBC", mutate: func(f *fixture) []byte {
			f.sealed.contentAlg = tlv(tagSequence, oidBytes(oidAES256GCM), tlv(tagOctetString, f.iv))
			return f.sealed.ber()
		}},
		{name: "AES-256 key that is 16 bytes", is: ErrDecryption, want: "content key is 16 bytes", mutate: func(f *fixture) []byte {
			f.sealed.recipients[0] = f.recipient(oaepSHA256(), f.wrap(f.cek[:16]))
			return f.sealed.ber()
		}},
		{name: "short IV", want: "IV of 8 bytes", mutate: func(f *fixture) []byte {
			f.sealed.contentAlg = tlv(tagSequence, oidBytes(oidAES256CBC), tlv(tagOctetString, f.iv[:8]))
			return f.sealed.ber()
		}},
		{name: "no IV", want: "without an IV", mutate: func(f *fixture) []byte {
			f.sealed.contentAlg = tlv(tagSequence, oidBytes(oidAES256CBC))
			return f.sealed.ber()
		}},
		{name: "empty content", want: "not a positive multiple of 16", mutate: func(f *fixture) []byte {
			f.sealed.ciphertext = nil
			return f.sealed.ber()
		}},
		{name: "partial block", want: "not a positive multiple of 16", mutate: func(f *fixture) []byte {
			f.sealed.ciphertext = f.sealed.ciphertext[:31]
			return f.sealed.ber()
		}},
		{name: "padding byte 0", is: ErrDecryption, want: "bad PKCS#7 padding", mutate: func(f *fixture) []byte {
			p := pad(f.plain)
			p[len(p)-1] = 0
			f.sealed.ciphertext = f.encrypt(f.cek, p)
			return f.sealed.ber()
		}},
		{name: "padding byte 17", is: ErrDecryption, want: "bad PKCS#7 padding", mutate: func(f *fixture) []byte {
			p := pad(f.plain)
			p[len(p)-1] = 17
			f.sealed.ciphertext = f.encrypt(f.cek, p)
			return f.sealed.ber()
		}},
		{name: "padding bytes differ", is: ErrDecryption, want: "bad PKCS#7 padding", mutate: func(f *fixture) []byte {
			p := pad(f.plain) // 32 bytes of plaintext: a full block of 16s
			p[len(p)-16] = 15
			f.sealed.ciphertext = f.encrypt(f.cek, p)
			return f.sealed.ber()
		}},
		{name: "envelope version 0 with a subjectKeyIdentifier", want: "EnvelopedData version 0 with a version 2 recipient", mutate: func(f *fixture) []byte {
			f.sealed.version = 0
			return f.sealed.ber()
		}},
		{name: "recipient version 0 with a subjectKeyIdentifier", want: "subjectKeyIdentifier recipient with version 0", mutate: func(f *fixture) []byte {
			f.sealed.recipients[0] = keyTransRecipient(0, tlv(tagContext0, f.ski()), oaepSHA256(), f.wrap(f.cek))
			return f.sealed.ber()
		}},
		{name: "damaged encrypted key", is: ErrDecryption, mutate: func(f *fixture) []byte {
			k := f.wrap(f.cek)
			k[100] ^= 1
			f.sealed.recipients[0] = f.recipient(oaepSHA256(), k)
			return f.sealed.ber()
		}},
		{name: "short encrypted key", is: ErrDecryption, mutate: func(f *fixture) []byte {
			f.sealed.recipients[0] = f.recipient(oaepSHA256(), f.wrap(f.cek)[1:])
			return f.sealed.ber()
		}},
		{name: "wrong key (subjectKeyIdentifier)", is: ErrWrongRecipient,
			key:    func(*fixture) *rsa.PrivateKey { return other },
			mutate: func(f *fixture) []byte { return f.sealed.ber() }},
		{name: "wrong key (issuerAndSerialNumber)", is: ErrDecryption,
			key: func(*fixture) *rsa.PrivateKey { return other },
			mutate: func(f *fixture) []byte {
				ias := tlv(tagSequence, tlv(tagSequence), tlv(tagInteger, []byte{1}))
				f.sealed.version = 0
				f.sealed.recipients[0] = keyTransRecipient(0, ias, oaepSHA256(), f.wrap(f.cek))
				return f.sealed.ber()
			}},
		{name: "unprotectedAttrs", want: "originatorInfo and unprotectedAttrs are not accepted", mutate: func(f *fixture) []byte {
			ed := tlv(tagSequence,
				tlv(tagInteger, []byte{2}),
				tlv(tagSet, f.sealed.recipients...),
				tlv(tagSequence, oidBytes(oidData), f.sealed.contentAlg, tlv(tagContext0, f.sealed.ciphertext)),
				tlv(0xa1, tlv(tagSequence)))
			return tlv(tagSequence, oidBytes(oidEnvelopedData), tlv(tagContext0Cons, ed))
		}},
		{name: "detached content", want: "detached content", mutate: func(f *fixture) []byte {
			ed := tlv(tagSequence,
				tlv(tagInteger, []byte{2}),
				tlv(tagSet, f.sealed.recipients...),
				tlv(tagSequence, oidBytes(oidData), f.sealed.contentAlg))
			return tlv(tagSequence, oidBytes(oidEnvelopedData), tlv(tagContext0Cons, ed))
		}},
		{name: "content [0] not explicit", want: "ContentInfo content [0]", mutate: func(f *fixture) []byte {
			return tlv(tagSequence, oidBytes(oidEnvelopedData), tlv(tagContext0, []byte{1}))
		}},
		{name: "trailing byte", want: "1 trailing bytes", mutate: func(f *fixture) []byte {
			return append(f.sealed.ber(), 0)
		}},
		{name: "trailing end-of-contents", want: "2 trailing bytes", mutate: func(f *fixture) []byte {
			return append(f.sealed.ber(), 0, 0)
		}},
		{name: "a second ContentInfo", want: "trailing bytes", mutate: func(f *fixture) []byte {
			b := f.sealed.ber()
			return append(b, b...)
		}},
		{name: "truncated end-of-contents", want: "truncated", mutate: func(f *fixture) []byte {
			b := f.sealed.ber()
			return b[:len(b)-2]
		}},
		{name: "oversize", want: "larger than the 65536-byte limit", mutate: func(f *fixture) []byte {
			return make([]byte, MaxEnvelopeSize+1)
		}},
		{name: "nested too deep", want: "nested deeper than 24 levels", mutate: func(f *fixture) []byte {
			b := tlv(tagSequence)
			for range MaxDepth {
				b = indefinite(tagSequence, b)
			}
			return b
		}},
		{name: "empty input", want: "truncated", mutate: func(f *fixture) []byte { return nil }},
		{name: "nil key", want: "no private key",
			key:    func(*fixture) *rsa.PrivateKey { return nil },
			mutate: func(f *fixture) []byte { return f.sealed.ber() }},
		{name: "real vector, last ciphertext byte flipped", is: ErrDecryption, want: "bad PKCS#7 padding",
			key: func(*fixture) *rsa.PrivateKey { return v.Key },
			mutate: func(f *fixture) []byte {
				b := bytes.Clone(v.Envelope)
				b[450] ^= 0x01 // last byte of the one ciphertext block
				return b
			}},
		{name: "real vector, other content type", want: "is not envelopedData",
			key: func(*fixture) *rsa.PrivateKey { return v.Key },
			mutate: func(f *fixture) []byte {
				b := bytes.Clone(v.Envelope)
				b[12] = 2 // 1.2.840.113549.1.7.3 → .7.2 signedData
				return b
			}},
		{name: "real vector, AES-128 OID", want: "is not AES-256-CBC",
			key: func(*fixture) *rsa.PrivateKey { return v.Key },
			mutate: func(f *fixture) []byte {
				b := bytes.Clone(v.Envelope)
				b[412] = 2 // 2.16.840.1.101.3.4.1.42 → .1.2
				return b
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			env := tt.mutate(f)
			key := f.key
			if tt.key != nil {
				key = tt.key(f)
			}
			got, err := Decrypt(env, key)
			if err == nil {
				t.Fatalf("Decrypt accepted it and returned %q", got)
			}
			if got != nil {
				t.Errorf("Decrypt returned %d bytes with its error", len(got))
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %q is not %q", err, tt.is)
			}
			if tt.want != "" && !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "kmsrecipient: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

// TestDecryptRefusesEveryTruncation cuts the real vector at every length.
func TestDecryptRefusesEveryTruncation(t *testing.T) {
	v := testVector(t)
	for n := range len(v.Envelope) {
		if got, err := Decrypt(v.Envelope[:n], v.Key); err == nil {
			t.Fatalf("Decrypt accepted the first %d of %d bytes: %q", n, len(v.Envelope), got)
		}
	}
}

func TestBERToDER(t *testing.T) {
	tests := []struct {
		name    string
		ber     string // hex
		der     string // hex; "" when an error is expected
		wantErr string
	}{
		{"primitive", "020105", "020105", ""},
		{"indefinite sequence", "30800201050000", "3003020105", ""},
		{"nested indefinite", "3080308002010500000000", "30053003020105", ""},
		{"constructed octet string", "2480040161040262630000", "0403616263", ""},
		{"nested constructed octet string", "2480248004016100000401620000", "04026162", ""},
		{"definite constructed octet string", "2406040161040162", "04026162", ""},
		{"empty constructed octet string", "24800000", "0400", ""},
		{"implicit [0] over chunks stays constructed", "a0800401610000", "a003040161", ""},
		{"non-minimal long length", "0481026162", "04026162", ""},
		{"non-minimal two-byte length", "048200026162", "04026162", ""},
		{"long value keeps a long length", "0481" + "80" + strings.Repeat("00", 128), "048180" + strings.Repeat("00", 128), ""},
		{"truncated header", "30", "", "truncated"},
		{"truncated contents", "040361", "", "truncated"},
		{"truncated long length", "048201", "", "truncated"},
		{"missing end-of-contents", "3080020105", "", "missing end-of-contents"},
		{"indefinite primitive", "0480616200 00", "", "indefinite length on a primitive"},
		{"high tag number", "1f0100", "", "high tag numbers"},
		{"end-of-contents at the top", "0000", "", "unexpected end-of-contents"},
		{"end-of-contents inside a definite length", "30020000", "", "unexpected end-of-contents"},
		{"end-of-contents with a length", "30800001ff0000", "", "unexpected end-of-contents"},
		{"child overruns parent", "3003020205", "", "truncated"},
		{"four length bytes", "04840000000161", "", "length too large"},
		{"reserved length 0xff", "04ff", "", "length too large"},
		{"trailing", "0201050000", "", "2 trailing bytes"},
		{"octet string holding an integer", "2480020101 0000", "", "constructed OCTET STRING holds tag 0x02"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := unhex(t, tt.ber)
			got, err := berToDER(in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("berToDER(%s) = %x, %v; want error %q", tt.ber, got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("berToDER(%s): %v", tt.ber, err)
			}
			if want := unhex(t, tt.der); !bytes.Equal(got, want) {
				t.Fatalf("berToDER(%s) = %x, want %x", tt.ber, got, want)
			}
			again, err := berToDER(got)
			if err != nil || !bytes.Equal(again, got) {
				t.Fatalf("berToDER is not idempotent: %x → %x, %v", got, again, err)
			}
		})
	}
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	s = strings.ReplaceAll(s, " ", "")
	b := make([]byte, len(s)/2)
	for i := range b {
		var x byte
		for _, c := range s[2*i : 2*i+2] {
			x <<= 4
			switch {
			case c >= '0' && c <= '9':
				x |= byte(c - '0')
			case c >= 'a' && c <= 'f':
				x |= byte(c - 'a' + 10)
			default:
				t.Fatalf("bad hex %q", s)
			}
		}
		b[i] = x
	}
	return b
}

// FuzzDecrypt: arbitrary bytes never panic; the normaliser makes one
// allocation of at most the input's size, its output is a fixed point, and
// Decrypt gives the same answer for an input and its DER form.
func FuzzDecrypt(f *testing.F) {
	v := testVector(f)
	f.Add(v.Envelope)
	if der, err := berToDER(v.Envelope); err == nil {
		f.Add(der)
	}
	for _, n := range []int{0, 40, 2000} {
		env, err := Encrypt(make([]byte, n), &v.Key.PublicKey, rand.Reader)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(env)
	}
	f.Add([]byte{0x30, 0x80, 0x24, 0x80, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := Decrypt(data, v.Key)
		if err == nil && got == nil {
			t.Fatal("Decrypt returned neither plaintext nor error")
		}
		der, derr := berToDER(data)
		if derr != nil {
			if err == nil {
				t.Fatalf("Decrypt accepted input the normaliser refuses: %v", derr)
			}
			return
		}
		if len(der) > len(data) || cap(der) != len(data) {
			t.Fatalf("normaliser output len %d cap %d for %d input bytes", len(der), cap(der), len(data))
		}
		again, aerr := berToDER(der)
		if aerr != nil || !bytes.Equal(again, der) {
			t.Fatalf("normaliser output is not a fixed point: %v", aerr)
		}
		got2, err2 := Decrypt(der, v.Key)
		if (err == nil) != (err2 == nil) || !bytes.Equal(got, got2) {
			t.Fatalf("BER and DER forms disagree: %v / %v", err, err2)
		}
	})
}

// TestNoHostImports: the package runs in the enclave and must not pull in
// host/ code.
func TestNoHostImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if pkg != "github.com/agentkeys/broker/enclave/kmsrecipient" {
			t.Errorf("kmsrecipient imports %s: it may use the standard library only", pkg)
		}
	}
}
