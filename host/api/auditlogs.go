package api

import (
	"net/http"

	"github.com/agentkeys/broker/host/audit"
	"github.com/agentkeys/broker/host/tiles"
	"github.com/agentkeys/broker/shared/httpapi"
)

// mountAuditLogs serves, when the audit store holds the logs of several
// hosts (audit.Logs: PostgreSQL), every log in it under
// /v1/audit/logs/{name}/ (tiles.NewLogs): so any host serves the tiles and
// proofs of every log. The own log's checkpoint is the cosigned one, as
// under /v1/audit/, and its verifier key the enclave's; another log's key
// is 404.
func (a *API) mountAuditLogs() {
	logs, ok := a.cfg.Audit.(audit.Logs)
	if !ok {
		return
	}
	opts := tiles.Options{Logger: a.log}
	if a.cfg.Witnesses != nil {
		opts.Checkpoint = a.cfg.Witnesses.Checkpoint
	}
	h, err := tiles.NewLogs(logs, opts)
	if err != nil { // the store's own log name is valid: it opened
		a.log.Error("not serving the store's logs", "err", err.Error())
		return
	}
	a.route(tiles.LogsIndex, "audit_logs", a.readLimited(h.ServeHTTP))
	a.route(tiles.LogsCheckpoint, "audit_logs_checkpoint", a.readLimited(h.ServeHTTP))
	a.route(tiles.LogsTile, "audit_logs_tile", a.readLimited(h.ServeHTTP))
	a.route(tiles.LogsProof, "audit_logs_proof", a.readLimited(h.ServeHTTP))
	a.route(tiles.LogsVerifierKey, "audit_logs_verifier_key", a.readLimited(func(w http.ResponseWriter, r *http.Request) {
		if httpapi.AuditLogName(r.PathValue("name")) == logs.OwnLog() {
			a.auditVerifierKey(w, r)
			return
		}
		h.ServeHTTP(w, r)
	}))
}
