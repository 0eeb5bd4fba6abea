package api

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"

	"github.com/agentkeys/broker/shared/protocol"
)

// attestation: GET /.well-known/attestation?nonce=HEX → a fresh attestation
// document from the enclave, binding the published keys and the issuer.
//
// The document's user_data is the SHA-256 of manifest (base64 here, so its
// exact bytes survive): the issuer, mode, policy digest, issuer JWKs, signing
// kid and checkpoint key. An auditor verifies the document (COSE signature,
// chain to the AWS Nitro root or the simulated root, PCRs), checks that nonce
// is the one it chose, hashes manifest, compares it with user_data, and then
// compares manifest's keys with the live JWKS.
func (a *API) attestation(w http.ResponseWriter, r *http.Request) {
	raw := r.URL.Query().Get("nonce")
	nonce, err := hex.DecodeString(raw)
	if err != nil || len(nonce) < protocol.MinNonceSize || len(nonce) > protocol.MaxNonceSize {
		writeError(w, errorf(http.StatusBadRequest, KindBadRequest, "nonce must be 8 to 64 bytes of hex, chosen fresh by the verifier"))
		return
	}
	var resp protocol.AttestResponse
	if err := a.call(r.Context(), protocol.OpAttest, protocol.AttestRequest{Nonce: nonce}, &resp); err != nil {
		writeError(w, fromEnclave(err))
		return
	}
	sum := sha256.Sum256(resp.Manifest)
	mode := ""
	if p := a.published.Load(); p != nil {
		mode = p.info.Mode
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"document":        resp.Document, // []byte: base64 in JSON
		"manifest":        resp.Manifest,
		"manifest_sha256": hex.EncodeToString(sum[:]),
		"nonce":           raw,
		"mode":            mode,
	})
}
