package tiles

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/agentkeys/broker/host/audit"
	"github.com/agentkeys/broker/shared/httpapi"
)

// Logs serves every log of a store that holds several (audit.Logs, the
// PostgreSQL store), each as a tlog-tiles log of its own under
// httpapi.AuditLogPath(name):
//
//	/v1/audit/logs/                      the logs, an httpapi.AuditLogs (JSON)
//	/v1/audit/logs/{name}/checkpoint
//	/v1/audit/logs/{name}/tile/<L>/<N>[.p/<W>]
//	/v1/audit/logs/{name}/tile/entries/<N>[.p/<W>]
//	/v1/audit/logs/{name}/proof/{index}
//	/v1/audit/logs/{name}/verifier-key   the own log's only
//
// {name} is the log's name, httpapi.AuditDefaultLog for the default log.
// The routes answer as New's do. A name that is not a log name, or a log
// that is not in the store, is 404 with a JSON httpapi.Error. Of opts,
// Checkpoint and VerifierKey are the own log's (the host knows no other
// log's cosignatures or key; a client gets those from that log's enclave).
type Logs struct {
	logs audit.Logs
	own  *handler
	opts Options
	mux  *http.ServeMux
}

// Route patterns of Logs, for a caller that mounts them one by one.
const (
	LogsIndex       = "GET " + httpapi.PathAuditLogs + "{$}"
	LogsCheckpoint  = "GET " + httpapi.PathAuditLogs + "{name}/checkpoint"
	LogsTile        = "GET " + httpapi.PathAuditLogs + "{name}/tile/{path...}"
	LogsProof       = "GET " + httpapi.PathAuditLogs + "{name}/proof/{index}"
	LogsVerifierKey = "GET " + httpapi.PathAuditLogs + "{name}/verifier-key"
)

// NewLogs returns the handler of logs' routes.
func NewLogs(logs audit.Logs, opts Options) (*Logs, error) {
	own, err := logs.LogReader(logs.OwnLog())
	if err != nil {
		return nil, err
	}
	l := &Logs{logs: logs, opts: opts, mux: http.NewServeMux()}
	l.own = New(own, opts).(*handler)
	l.mux.HandleFunc(LogsIndex, l.index)
	l.mux.HandleFunc(LogsCheckpoint, l.with((*handler).checkpoint))
	l.mux.HandleFunc(LogsTile, l.with((*handler).tile))
	l.mux.HandleFunc(LogsProof, l.with((*handler).proof))
	l.mux.HandleFunc(LogsVerifierKey, l.verifierKey)
	return l, nil
}

func (l *Logs) ServeHTTP(w http.ResponseWriter, r *http.Request) { l.mux.ServeHTTP(w, r) }

// with serves a route of New's for the log the path names.
func (l *Logs) with(route func(*handler, http.ResponseWriter, *http.Request)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		h, ok := l.handler(w, r)
		if ok {
			route(h, w, r)
		}
	}
}

// handler returns the handler of the log the path names, or answers 404.
func (l *Logs) handler(w http.ResponseWriter, r *http.Request) (*handler, bool) {
	name := httpapi.AuditLogName(r.PathValue("name"))
	if name == l.logs.OwnLog() {
		return l.own, true
	}
	src, err := l.logs.LogReader(name)
	if err != nil {
		writeNotFound(w, fmt.Sprintf("%q is not an audit log name: want %s or 1 to 63 lowercase letters, digits and '-'", r.PathValue("name"), httpapi.AuditDefaultLog))
		return nil, false
	}
	return &handler{src: src, opts: Options{Checkpoint: src.Checkpoint, Logger: l.own.opts.Logger}}, true
}

func (l *Logs) index(w http.ResponseWriter, r *http.Request) {
	names, err := l.logs.LogNames(r.Context())
	if err != nil {
		l.own.internal(w, r, fmt.Errorf("failed to list the logs: %w", err))
		return
	}
	out := httpapi.AuditLogs{Logs: []httpapi.AuditLog{}}
	for _, n := range names {
		out.Logs = append(out.Logs, httpapi.AuditLog{Name: n, Path: httpapi.AuditLogPath(n), Own: n == l.logs.OwnLog()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", cacheNone)
	json.NewEncoder(w).Encode(out)
}

func (l *Logs) verifierKey(w http.ResponseWriter, r *http.Request) {
	if name := httpapi.AuditLogName(r.PathValue("name")); name != l.logs.OwnLog() {
		writeNotFound(w, fmt.Sprintf("this host serves the verifier key of its own log only (%s): get the key of the log %q from its enclave's attestation (checkpoint_verifier_key)",
			httpapi.AuditLogPath(l.logs.OwnLog()), r.PathValue("name")))
		return
	}
	l.own.verifierKey(w, r)
}

// writeNotFound answers 404 with an httpapi.Error.
func writeNotFound(w http.ResponseWriter, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", cacheNone)
	w.WriteHeader(http.StatusNotFound)
	json.NewEncoder(w).Encode(httpapi.Error{Error: "not_found", Message: msg})
}

// unknownLog answers a read of a log that is not in the store.
func unknownLog(w http.ResponseWriter, err error) bool {
	if !errors.Is(err, audit.ErrUnknownLog) {
		return false
	}
	writeNotFound(w, "no audit log of that name in this host's store: "+err.Error())
	return true
}
