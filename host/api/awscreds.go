package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/agentkeys/broker/host/audit"
	"github.com/agentkeys/broker/host/awscreds"
	"github.com/agentkeys/broker/shared/claims"
	"github.com/agentkeys/broker/shared/httpapi"
	"github.com/agentkeys/broker/shared/policy"
	"github.com/agentkeys/broker/shared/protocol"
)

// KindSTSError is the error kind of a failed STS call (502).
const KindSTSError = "sts_error"

// outcomeUnavailable is the audit outcome of a mint refused because this host
// does not mint AWS credentials at all.
const outcomeUnavailable = "unavailable"

// mintAWSCreds: POST /v1/mint-aws-creds, bearer = session, optional body
// [httpapi.MintAWSCredsRequest] → [httpapi.MintAWSCredsResponse].
//
// The lifetime asked of STS is the request's duration_seconds, else the host's
// default (BROKER_SESSION_DURATION_SECONDS), else the policy's; it must lie
// within the enclave policy's aws_duration bounds, and it is cut to what is
// left of the session, so that credentials never outlive the sign-in behind
// them. With less of the session left than the policy's minimum (STS refuses
// anything under 900 s) the answer is 400 and STS is not called.
//
// In web-identity mode the enclave first mints a JWT, which is audited as any
// mint (kind oidc_jwt); then STS exchanges it. The credentials leave the host
// only after their own aws_creds record is durable.
func (a *API) mintAWSCreds(w http.ResponseWriter, r *http.Request) {
	rec := audit.Record{Kind: audit.KindAWSCreds, Wallet: audit.WalletUnknown}
	var body httpapi.MintAWSCredsRequest
	tok, ok := a.begin(w, r, &rec, &body)
	if !ok {
		return
	}
	if a.cfg.AWS == nil {
		// Verify the session first: the refusal is recorded with its wallet,
		// and a bad bearer is answered as everywhere else.
		s, e := a.sessionWallet(r.Context(), tok)
		rec.Wallet, rec.HostAssertedWallet = s.walletOr(audit.WalletUnknown), s.hostAsserted
		if e != nil {
			a.refuse(w, r, rec, e)
			return
		}
		a.refuse(w, r, rec, &httpError{status: http.StatusServiceUnavailable, kind: KindUnavailable, outcome: outcomeUnavailable,
			message: "AWS credential minting is not configured on this host: set BROKER_DATA_ROLE_ARN (see docs/aws.md)"})
		return
	}
	p, herr := a.current()
	if herr != nil {
		a.refuse(w, r, rec, herr)
		return
	}
	duration, e := a.awsDuration(p.info.Policy, body.DurationSeconds)
	rec.TTLSeconds = int64(duration / time.Second)
	if e != nil {
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
		a.m.Minted(audit.KindOIDCJWT)
		rec.Wallet, rec.HostAssertedWallet, rec.JTI, rec.Kid = jwt.Wallet, jwt.HostAssertedWallet, jwt.JTI, jwt.Kid
		if duration, e = clampToSession(duration, p.info.Policy, jwt.SessionExpiresAt, jwt.HostAssertedWallet); e != nil {
			a.refuse(w, r, rec, e)
			return
		}
		rec.TTLSeconds = int64(duration / time.Second)
		creds, err = a.cfg.AWS.WithWebIdentity(r.Context(), jwt.Wallet, jwt.JWT, duration)
	case awscreds.ModeAssumeRole:
		s, e := a.sessionWallet(r.Context(), tok)
		rec.Wallet, rec.HostAssertedWallet = s.walletOr(audit.WalletUnknown), s.hostAsserted
		if e != nil {
			a.refuse(w, r, rec, e)
			return
		}
		if e := a.walletLimited(s.wallet); e != nil {
			a.refuse(w, r, rec, e)
			return
		}
		if duration, e = clampToSession(duration, p.info.Policy, s.expiresAt, s.hostAsserted); e != nil {
			a.refuse(w, r, rec, e)
			return
		}
		rec.TTLSeconds = int64(duration / time.Second)
		creds, err = a.cfg.AWS.AssumeRole(r.Context(), s.wallet, duration)
	}
	if err != nil {
		a.refuse(w, r, rec, a.stsFailure(err, rec.Wallet))
		return
	}
	rec.Outcome = audit.OutcomeOK
	rec.Detail = "access_key_id " + creds.AccessKeyID
	// The credentials' own entry in the log: host-asserted (only the host
	// saw STS answer), naming the access key and the JWT's log index.
	logged, err := a.appendHostEntry(r.Context(), hostEntry(rec, creds.AccessKeyID, creds.Expiration.Unix()))
	if err != nil {
		a.log.Error("AWS credentials not in the audit log; withholding them", "access_key_id", creds.AccessKeyID, "err", err)
		e := fromEnclave(err)
		if e.kind != KindAuditError {
			e = errAudit
		}
		a.refuse(w, r, rec, e)
		return
	}
	attach(&rec, logged)
	proof, err := logProof(logged)
	if err != nil {
		a.log.Error("withholding AWS credentials whose proof of logging is malformed", "err", err)
		a.refuse(w, r, rec, errProof)
		return
	}
	if err := a.record(r.Context(), rec); err != nil {
		a.m.Mints.WithLabelValues(rec.Kind, "audit_error").Inc()
		writeError(w, errAudit)
		return
	}
	a.m.Minted(rec.Kind)
	a.notifyWitnesses()
	writeJSON(w, http.StatusOK, httpapi.MintAWSCredsResponse{
		AccessKeyID:     creds.AccessKeyID,
		SecretAccessKey: creds.SecretAccessKey,
		SessionToken:    creds.SessionToken,
		Expiration:      creds.Expiration.Unix(),
		Wallet:          rec.Wallet,
		LogProof:        proof,
	})
}

// awsDuration resolves the requested lifetime against the enclave policy: the
// request's, else the host's default, else the policy's default.
func (a *API) awsDuration(pol policy.Policy, requested int64) (time.Duration, *httpError) {
	fromHost := false
	if requested == 0 && a.cfg.SessionDuration > 0 {
		requested, fromHost = int64(a.cfg.SessionDuration/time.Second), true
	}
	d, err := pol.AWSDuration(requested)
	if err == nil {
		return d, nil
	}
	if fromHost {
		a.log.Error("the host's default AWS credential lifetime is outside the enclave policy", "session_duration_seconds", requested,
			"policy_min_seconds", pol.AWSDurationMin, "policy_max_seconds", pol.AWSDurationMax)
		return time.Duration(requested) * time.Second, &httpError{status: http.StatusInternalServerError, kind: KindInternal, outcome: audit.OutcomePolicyRefused,
			message: fmt.Sprintf("the host's default lifetime (BROKER_SESSION_DURATION_SECONDS=%d) is outside the enclave policy's [%d, %d]; give duration_seconds, and tell the operator",
				requested, pol.AWSDurationMin, pol.AWSDurationMax)}
	}
	return time.Duration(requested) * time.Second, &httpError{status: http.StatusBadRequest, kind: KindBadRequest, outcome: audit.OutcomePolicyRefused, message: err.Error()}
}

// clampToSession cuts d to what is left of the session ending at expiresAt
// (unix seconds), and refuses when that is less than the policy's minimum. A
// host-asserted wallet has no session here (its backend keeps it), and so no
// bound but the policy's.
func clampToSession(d time.Duration, pol policy.Policy, expiresAt int64, hostAsserted bool) (time.Duration, *httpError) {
	if hostAsserted {
		return d, nil
	}
	if expiresAt == 0 {
		// An enclave that does not say when the session ends cannot be held to it.
		return 0, errorf(http.StatusInternalServerError, KindInternal, "the enclave did not say when the session ends; see the host log")
	}
	left := time.Until(time.Unix(expiresAt, 0)).Truncate(time.Second)
	if floor := time.Duration(pol.AWSDurationMin) * time.Second; left < floor {
		if left < 0 {
			left = 0
		}
		return 0, &httpError{status: http.StatusBadRequest, kind: KindBadRequest, outcome: audit.OutcomePolicyRefused,
			message: fmt.Sprintf("the session has %d s left, less than the %d s that AWS credentials must last at least; sign in again",
				int64(left/time.Second), pol.AWSDurationMin)}
	}
	return min(d, left), nil
}

// checkSessionDuration checks the host's default lifetime against the enclave
// policy, at start when the enclave's Info is known.
func (a *API) checkSessionDuration(pol policy.Policy) error {
	if a.cfg.SessionDuration <= 0 {
		return nil
	}
	if _, err := pol.AWSDuration(int64(a.cfg.SessionDuration / time.Second)); err != nil {
		return fmt.Errorf("api: the default AWS credential lifetime (BROKER_SESSION_DURATION_SECONDS=%d) is outside the enclave policy: %w",
			int64(a.cfg.SessionDuration/time.Second), err)
	}
	return nil
}

// stsFailure logs an STS failure, with its underlying error, and makes the
// client's answer: 502 sts_error with the STS code and hint, but nothing from
// the transport error (which names the endpoint's URL and address).
func (a *API) stsFailure(err error, wallet string) *httpError {
	var serr *awscreds.STSError
	if !errors.As(err, &serr) {
		a.log.Error("STS call failed", "err", err, "wallet", wallet)
		return &httpError{status: http.StatusBadGateway, kind: KindSTSError, message: "STS call failed; see the host log", outcome: audit.OutcomeSTSError}
	}
	a.log.Warn("STS refused", "action", serr.Action, "code", serr.Code, "attempts", serr.Attempts, "wallet", wallet, "err", serr.Err)
	msg := fmt.Sprintf("%s: %s", serr.Code, serr.Message)
	if serr.Hint != "" {
		msg += " (hint: " + serr.Hint + ")"
	}
	return &httpError{status: http.StatusBadGateway, kind: KindSTSError, message: msg, outcome: audit.OutcomeSTSError}
}

// verifiedSession is a bearer's wallet as verified, and when its session ends
// (unix seconds; 0 for a host-asserted wallet).
type verifiedSession struct {
	wallet       string
	hostAsserted bool
	expiresAt    int64
}

// walletOr is the wallet, or unknown when none was verified.
func (s verifiedSession) walletOr(unknown string) string {
	if s.wallet == "" {
		return unknown
	}
	return s.wallet
}

// sessionWallet verifies a bearer without minting: an enclave session (checked
// for revocation with the session id the enclave verified), or a backend
// session in the compatibility mode — which, as for JWTs, needs the enclave
// policy's consent.
func (a *API) sessionWallet(ctx context.Context, tok string) (verifiedSession, *httpError) {
	if a.cfg.SessionBackend != nil && !claims.IsCompactJWS(tok) {
		info, ok := a.cfg.Enclave.Info()
		if !ok || !info.Policy.AllowHostAssertedWallet {
			return verifiedSession{}, errorf(http.StatusUnauthorized, KindUnauthorized, "this enclave's policy does not allow host-asserted wallets")
		}
		w, e := a.cfg.SessionBackend.Validate(ctx, tok)
		return verifiedSession{wallet: w, hostAsserted: true}, e
	}
	var resp protocol.VerifySessionResponse
	if err := a.call(ctx, protocol.OpVerifySession, protocol.VerifySessionRequest{Token: tok}, &resp); err != nil {
		return verifiedSession{}, fromEnclave(err)
	}
	if resp.Session.SessionID == "" {
		a.log.Error("the enclave verified a session without naming it; refusing")
		return verifiedSession{wallet: resp.Session.Wallet}, errorf(http.StatusInternalServerError, KindInternal, "the enclave's answer names no session; see the host log")
	}
	if e := a.checkRevoked(ctx, resp.Session.SessionID); e != nil {
		return verifiedSession{wallet: resp.Session.Wallet}, e
	}
	return verifiedSession{wallet: resp.Session.Wallet, expiresAt: resp.Session.ExpiresAt}, nil
}
