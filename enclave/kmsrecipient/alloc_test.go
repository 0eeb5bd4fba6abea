package kmsrecipient

import (
	"bytes"
	"crypto/rand"
	"runtime"
	"testing"
)

// hostile returns inputs of about MaxEnvelopeSize bytes shaped to make a
// parser work hard: many tiny chunks, deep nesting with many siblings, and a
// valid envelope at the size limit.
func hostile(t testing.TB) map[string][]byte {
	v := testVector(t)
	out := map[string][]byte{}

	// ContentInfo-shaped prefix, then a constructed OCTET STRING of 1-byte chunks.
	chunks := bytes.Repeat([]byte{tagOctetString, 1, 0xaa}, (MaxEnvelopeSize-8)/3)
	out["tiny chunks"] = append(append([]byte{tagConstructedOctet, 0x80}, chunks...), 0, 0)

	// MaxDepth-1 levels of indefinite SEQUENCEs, the innermost full of empty SEQUENCEs.
	var b []byte
	for range MaxDepth - 1 {
		b = append(b, tagSequence, 0x80)
	}
	b = append(b, bytes.Repeat([]byte{tagSequence, 0}, (MaxEnvelopeSize-4*MaxDepth)/2)...)
	for range MaxDepth - 1 {
		b = append(b, 0, 0)
	}
	out["deep and wide"] = b

	// A real envelope whose encryptedContent [0] is made of 1-byte chunks,
	// and one with thousands of recipients.
	f := sealed{
		contentType: oidEnvelopedData,
		version:     2,
		recipients:  [][]byte{keyTransRecipient(2, tlv(tagContext0, make([]byte, 32)), oaepSHA256(), make([]byte, 256))},
		dataType:    oidData,
		contentAlg:  tlv(tagSequence, oidBytes(oidAES256CBC), tlv(tagOctetString, make([]byte, 16))),
	}
	head := f.ber()
	head = head[:len(head)-10] // up to the contents of the indefinite encryptedContent
	if !bytes.HasSuffix(head, []byte{tagContext0Cons, 0x80}) {
		t.Fatalf("encryptedContent is not where expected: %x", head[len(head)-8:])
	}
	n := (MaxEnvelopeSize - len(head) - 10) / 3
	out["tiny content chunks"] = append(append(bytes.Clone(head), bytes.Repeat([]byte{tagOctetString, 1, 0xaa}, n)...), make([]byte, 10)...)
	many := sealed(f)
	many.recipients = [][]byte{}
	for range (MaxEnvelopeSize - 512) / 2 {
		many.recipients = append(many.recipients, []byte{tagSequence, 0})
	}
	out["many recipients"] = many.ber()

	env, err := Encrypt(make([]byte, MaxEnvelopeSize-v.Key.Size()-1024), &v.Key.PublicKey, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	out["largest valid envelope"] = env
	return out
}

// TestDecryptAllocationBound: Decrypt allocates a small multiple of its
// input, whatever the input.
func TestDecryptAllocationBound(t *testing.T) {
	v := testVector(t)
	for name, in := range hostile(t) {
		if len(in) > MaxEnvelopeSize {
			t.Fatalf("%s: %d bytes, over the limit", name, len(in))
		}
		Decrypt(in, v.Key) // warm up
		var before, after runtime.MemStats
		const runs = 5
		runtime.ReadMemStats(&before)
		for range runs {
			Decrypt(in, v.Key)
		}
		runtime.ReadMemStats(&after)
		perRun := (after.TotalAlloc - before.TotalAlloc) / runs
		t.Logf("%s: %d input bytes, %d bytes allocated per Decrypt", name, len(in), perRun)
		if limit := uint64(8 * MaxEnvelopeSize); perRun > limit {
			t.Errorf("%s: Decrypt allocated %d bytes for %d input bytes (limit %d)", name, perRun, len(in), limit)
		}
	}
}

func BenchmarkDecrypt(b *testing.B) {
	v := testVector(b)
	inputs := hostile(b)
	inputs["KMS vector"] = v.Envelope
	for _, name := range []string{"KMS vector", "largest valid envelope", "tiny chunks", "tiny content chunks", "many recipients", "deep and wide"} {
		in := inputs[name]
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(in)))
			for b.Loop() {
				Decrypt(in, v.Key)
			}
		})
	}
}
