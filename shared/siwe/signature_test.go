package siwe

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	"github.com/decred/dcrd/dcrec/secp256k1/v4/ecdsa"
)

// web3Vector is testdata/web3js-sign.json: the example of
// web3.eth.accounts.sign in the web3.js documentation.
type web3Vector struct {
	PrivateKey  string `json:"privateKey"`
	Address     string `json:"address"`
	Message     string `json:"message"`
	MessageHash string `json:"messageHash"`
	Signature   string `json:"signature"`
}

func loadWeb3Vector(t testing.TB) (v web3Vector, key *secp256k1.PrivateKey, hash, sig []byte) {
	t.Helper()
	data, err := os.ReadFile("testdata/web3js-sign.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	return v, secp256k1.PrivKeyFromBytes(unhex(t, v.PrivateKey)), unhex(t, v.MessageHash), unhex(t, v.Signature)
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.TrimPrefix(s, "0x"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestWeb3KnownAnswer(t *testing.T) {
	v, key, wantHash, wantSig := loadWeb3Vector(t)
	msg := []byte(v.Message)

	if got := AddressOf(key.PubKey()); got != strings.ToLower(v.Address) {
		t.Errorf("AddressOf = %s, want %s", got, strings.ToLower(v.Address))
	}
	if got, err := ChecksumAddress(AddressOf(key.PubKey())); err != nil || got != v.Address {
		t.Errorf("ChecksumAddress(AddressOf) = %s, %v, want %s", got, err, v.Address)
	}
	if got := PersonalHash(msg); !bytes.Equal(got[:], wantHash) {
		t.Errorf("PersonalHash = %x, want %x", got, wantHash)
	}
	// decred's signer uses RFC 6979 with HMAC-SHA256 and low s, as web3.js
	// does, so the signature matches byte for byte.
	if got := Sign(key, msg); !bytes.Equal(got, wantSig) {
		t.Errorf("Sign = %x, want %x", got, wantSig)
	}
	if wantSig[64] != 28 {
		t.Fatalf("vector v = %d; this test expects 28", wantSig[64])
	}
	for _, v27 := range []byte{28, 1} {
		sig := bytes.Clone(wantSig)
		sig[64] = v27
		got, err := Recover(msg, sig)
		if err != nil || got != strings.ToLower(v.Address) {
			t.Errorf("Recover(v=%d) = %s, %v, want %s", v27, got, err, strings.ToLower(v.Address))
		}
	}
}

// TestRecoverV27 covers the other recovery id, which the web3.js vector does
// not: it finds a message whose signature has v = 27 and recovers it with
// v = 27 and v = 0, and checks that the wrong parity recovers another key.
func TestRecoverV27(t *testing.T) {
	v, key, _, _ := loadWeb3Vector(t)
	want := strings.ToLower(v.Address)
	seen := map[byte]bool{}
	for i := 0; i < 64 && len(seen) < 2; i++ {
		msg := []byte(v.Message + strings.Repeat("!", i))
		sig := Sign(key, msg)
		seen[sig[64]] = true
		for _, alt := range [][2]byte{{27, 0}, {28, 1}} {
			if sig[64] != alt[0] {
				continue
			}
			for _, vv := range alt {
				s := bytes.Clone(sig)
				s[64] = vv
				if got, err := Recover(msg, s); err != nil || got != want {
					t.Errorf("Recover(v=%d) = %s, %v, want %s", vv, got, err, want)
				}
			}
			wrong := bytes.Clone(sig)
			wrong[64] = flipV(alt[0])
			if got, err := Recover(msg, wrong); err == nil && got == want {
				t.Errorf("Recover with the wrong parity returned the signer")
			}
		}
	}
	if !seen[27] || !seen[28] {
		t.Fatalf("did not see both v = 27 and v = 28: %v", seen)
	}
}

func TestSignDeterministic(t *testing.T) {
	_, key, _, _ := loadWeb3Vector(t)
	a, b := Sign(key, []byte("x")), Sign(key, []byte("x"))
	if !bytes.Equal(a, b) {
		t.Fatal("Sign is not deterministic")
	}
}

// flipS returns sig with s replaced by n-s and v flipped: the other valid
// ECDSA signature of the same message by the same key.
func flipS(sig []byte) []byte {
	var s secp256k1.ModNScalar
	s.SetByteSlice(sig[32:64])
	s.Negate()
	out := bytes.Clone(sig)
	b := s.Bytes()
	copy(out[32:64], b[:])
	out[64] = flipV(out[64])
	return out
}

// flipV swaps recovery ids 0 and 1, in either encoding.
func flipV(v byte) byte {
	switch v {
	case 0, 1:
		return 1 - v
	case 27, 28:
		return 55 - v
	}
	return v
}

func TestRecoverRejects(t *testing.T) {
	v, _, _, good := loadWeb3Vector(t)
	msg := []byte(v.Message)
	n := unhex(t, "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141")
	with := func(f func(s []byte)) []byte {
		s := bytes.Clone(good)
		f(s)
		return s
	}
	// The high-s twin is a valid ECDSA signature by the same key: only the
	// low-s rule rejects it. Check that, so the test means something.
	high := flipS(good)
	compact := append([]byte{high[64]}, high[:64]...)
	hash := PersonalHash(msg)
	if pub, _, err := ecdsa.RecoverCompact(compact, hash[:]); err != nil || AddressOf(pub) != strings.ToLower(v.Address) {
		t.Fatalf("high-s twin does not recover the signer without the low-s rule: %v", err)
	}

	for _, tc := range []struct {
		name, want string
		sig        []byte
	}{
		{"empty", "0 bytes", nil},
		{"64 bytes", "64 bytes", good[:64]},
		{"66 bytes", "66 bytes", append(bytes.Clone(good), 0)},
		{"v=2", "v is 2", with(func(s []byte) { s[64] = 2 })},
		{"v=26", "v is 26", with(func(s []byte) { s[64] = 26 })},
		{"v=29", "v is 29", with(func(s []byte) { s[64] = 29 })},
		{"v=31 (compressed)", "v is 31", with(func(s []byte) { s[64] = 31 })},
		{"v=37 (EIP-155)", "v is 37", with(func(s []byte) { s[64] = 37 })},
		{"high s", "malleable", high},
		{"r=0", "r is zero", with(func(s []byte) { clear(s[:32]) })},
		{"s=0", "s is zero", with(func(s []byte) { clear(s[32:64]) })},
		{"r=n", "r is not below", with(func(s []byte) { copy(s[:32], n) })},
		{"s=n", "s is not below", with(func(s []byte) { copy(s[32:64], n) })},
		{"r=2^256-1", "r is not below", with(func(s []byte) { copy(s[:32], bytes.Repeat([]byte{0xff}, 32)) })},
		{"r not on curve", "not for a valid curve point", with(func(s []byte) { clear(s[:32]); s[31] = notOnCurveX(t) })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, err := Recover(msg, tc.sig)
			if !errors.Is(err, ErrSignature) {
				t.Fatalf("Recover = %s, %v, want ErrSignature", addr, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

// notOnCurveX returns a small x for which no point (x, y) is on secp256k1.
func notOnCurveX(t *testing.T) byte {
	for x := byte(1); x < 255; x++ {
		var fx, y secp256k1.FieldVal
		fx.SetInt(uint16(x))
		if !secp256k1.DecompressY(&fx, false, &y) {
			return x
		}
	}
	t.Fatal("no small x off the curve")
	return 0
}

// testKey returns a fixed private key and its checksummed address.
func testKey(t testing.TB, seed byte) (*secp256k1.PrivateKey, string) {
	t.Helper()
	key := secp256k1.PrivKeyFromBytes(bytes.Repeat([]byte{seed}, 32))
	addr, err := ChecksumAddress(AddressOf(key.PubKey()))
	if err != nil {
		t.Fatal(err)
	}
	return key, addr
}

func TestVerifyText(t *testing.T) {
	key, addr := testKey(t, 1)
	other, _ := testKey(t, 2)
	m := baseMessage()
	m.Address = addr
	text := m.String()
	sig := Sign(key, []byte(text))

	got, wallet, err := VerifyText(text, sig)
	if err != nil {
		t.Fatalf("VerifyText: %v", err)
	}
	if wallet != strings.ToLower(addr) || !equalMessages(got, m) {
		t.Fatalf("VerifyText = %+v, %s", got, wallet)
	}
	if w, err := m.Verify(sig); err != nil || w != wallet {
		t.Fatalf("Verify = %s, %v", w, err)
	}
	// A lowercase address in the message is the same wallet.
	lower := *m
	lower.Address = strings.ToLower(addr)
	if _, _, err := VerifyText(lower.String(), Sign(key, []byte(lower.String()))); err != nil {
		t.Fatalf("VerifyText with a lowercase address: %v", err)
	}

	for _, tc := range []struct {
		name string
		text string
		sig  []byte
		want error
	}{
		{"another key", text, Sign(other, []byte(text)), ErrAddressMismatch},
		{"tampered text", strings.Replace(text, "Chain ID: 1", "Chain ID: 2", 1), sig, ErrAddressMismatch},
		{"wrong parity", text, func() []byte { s := bytes.Clone(sig); s[64] = flipV(s[64]); return s }(), nil},
		{"high s", text, flipS(sig), ErrSignature},
		{"short signature", text, sig[:64], ErrSignature},
		{"malformed text", text + "\n", sig, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, wallet, err := VerifyText(tc.text, tc.sig)
			if err == nil || got != nil || wallet != "" {
				t.Fatalf("VerifyText = %v, %q, %v; want an error and nothing else", got, wallet, err)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("VerifyText error = %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := m.Verify(Sign(other, []byte(text))); !errors.Is(err, ErrAddressMismatch) {
		t.Fatalf("Verify by another key = %v, want ErrAddressMismatch", err)
	}
}

// TestVerifyOriginalText shows why the enclave must verify the received text:
// a wallet signed a message whose times are written as JavaScript writes them.
// VerifyText accepts it; Verify, which signs over the canonical rendering,
// does not.
func TestVerifyOriginalText(t *testing.T) {
	key, addr := testKey(t, 3)
	m := baseMessage()
	m.Address = addr
	text := strings.Replace(m.String(), "16:25:24Z", "16:25:24.000Z", 1)
	if text == m.String() {
		t.Fatal("test text is canonical")
	}
	sig := Sign(key, []byte(text))
	parsed, _, err := VerifyText(text, sig)
	if err != nil {
		t.Fatalf("VerifyText: %v", err)
	}
	if !equalMessages(parsed, m) {
		t.Fatalf("parsed %+v, want %+v", parsed, m)
	}
	if _, err := parsed.Verify(sig); !errors.Is(err, ErrAddressMismatch) {
		t.Fatalf("Verify over the rendering = %v, want ErrAddressMismatch", err)
	}
}

func TestVerifyValidates(t *testing.T) {
	key, addr := testKey(t, 4)
	m := baseMessage()
	m.Address = addr
	m.Statement = "ok\n\nURI: https://evil.example"
	if _, err := m.Verify(Sign(key, []byte(m.String()))); !errors.Is(err, ErrMalformed) {
		t.Fatalf("Verify of a message with a newline in its statement = %v, want ErrMalformed", err)
	}
}

func BenchmarkRecover(b *testing.B) {
	v, _, _, sig := loadWeb3Vector(b)
	msg := []byte(v.Message)
	for b.Loop() {
		if _, err := Recover(msg, sig); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyText(b *testing.B) {
	key, addr := testKey(b, 1)
	m := baseMessage()
	m.Address = addr
	m.IssuedAt = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	text := m.String()
	sig := Sign(key, []byte(text))
	for b.Loop() {
		if _, _, err := VerifyText(text, sig); err != nil {
			b.Fatal(err)
		}
	}
}
