package api

import (
	"context"
	"io"
	"net/http"

	"github.com/agentkeys/broker/host/tiles"
	"github.com/agentkeys/broker/host/witness"
	"github.com/agentkeys/broker/shared/httpapi"
)

// Witnesses is the witness set (witness.Witnesses) as the API uses it: the
// cosigned checkpoint to serve, a nudge after each mint, and the per-witness
// detail of /readyz.
type Witnesses interface {
	// Checkpoint is the store's latest checkpoint with the witnesses'
	// cosignatures on it (nil while the log is empty).
	Checkpoint(ctx context.Context) ([]byte, error)
	// Notify asks for the latest checkpoint to be submitted now; it never
	// blocks.
	Notify()
	// Status reports each witness.
	Status() []witness.Status
}

// mountAuditLog serves the audit store's Merkle log under /v1/audit/ (see
// package tiles): the checkpoint (cosigned, with witnesses), tiles, entry
// bundles and proofs, read from the store; the verifier key from the
// enclave's Info snapshot.
func (a *API) mountAuditLog() {
	a.checkpoint = a.cfg.Audit.Checkpoint
	if a.cfg.Witnesses != nil {
		a.checkpoint = a.cfg.Witnesses.Checkpoint
	}
	h := tiles.New(a.cfg.Audit, tiles.Options{Logger: a.log, Checkpoint: a.checkpoint})
	a.route("GET "+httpapi.PathAuditCheckpoint, "audit_checkpoint", a.readLimited(h.ServeHTTP))
	a.route("GET /v1/audit/tile/", "audit_tile", a.readLimited(h.ServeHTTP))
	a.route("GET /v1/audit/proof/{index}", "audit_proof", a.readLimited(h.ServeHTTP))
	a.route("GET "+httpapi.PathAuditVerifierKey, "audit_verifier_key", a.readLimited(a.auditVerifierKey))
	a.mountAuditLogs()
}

// auditVerifierKey: GET /v1/audit/verifier-key, the note verifier key of
// the checkpoints of the log this host keeps (Config.AuditLogName): the
// manifest's checkpoint_verifier_key for the default log, the same key under
// the log's origin for a named one, as the enclave's Info reports it. Text.
func (a *API) auditVerifierKey(w http.ResponseWriter, r *http.Request) {
	p := a.published.Load()
	if p == nil {
		writeError(w, errorf(http.StatusServiceUnavailable, KindEnclaveUnavailable, "the enclave has not been reached yet; try again shortly"))
		return
	}
	if p.vkeyErr != "" {
		writeError(w, errorf(http.StatusServiceUnavailable, KindUnavailable, "the audit log's verifier key is not known: "+p.vkeyErr))
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "public, max-age=60")
	io.WriteString(w, p.vkey+"\n")
}

// notifyWitnesses nudges the witnesses after a mint appended to the log.
func (a *API) notifyWitnesses() {
	if a.cfg.Witnesses != nil {
		a.cfg.Witnesses.Notify()
	}
}
