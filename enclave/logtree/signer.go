package logtree

import (
	"crypto/ed25519"
	"encoding/base64"
	"fmt"

	"golang.org/x/mod/sumdb/note"
)

// NewKey returns the note signer and verifier of an Ed25519 checkpoint key
// named name, and the verifier key ("name+hash+base64") to publish.
func NewKey(name string, key ed25519.PrivateKey) (note.Signer, note.Verifier, string, error) {
	vkey, err := note.NewEd25519VerifierKey(name, key.Public().(ed25519.PublicKey))
	if err != nil {
		return nil, nil, "", fmt.Errorf("failed to make the checkpoint verifier key: %w", err)
	}
	verifier, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, nil, "", fmt.Errorf("failed to make the checkpoint verifier: %w", err)
	}
	// A note signer key is "PRIVATE+KEY+name+hash+base64(0x01 || seed)",
	// the hash the same as the verifier key's.
	// vkey is name + "+" + 8 hex digits + "+" + base64 (which may hold '+').
	hash := vkey[len(name)+1 : len(name)+9]
	signer, err := note.NewSigner("PRIVATE+KEY+" + name + "+" + hash + "+" + base64.StdEncoding.EncodeToString(append([]byte{1}, key.Seed()...)))
	if err != nil {
		return nil, nil, "", fmt.Errorf("failed to make the checkpoint signer: %w", err)
	}
	return signer, verifier, vkey, nil
}
