package api

import (
	"net/http"
	"time"

	"github.com/agentkeys/broker/host/audit"
	"github.com/agentkeys/broker/shared/httpapi"
	"github.com/agentkeys/broker/shared/protocol"
)

// sessionNonce: GET /v1/session/nonce → [httpapi.NonceResponse].
func (a *API) sessionNonce(w http.ResponseWriter, r *http.Request) {
	var resp protocol.SessionNonceResponse
	if err := a.call(r.Context(), protocol.OpSessionNonce, protocol.SessionNonceRequest{}, &resp); err != nil {
		writeError(w, fromEnclave(err))
		return
	}
	writeJSON(w, http.StatusOK, httpapi.NonceResponse{Nonce: resp.Nonce, ExpiresAt: resp.ExpiresAt})
}

// createSession: POST /v1/session [httpapi.SessionRequest] (an EIP-4361 text
// and its "0x…" signature) → [httpapi.SessionResponse].
func (a *API) createSession(w http.ResponseWriter, r *http.Request) {
	rec := audit.Record{Kind: audit.KindSession, Wallet: audit.WalletUnknown}
	var body httpapi.SessionRequest
	if e := readJSON(w, r, &body, false); e != nil {
		a.refuse(w, r, rec, e)
		return
	}
	sig, err := hexSignature(body.Signature)
	if err != nil {
		a.refuse(w, r, rec, errorf(http.StatusBadRequest, KindBadRequest, err.Error()))
		return
	}
	if body.Message == "" {
		a.refuse(w, r, rec, errorf(http.StatusBadRequest, KindBadRequest, "message is required: the EIP-4361 sign-in text"))
		return
	}
	var resp protocol.CreateSessionResponse
	if err := a.call(r.Context(), protocol.OpCreateSession, protocol.CreateSessionRequest{Message: body.Message, Signature: sig}, &resp); err != nil {
		a.refuse(w, r, rec, fromEnclave(err))
		return
	}
	rec.Outcome = audit.OutcomeOK
	rec.Wallet = resp.Session.Wallet
	rec.BearerSHA256 = audit.HashBearer(resp.Token)
	rec.Detail = "session " + resp.Session.SessionID
	if err := a.record(r.Context(), rec); err != nil {
		writeError(w, errAudit)
		return
	}
	writeJSON(w, http.StatusOK, httpapi.SessionResponse{Session: resp.Token, Wallet: resp.Session.Wallet, Expiration: resp.Session.ExpiresAt})
}

// revokeSession: POST /v1/session/revoke with the session as bearer →
// [httpapi.RevokeResponse], whose revoked is false when the session had been
// revoked already. The enclave verifies the token first: only its holder can
// revoke a session, and a forged token is refused as any bad token is.
func (a *API) revokeSession(w http.ResponseWriter, r *http.Request) {
	rec := audit.Record{Kind: audit.KindSessionRevoke, Wallet: audit.WalletUnknown}
	tok, e := bearer(r)
	if e != nil {
		a.refuse(w, r, rec, e)
		return
	}
	rec.BearerSHA256 = audit.HashBearer(tok)
	var resp protocol.VerifySessionResponse
	if err := a.call(r.Context(), protocol.OpVerifySession, protocol.VerifySessionRequest{Token: tok}, &resp); err != nil {
		a.refuse(w, r, rec, fromEnclave(err))
		return
	}
	rec.Wallet = resp.Session.Wallet
	added, err := a.cfg.Revocations.Revoke(r.Context(), resp.Session.SessionID, time.Unix(resp.Session.ExpiresAt, 0))
	if err != nil {
		a.log.Error("failed to record a revocation", "err", err)
		a.refuse(w, r, rec, errorf(http.StatusInternalServerError, KindInternal, "failed to record the revocation; try again"))
		return
	}
	rec.Outcome = audit.OutcomeOK
	rec.Detail = "session " + resp.Session.SessionID
	if !added {
		rec.Detail += " (revoked already)"
	}
	if err := a.record(r.Context(), rec); err != nil {
		// The revocation itself holds; say that the audit failed.
		writeError(w, errAudit)
		return
	}
	writeJSON(w, http.StatusOK, httpapi.RevokeResponse{Revoked: added, Wallet: resp.Session.Wallet})
}
