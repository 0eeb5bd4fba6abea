package api

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"

	"github.com/agentkeys/broker/shared/httpapi"
	"github.com/agentkeys/broker/shared/protocol"
)

// attestation: GET /.well-known/attestation?nonce=HEX → a fresh attestation
// document from the enclave, binding the published keys and the issuer
// ([httpapi.Attestation]).
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
	writeJSON(w, http.StatusOK, httpapi.Attestation{
		Document:       resp.Document,
		Manifest:       resp.Manifest,
		ManifestSHA256: hex.EncodeToString(sum[:]),
		Nonce:          raw,
		Mode:           mode,
	})
}

// manifest: GET /.well-known/agentkeys-manifest.json → the key manifest
// (shared/manifest) from the cached enclave Info, byte for byte as the enclave
// wrote it: its SHA-256 is the user_data of every attestation document, so a
// verifier can hash what it fetched here. It costs no enclave call.
func (a *API) manifest(w http.ResponseWriter, r *http.Request) {
	p, herr := a.current()
	if herr != nil {
		writeError(w, herr)
		return
	}
	if len(p.info.Manifest) == 0 {
		writeError(w, errorf(http.StatusServiceUnavailable, KindEnclaveUnavailable, "the enclave reported no key manifest; try again shortly"))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", fmt.Sprintf("public, max-age=%d", int(a.cfg.JWKSMaxAge.Seconds())))
	w.Write(p.info.Manifest)
}
