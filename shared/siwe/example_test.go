package siwe_test

import (
	"bytes"
	"fmt"
	"time"

	"github.com/agentkeys/broker/shared/siwe"
	"github.com/decred/dcrd/dcrec/secp256k1/v4"
)

func Example() {
	// The agent CLI builds a message for its key and signs the rendering.
	key := secp256k1.PrivKeyFromBytes(bytes.Repeat([]byte{1}, 32))
	address, _ := siwe.ChecksumAddress(siwe.AddressOf(key.PubKey()))
	issued := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	msg := &siwe.Message{
		Domain:         "broker.example",
		Address:        address,
		Statement:      "Sign in to the AgentKeys broker.",
		URI:            "https://broker.example/siwe",
		Version:        "1",
		ChainID:        1,
		Nonce:          "k3Hq9ZpX2mVt",
		IssuedAt:       issued,
		ExpirationTime: issued.Add(5 * time.Minute),
	}
	if err := msg.Validate(); err != nil {
		panic(err)
	}
	text := msg.String()
	sig := siwe.Sign(key, []byte(text))

	// The enclave receives text and sig from the host and verifies the
	// exact text, then checks what it expects of the fields.
	m, wallet, err := siwe.VerifyText(text, sig)
	if err != nil {
		panic(err)
	}
	if m.Domain != "broker.example" || m.Nonce != "k3Hq9ZpX2mVt" {
		panic("not for us")
	}
	if err := m.CheckTime(issued.Add(time.Minute), 30*time.Second); err != nil {
		panic(err)
	}
	fmt.Println(text)
	fmt.Println("signed by", wallet)
	// Output:
	// broker.example wants you to sign in with your Ethereum account:
	// 0x1a642f0E3c3aF545E7AcBD38b07251B3990914F1
	//
	// Sign in to the AgentKeys broker.
	//
	// URI: https://broker.example/siwe
	// Version: 1
	// Chain ID: 1
	// Nonce: k3Hq9ZpX2mVt
	// Issued At: 2026-01-02T03:04:05Z
	// Expiration Time: 2026-01-02T03:09:05Z
	// signed by 0x1a642f0e3c3af545e7acbd38b07251b3990914f1
}
