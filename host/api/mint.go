package api

import (
	"context"
	"errors"
	"net/http"

	"github.com/agentkeys/broker/host/audit"
	"github.com/agentkeys/broker/shared/auditlog"
	"github.com/agentkeys/broker/shared/claims"
	"github.com/agentkeys/broker/shared/httpapi"
	"github.com/agentkeys/broker/shared/protocol"
)

// errRevoked is the answer for a revoked session.
var errRevoked = &httpError{status: http.StatusUnauthorized, kind: KindUnauthorized, message: "session was revoked; sign in again", outcome: audit.OutcomeRevoked}

// mintJWT has the enclave mint a JWT for the holder of bearer tok, filling rec
// with what is known as it goes. The host never reads an unverified token: it
// checks revocation once, with the session id the enclave verified, after the
// enclave answers and before anything is released. (Checking the sid of the
// unverified token first would answer "revoked" to a forged token naming a
// revoked session: an oracle for which sessions exist.) It writes no audit
// record: the caller records the outcome, once, and releases nothing before that.
func (a *API) mintJWT(ctx context.Context, tok, audience string, ttl int64, rec *audit.Record) (protocol.MintOIDCResponse, *httpError) {
	var resp protocol.MintOIDCResponse
	req := protocol.MintOIDCRequest{Audience: audience, TTLSeconds: ttl}
	if req.TTLSeconds == 0 {
		req.TTLSeconds = a.cfg.DefaultTTLSeconds
	}
	if a.cfg.SessionBackend != nil && !claims.IsCompactJWS(tok) {
		wallet, e := a.cfg.SessionBackend.Validate(ctx, tok)
		if e != nil {
			return resp, e
		}
		rec.Wallet, rec.HostAssertedWallet = wallet, true
		req.HostAssertedWallet = wallet
	} else {
		req.Token = tok
	}
	if e := a.catchUp(ctx); e != nil {
		return resp, e
	}
	req.LogSize = a.cfg.Audit.LogSize()
	if err := a.logCall(ctx, protocol.OpMintOIDC, req, &resp); err != nil {
		var pe *protocol.Error
		if errors.As(err, &pe) && pe.Wallet != "" {
			rec.Wallet = pe.Wallet // the enclave verified the session before refusing
		}
		return resp, fromEnclave(err)
	}
	// The enclave has logged the JWT: from here on every outcome is recorded
	// with the batch, so that the store holds the whole log.
	attach(rec, resp.Log)
	rec.Wallet, rec.HostAssertedWallet = resp.Wallet, resp.HostAssertedWallet
	rec.Kid, rec.JTI, rec.Audience, rec.TTLSeconds = resp.Kid, resp.JTI, resp.Audience, resp.ExpiresAt-resp.IssuedAt
	if resp.JTI != auditlog.EntryID(a.cfg.AuditLogName, resp.Log.Index) {
		a.log.Error("the enclave minted a JWT whose jti is not its entry id in this host's log; refusing", "jti", resp.JTI, "log_index", resp.Log.Index, "audit_log", a.cfg.AuditLogName)
		return resp, errorf(http.StatusInternalServerError, KindInternal, "the enclave's answer is inconsistent; see the host log")
	}
	if req.Token != "" {
		if resp.SessionID == "" {
			a.log.Error("the enclave minted for a session without naming it; refusing")
			return protocol.MintOIDCResponse{}, errorf(http.StatusInternalServerError, KindInternal, "the enclave's answer names no session; see the host log")
		}
		if e := a.checkRevoked(ctx, resp.SessionID); e != nil {
			return protocol.MintOIDCResponse{}, e
		}
	}
	if e := a.walletLimited(resp.Wallet); e != nil {
		return protocol.MintOIDCResponse{}, e
	}
	return resp, nil
}

func (a *API) checkRevoked(ctx context.Context, sid string) *httpError {
	revoked, err := a.cfg.Revocations.IsRevoked(ctx, sid)
	if err != nil {
		a.log.Error("revocation check failed; refusing", "err", err)
		return errorf(http.StatusInternalServerError, KindInternal, "could not check whether the session was revoked; try again")
	}
	if revoked {
		return errRevoked
	}
	return nil
}

// begin reads the bearer and the optional JSON body of a minting route. When
// either is bad it records the refusal, answers, and returns ok = false.
func (a *API) begin(w http.ResponseWriter, r *http.Request, rec *audit.Record, body any) (tok string, ok bool) {
	tok, e := bearer(r)
	if e != nil {
		a.refuse(w, r, *rec, e)
		return "", false
	}
	rec.BearerSHA256 = audit.HashBearer(tok)
	if e := readJSON(w, r, body, true); e != nil {
		a.refuse(w, r, *rec, e)
		return "", false
	}
	return tok, true
}

// mintOIDCJWT: POST /v1/mint-oidc-jwt, bearer = session, optional body
// [httpapi.MintJWTRequest] → [httpapi.MintJWTResponse].
func (a *API) mintOIDCJWT(w http.ResponseWriter, r *http.Request) {
	rec := audit.Record{Kind: audit.KindOIDCJWT, Wallet: audit.WalletUnknown}
	var body httpapi.MintJWTRequest
	tok, ok := a.begin(w, r, &rec, &body)
	if !ok {
		return
	}
	rec.Audience, rec.TTLSeconds = body.Audience, body.TTLSeconds
	resp, e := a.mintJWT(r.Context(), tok, body.Audience, body.TTLSeconds, &rec)
	if e != nil {
		a.refuse(w, r, rec, e)
		return
	}
	proof, err := logProof(resp.Log)
	if err != nil {
		a.log.Error("refusing a JWT whose proof of logging is malformed", "err", err)
		a.refuse(w, r, rec, errProof)
		return
	}
	rec.Outcome = audit.OutcomeOK
	if err := a.record(r.Context(), rec); err != nil {
		a.m.Mints.WithLabelValues(rec.Kind, "audit_error").Inc()
		writeError(w, errAudit)
		return
	}
	a.m.Minted(rec.Kind)
	a.notifyWitnesses()
	writeJSON(w, http.StatusOK, httpapi.MintJWTResponse{JWT: resp.JWT, Wallet: resp.Wallet, Expiration: resp.ExpiresAt, LogProof: proof})
}
