package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/agentkeys/broker/host/audit"
	"github.com/agentkeys/broker/host/awscreds"
	"github.com/agentkeys/broker/shared/protocol"
)

// KindSTSError is the error kind of a failed STS call (502).
const KindSTSError = "sts_error"

// mintAWSCreds: POST /v1/mint-aws-creds, bearer = session, optional body
// {"duration_seconds": n} → {"access_key_id","secret_access_key",
// "session_token","expiration","wallet"}.
//
// In web-identity mode the enclave first mints a JWT, which is audited as any
// mint (kind oidc_jwt); then STS exchanges it. The credentials leave the host
// only after their own aws_creds record is durable.
func (a *API) mintAWSCreds(w http.ResponseWriter, r *http.Request) {
	rec := audit.Record{Kind: audit.KindAWSCreds, Wallet: audit.WalletUnknown}
	if a.cfg.AWS == nil {
		a.refuse(w, r, rec, errorf(http.StatusServiceUnavailable, KindUnavailable,
			"AWS credential minting is not configured on this host: set BROKER_DATA_ROLE_ARN (see docs/aws.md)"))
		return
	}
	var body struct {
		DurationSeconds int64 `json:"duration_seconds"`
	}
	tok, ok := a.begin(w, r, &rec, &body)
	if !ok {
		return
	}
	duration := time.Duration(body.DurationSeconds) * time.Second
	if body.DurationSeconds == 0 {
		duration = a.cfg.SessionDuration
	}
	rec.TTLSeconds = int64(duration / time.Second)
	if duration < awscreds.MinDuration || duration > awscreds.MaxDuration {
		e := errorf(http.StatusBadRequest, KindBadRequest, fmt.Sprintf("duration_seconds must be between %d and %d",
			int64(awscreds.MinDuration/time.Second), int64(awscreds.MaxDuration/time.Second)))
		e.outcome = audit.OutcomePolicyRefused
		a.refuse(w, r, rec, e)
		return
	}

	var creds awscreds.Credentials
	var err error
	switch a.cfg.AWS.Mode() {
	case awscreds.ModeWebIdentity:
		jrec := audit.Record{Kind: audit.KindOIDCJWT, Wallet: audit.WalletUnknown, BearerSHA256: rec.BearerSHA256, Detail: "for aws_creds"}
		jwt, e := a.mintJWT(r.Context(), tok, "", 0, &jrec)
		if e != nil {
			a.refuse(w, r, jrec, e)
			return
		}
		jrec.Outcome = audit.OutcomeOK
		if err := a.record(r.Context(), jrec); err != nil {
			writeError(w, errAudit)
			return
		}
		a.m.Mints.WithLabelValues(audit.KindOIDCJWT, audit.OutcomeOK).Inc()
		rec.Wallet, rec.HostAssertedWallet, rec.JTI, rec.Kid = jwt.Wallet, jwt.HostAssertedWallet, jwt.JTI, jwt.Kid
		creds, err = a.cfg.AWS.WithWebIdentity(r.Context(), jwt.Wallet, jwt.JWT, duration)
	case awscreds.ModeAssumeRole:
		wallet, hostAsserted, e := a.sessionWallet(r.Context(), tok)
		if e != nil {
			a.refuse(w, r, rec, e)
			return
		}
		rec.Wallet, rec.HostAssertedWallet = wallet, hostAsserted
		if e := a.walletLimited(wallet); e != nil {
			a.refuse(w, r, rec, e)
			return
		}
		creds, err = a.cfg.AWS.AssumeRole(r.Context(), wallet, duration)
	}
	if err != nil {
		var serr *awscreds.STSError
		if !errors.As(err, &serr) {
			a.refuse(w, r, rec, errorf(http.StatusBadGateway, KindSTSError, "STS call failed"))
			return
		}
		msg := fmt.Sprintf("%s: %s", serr.Code, serr.Message)
		if serr.Hint != "" {
			msg += " (hint: " + serr.Hint + ")"
		}
		a.log.Warn("STS refused", "action", serr.Action, "code", serr.Code, "attempts", serr.Attempts, "wallet", rec.Wallet)
		e := &httpError{status: http.StatusBadGateway, kind: KindSTSError, message: msg, outcome: audit.OutcomeSTSError}
		a.refuse(w, r, rec, e)
		return
	}
	rec.Outcome = audit.OutcomeOK
	rec.Detail = "access_key_id " + creds.AccessKeyID
	if err := a.record(r.Context(), rec); err != nil {
		a.m.Mints.WithLabelValues(rec.Kind, "audit_error").Inc()
		writeError(w, errAudit)
		return
	}
	a.m.Mints.WithLabelValues(rec.Kind, audit.OutcomeOK).Inc()
	writeJSON(w, http.StatusOK, map[string]any{
		"access_key_id":     creds.AccessKeyID,
		"secret_access_key": creds.SecretAccessKey,
		"session_token":     creds.SessionToken,
		"expiration":        creds.Expiration.Unix(),
		"wallet":            rec.Wallet,
	})
}

// sessionWallet verifies a bearer without minting (assume-role mode): an
// enclave session (checked for revocation), or a backend session in the
// compatibility mode — which, as for JWTs, needs the enclave policy's consent.
func (a *API) sessionWallet(ctx context.Context, tok string) (wallet string, hostAsserted bool, e *httpError) {
	if a.cfg.SessionBackend != nil && !looksLikeJWT(tok) {
		info, ok := a.cfg.Enclave.Info()
		if !ok || !info.Policy.AllowHostAssertedWallet {
			return "", false, errorf(http.StatusUnauthorized, KindUnauthorized, "this enclave's policy does not allow host-asserted wallets")
		}
		w, e := a.cfg.SessionBackend.Validate(ctx, tok)
		return w, true, e
	}
	var resp protocol.VerifySessionResponse
	if err := a.call(ctx, protocol.OpVerifySession, protocol.VerifySessionRequest{Token: tok}, &resp); err != nil {
		return "", false, fromEnclave(err)
	}
	if e := a.checkRevoked(ctx, resp.Session.SessionID); e != nil {
		return "", false, e
	}
	return resp.Session.Wallet, false, nil
}
