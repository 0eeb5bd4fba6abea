package api

import (
	"encoding/hex"
	"fmt"
	"net/http"

	"github.com/agentkeys/broker/shared/httpapi"
	"github.com/agentkeys/broker/shared/manifest"
	"github.com/agentkeys/broker/shared/protocol"
)

// attestation: GET /.well-known/attestation?nonce=HEX[&format=json] → a fresh
// attestation document from the enclave, binding the published keys and the
// issuer. By default the body is the raw COSE_Sign1 (application/cbor); with
// format=json it is [httpapi.Attestation], which carries the manifest too.
//
// The document's user_data is the SHA-256 of the key manifest (base64 in the
// JSON, so its exact bytes survive; the same bytes as
// /.well-known/agentkeys-manifest.json). An auditor verifies the document (COSE signature,
// chain to the AWS Nitro root or the simulated root, PCRs), checks that nonce
// is the one it chose, hashes manifest, compares it with user_data, and then
// compares manifest's keys with the live JWKS.
func (a *API) attestation(w http.ResponseWriter, r *http.Request) {
	format := r.URL.Query().Get("format")
	if format != "" && format != "cbor" && format != "json" {
		writeError(w, errorf(http.StatusBadRequest, KindBadRequest, "format must be cbor (the default: the raw COSE_Sign1) or json"))
		return
	}
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
	if format != "json" {
		w.Header().Set("Content-Type", "application/cbor")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(resp.Document)
		return
	}
	mode := ""
	if p := a.published.Load(); p != nil {
		mode = p.info.Mode
	}
	writeJSON(w, http.StatusOK, httpapi.Attestation{
		Document:       resp.Document,
		Manifest:       resp.Manifest,
		ManifestSHA256: manifest.DigestHex(resp.Manifest),
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
