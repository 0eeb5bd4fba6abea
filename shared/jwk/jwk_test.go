package jwk

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"testing"
)

// TestThumbprintRFC7638 checks the thumbprint against an independently published
// P-256 example: the key and thumbprint of RFC 7638's method applied to the
// P-256 key of RFC 7517 Appendix A.1 (as computed by several JOSE libraries).
func TestThumbprintRFC7638(t *testing.T) {
	k := Key{
		Kty: "EC", Crv: "P-256",
		X: "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",
		Y: "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM",
	}
	const want = "cn-I_WNMClehiVp51i_0VpOENW1upEerA8sEam5hn-s"
	if got := k.Thumbprint(); got != want {
		t.Fatalf("thumbprint = %s, want %s", got, want)
	}
	if _, err := k.PublicKey(); err != nil {
		t.Fatal(err)
	}
}

func TestRoundTrip(t *testing.T) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := FromP256(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if k.Alg != "ES256" || k.Use != "sig" || k.Kid != k.Thumbprint() {
		t.Fatalf("unexpected key %+v", k)
	}
	b, _ := json.Marshal(k)
	var back Key
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	pub, err := back.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	if !pub.Equal(&priv.PublicKey) {
		t.Fatal("round trip changed the key")
	}
}

func TestPublicKeyRejects(t *testing.T) {
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	good, _ := FromP256(&priv.PublicKey)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if _, err := FromP256(&p384.PublicKey); err == nil {
		t.Error("FromP256 accepted a P-384 key")
	}
	tests := []struct {
		name string
		mod  func(*Key)
	}{
		{"wrong kty", func(k *Key) { k.Kty = "RSA" }},
		{"wrong crv", func(k *Key) { k.Crv = "P-384" }},
		{"short x", func(k *Key) { k.X = k.X[:10] }},
		{"bad base64 y", func(k *Key) { k.Y = "!!!" }},
		{"off curve", func(k *Key) { k.X, k.Y = k.Y, k.X }},
		{"kid mismatch", func(k *Key) { k.Kid = "AAAA" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := good
			tt.mod(&k)
			if _, err := k.PublicKey(); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}
