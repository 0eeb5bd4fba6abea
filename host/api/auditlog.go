package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/agentkeys/broker/host/audit"
	"github.com/agentkeys/broker/shared/auditlog"
	"github.com/agentkeys/broker/shared/protocol"
	"github.com/agentkeys/broker/shared/tlogproof"
)

// enclaveLogWait bounds an enclave call that appends to the audit log. The
// call is detached from the client's cancellation: once the enclave has
// logged an entry, its batch must reach the store even if the client left,
// or the store falls behind the enclave (audit.ErrLogGap).
const enclaveLogWait = 10 * time.Second

// logCall is an enclave call that appends to the audit log.
func (a *API) logCall(ctx context.Context, op protocol.Op, req, resp any) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), enclaveLogWait)
	defer cancel()
	return a.call(ctx, op, req, resp)
}

// attach makes rec carry the batch its entry landed in, so that the store
// keeps the batch with the record.
func attach(rec *audit.Record, l protocol.AuditLogged) {
	b := l.Batch
	rec.Batch, rec.Logged = &b, &audit.Logged{Index: l.Index}
}

// logProof is the C2SP tlog-proof of the entry at l.Index under its batch's
// checkpoint, for the client.
func logProof(l protocol.AuditLogged) (string, error) {
	hs, err := auditlog.SplitHashes(l.Proof, tlogproof.MaxHashes)
	if err != nil {
		return "", fmt.Errorf("the enclave's inclusion proof: %w", err)
	}
	return string(tlogproof.Proof{Index: l.Index, Hashes: hs, Checkpoint: l.Batch.Checkpoint}.Marshal()), nil
}

var errProof = errorf(http.StatusInternalServerError, KindInternal, "the enclave's proof of logging is malformed, so nothing was issued; see the host log")

// hostEntry is the host-asserted log entry of rec: what the host saw.
func hostEntry(rec audit.Record, accessKeyID string, expiresAt int64) protocol.AuditHostEntry {
	e := protocol.AuditHostEntry{
		Kind: rec.Kind, Outcome: rec.Outcome, Wallet: rec.Wallet, Audience: clip(rec.Audience, auditlog.MaxAudienceLen),
		Kid: clip(rec.Kid, auditlog.MaxIDLen), HostAssertedWallet: rec.HostAssertedWallet,
		AccessKeyID: clip(accessKeyID, auditlog.MaxIDLen), ExpiresAt: expiresAt, Detail: clip(rec.Detail, auditlog.MaxDetailLen),
	}
	if (auditlog.Entry{Version: auditlog.Version, Kind: "x", Outcome: "x", Wallet: "unknown", JTI: rec.JTI}).Validate() == nil {
		e.JTI = rec.JTI // an entry id (auditlog.EntryID), perhaps of another log of the issuer
	}
	return e
}

// appendHostEntry logs a host-asserted entry in the enclave's audit log.
func (a *API) appendHostEntry(ctx context.Context, e protocol.AuditHostEntry) (protocol.AuditLogged, error) {
	if herr := a.catchUp(ctx); herr != nil {
		return protocol.AuditLogged{}, protocol.Errorf(protocol.CodeAuditLog, "%s", herr.message)
	}
	var resp protocol.AuditAppendResponse
	err := a.logCall(ctx, protocol.OpAuditAppend, protocol.AuditAppendRequest{Entry: e, LogSize: a.cfg.Audit.LogSize()}, &resp)
	return resp, err
}

// logRefusal puts a refusal of a verified wallet's mint in the Merkle log,
// best effort: if the enclave cannot take it, the record is kept in the
// store's records alone (the refusal stands either way). Refusals of
// unverified callers, which anyone can cause, and refusals the enclave could
// not have taken (it is unreachable, or its log is the problem) stay out.
func (a *API) logRefusal(ctx context.Context, rec *audit.Record) {
	switch {
	case rec.Batch != nil, rec.Kind != audit.KindOIDCJWT && rec.Kind != audit.KindAWSCreds, unauthenticated(*rec):
		return
	case rec.Wallet == audit.WalletUnknown && !rec.HostAssertedWallet:
		return // no wallet was verified: anyone could cause it
	case rec.Outcome == audit.OutcomeEnclaveError, rec.Outcome == KindAuditError, rec.Outcome == outcomeUnavailable:
		return
	}
	l, err := a.appendHostEntry(ctx, hostEntry(*rec, "", 0))
	if err != nil {
		a.log.Warn("refusal not in the audit log (kept in the records)", "kind", rec.Kind, "outcome", rec.Outcome, "err", err)
		return
	}
	attach(rec, l)
}

// afterAuditError reacts to a failed record. A record that carried an
// enclave batch, or one that found the store missing earlier batches
// (audit.ErrLogGap), leaves the store behind the enclave: the enclave logged
// entries the store does not hold. The next call that appends to the log
// first fetches what the store lacks (catchUp), so the log stays whole and
// minting resumes once the store works again.
func (a *API) afterAuditError(rec audit.Record, err error) {
	if rec.Batch != nil || errors.Is(err, audit.ErrLogGap) {
		a.logBehind.Store(true)
	}
}

// catchUp, if the store is behind the enclave, has it fetch the batches it
// lacks (audit.Resume), one caller at a time. Until it succeeds, nothing is
// minted: the answer is 503 audit_error.
func (a *API) catchUp(ctx context.Context) *httpError {
	if !a.logBehind.Load() {
		return nil
	}
	a.resumeMu.Lock()
	defer a.resumeMu.Unlock()
	if !a.logBehind.Load() {
		return nil
	}
	// Storing batches is idempotent, so a caller that gives up may leave
	// the catch-up half done: the next one goes on from there.
	ctx, cancel := context.WithTimeout(ctx, enclaveLogWait)
	defer cancel()
	if err := audit.Resume(ctx, a.cfg.Audit, a.cfg.AuditLogName, a.call); err != nil {
		a.log.Error("the audit store is behind the enclave's log and could not catch up; refusing", "err", err)
		return errorf(http.StatusServiceUnavailable, KindAuditError, "the audit log is missing entries and could not fetch them, so nothing was issued; try again later")
	}
	a.logBehind.Store(false)
	a.log.Info("the audit store caught up with the enclave's log", "log_size", a.cfg.Audit.LogSize())
	return nil
}

// clip makes s valid UTF-8 without NUL and at most max bytes, at a rune boundary.
func clip(s string, max int) string {
	s = strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}
