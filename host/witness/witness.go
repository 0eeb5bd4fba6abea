// Package witness submits the audit log's checkpoints to witnesses (C2SP
// tlog-witness, https://c2sp.org/tlog-witness), collects their cosignatures
// (C2SP tlog-cosignature, cosignature/v1) and serves the checkpoint with the
// cosignatures it gathered.
//
// # Use
//
//	ws, err := witness.New(witness.Config{Source: store, Witnesses: …, Registerer: reg})
//	go ws.Run(ctx)                       // polls the store, submits each new checkpoint
//	tiles.New(store, tiles.Options{Checkpoint: ws.Checkpoint, …})
//	ws.Notify()                          // after a mint, to submit without waiting
//	ws.Status()                          // per-witness detail for /readyz
//
// # Protocol
//
// For each witness the host remembers the size the witness last cosigned
// (initially unknown, sent as "old 0"). A submission is
//
//	old <size>
//	<consistency proof from size to the checkpoint's size, one base64 hash a line>
//
//	<checkpoint note>
//
// 200 carries cosignature lines; each is verified with the witness's key
// before it is kept. 409 carries the size the witness holds: the host
// retries once from that size. 422 (inconsistent), 403 (bad signature,
// unknown key) and 404 (unknown log) are failures: a witness that refuses a
// checkpoint is a finding for an operator, never a reason to stop minting.
// A witness that is down or refuses simply falls behind; its lag in entries is
// the gauge agentkeys_witness_lag_entries{witness} and part of [Status].
//
// [Witnesses.Checkpoint] serves the latest checkpoint with the cosignatures
// gathered for exactly it: right after a mint, until the next Sync returns,
// it carries only the log's signature.
//
// # Trust
//
// Witnesses are untrusted peers: every response is read with a bound and a
// timeout and verified; a cosignature that does not verify is dropped.
package witness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/agentkeys/broker/host/tiles"
	"github.com/agentkeys/broker/shared/tlogproof"
)

// Defaults of Config.
const (
	DefaultTimeout     = 10 * time.Second
	DefaultInterval    = 5 * time.Second
	DefaultMaxResponse = 64 << 10
)

// Witness is one configured witness.
type Witness struct {
	// URL is the submission prefix: add-checkpoint is POSTed to
	// URL + "/add-checkpoint".
	URL string
	// VerifierKey is the witness's cosignature/v1 verifier key
	// (name+hash+base64 of 0x04 and the Ed25519 public key).
	VerifierKey string
}

// Config configures New.
type Config struct {
	// Source is the stored log: its latest checkpoint and the hashes for
	// consistency proofs.
	Source tiles.Source
	// Witnesses to submit to; none is valid (Checkpoint then serves the
	// log's own checkpoint).
	Witnesses []Witness
	// Client makes the requests (default: a client with Timeout).
	Client *http.Client
	// Timeout bounds each request (default 10s).
	Timeout time.Duration
	// Interval is how often Run polls the source and retries witnesses that
	// are behind (default 5s).
	Interval time.Duration
	// MaxResponse bounds a witness's response body (default 64 KiB).
	MaxResponse int64
	// Registerer gets the agentkeys_witness_* metrics (nil: none).
	Registerer prometheus.Registerer
	// Logger (default slog.Default()).
	Logger *slog.Logger
}

// Status is what the host knows of one witness.
type Status struct {
	Name string `json:"name"`
	URL  string `json:"url"`
	// VerifierKey is its configured cosignature/v1 verifier key.
	VerifierKey string `json:"verifier_key"`
	// CosignedSize is the size of the latest checkpoint it cosigned for us
	// (-1: none yet).
	CosignedSize int64 `json:"cosigned_size"`
	// Lag is the log's size minus CosignedSize (all of it when none).
	Lag int64 `json:"lag_entries"`
	// LastError is the last failure, empty after a success.
	LastError string `json:"last_error,omitempty"`
}

type state struct {
	w        Witness
	verifier note.Verifier
	name     string
	known    int64 // size the witness holds, as far as we know (0: unknown)
	cosigned int64 // size of the last checkpoint it cosigned for us; -1 none
	text     string
	sigs     []note.Signature // its cosignatures on text
	lastErr  string
}

// Witnesses submits checkpoints to a set of witnesses.
type Witnesses struct {
	cfg    Config
	notify chan struct{}
	syncMu sync.Mutex // one Sync at a time

	mu     sync.Mutex
	states []*state
	size   int64 // size of the latest checkpoint submitted

	lag      *prometheus.GaugeVec
	failures *prometheus.CounterVec
}

// New validates cfg and returns the witness set.
func New(cfg Config) (*Witnesses, error) {
	if cfg.Source == nil {
		return nil, errors.New("witness: no source")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.MaxResponse <= 0 {
		cfg.MaxResponse = DefaultMaxResponse
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: cfg.Timeout}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ws := &Witnesses{
		cfg:    cfg,
		notify: make(chan struct{}, 1),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "agentkeys_witness_lag_entries",
			Help: "Entries the log holds beyond the latest checkpoint the witness cosigned.",
		}, []string{"witness"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentkeys_witness_failures_total",
			Help: "Checkpoint submissions a witness refused or failed, by HTTP status (or \"error\").",
		}, []string{"witness", "status"}),
	}
	seen := map[string]bool{}
	for _, w := range cfg.Witnesses {
		v, err := tlogproof.NewCosignatureVerifier(w.VerifierKey)
		if err != nil {
			return nil, fmt.Errorf("witness %s: %w", w.URL, err)
		}
		if seen[v.Name()] {
			return nil, fmt.Errorf("witness %s is configured twice", v.Name())
		}
		seen[v.Name()] = true
		if !strings.HasPrefix(w.URL, "http://") && !strings.HasPrefix(w.URL, "https://") {
			return nil, fmt.Errorf("witness %s: URL %q is not http(s)", v.Name(), w.URL)
		}
		w.URL = strings.TrimSuffix(w.URL, "/")
		ws.states = append(ws.states, &state{w: w, verifier: v, name: v.Name(), cosigned: -1})
		ws.lag.WithLabelValues(v.Name()).Set(0)
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{ws.lag, ws.failures} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("failed to register witness metrics: %w", err)
			}
		}
	}
	return ws, nil
}

// Notify asks Run to submit the latest checkpoint now. It never blocks.
func (ws *Witnesses) Notify() {
	select {
	case ws.notify <- struct{}{}:
	default:
	}
}

// Run syncs every Interval and on Notify until ctx is done.
func (ws *Witnesses) Run(ctx context.Context) {
	t := time.NewTicker(ws.cfg.Interval)
	defer t.Stop()
	for {
		if err := ws.Sync(ctx); err != nil && ctx.Err() == nil {
			ws.cfg.Logger.WarnContext(ctx, "witness sync failed", "err", err.Error())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-ws.notify:
		}
	}
}

// Sync submits the source's latest checkpoint to every witness that has not
// cosigned it, in parallel, and waits for them. Witness failures are
// recorded in Status, the metrics and the log; the error is only for a
// failure to read the source.
func (ws *Witnesses) Sync(ctx context.Context) error {
	ws.syncMu.Lock()
	defer ws.syncMu.Unlock()
	cp, err := ws.cfg.Source.Checkpoint(ctx)
	if err != nil {
		return fmt.Errorf("failed to read the checkpoint: %w", err)
	}
	if cp == nil {
		return nil // an empty log: nothing to submit until the first entry
	}
	tree, err := tiles.ParseCheckpointSize(cp)
	if err != nil {
		return fmt.Errorf("failed to parse the stored checkpoint: %w", err)
	}
	text, _, ok := bytes.Cut(cp, []byte("\n\n"))
	if !ok {
		return errors.New("stored checkpoint is not a signed note")
	}
	ws.mu.Lock()
	ws.size = tree.N
	var todo []*state
	for _, s := range ws.states {
		if s.text != string(text)+"\n" {
			todo = append(todo, s)
		}
	}
	ws.mu.Unlock()

	var wg sync.WaitGroup
	for _, s := range todo {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ws.submit(ctx, s, cp, tree)
		}()
	}
	wg.Wait()
	ws.updateLag()
	return nil
}

func (ws *Witnesses) updateLag() {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for _, s := range ws.states {
		ws.lag.WithLabelValues(s.name).Set(float64(ws.lagLocked(s)))
	}
}

func (ws *Witnesses) lagLocked(s *state) int64 {
	if s.cosigned < 0 {
		return ws.size
	}
	return max(ws.size-s.cosigned, 0)
}

// httpError is a witness's non-200 answer.
type httpError struct {
	status int
	body   string
}

func (e *httpError) Error() string {
	return fmt.Sprintf("witness answered %d: %s", e.status, e.body)
}

// submit sends cp to one witness, retrying once with the size a 409 names.
func (ws *Witnesses) submit(ctx context.Context, s *state, cp []byte, tree tlog.Tree) {
	ws.mu.Lock()
	old := s.known
	ws.mu.Unlock()
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		var sigs []note.Signature
		var conflict int64
		sigs, conflict, err = ws.addCheckpoint(ctx, s, old, cp, tree)
		if err == nil {
			ws.mu.Lock()
			s.known, s.cosigned = tree.N, tree.N
			s.text = string(cp[:bytes.Index(cp, []byte("\n\n"))+1])
			s.sigs = sigs
			s.lastErr = ""
			ws.mu.Unlock()
			ws.cfg.Logger.InfoContext(ctx, "witness cosigned checkpoint", "witness", s.name, "size", tree.N)
			return
		}
		if conflict < 0 {
			break
		}
		ws.mu.Lock()
		s.known = conflict
		ws.mu.Unlock()
		if conflict > tree.N {
			err = fmt.Errorf("witness holds size %d, larger than the log's %d: the witness saw another history or the store rolled back", conflict, tree.N)
			break
		}
		old = conflict
	}
	status := "error"
	var he *httpError
	if errors.As(err, &he) {
		status = strconv.Itoa(he.status)
	}
	ws.failures.WithLabelValues(s.name, status).Inc()
	ws.mu.Lock()
	s.lastErr = err.Error()
	ws.mu.Unlock()
	ws.cfg.Logger.WarnContext(ctx, "witness did not cosign checkpoint", "witness", s.name, "size", tree.N, "status", status, "err", err.Error())
}

// addCheckpoint makes one request. On 409 it returns the witness's size as
// conflict (else -1).
func (ws *Witnesses) addCheckpoint(ctx context.Context, s *state, old int64, cp []byte, tree tlog.Tree) ([]note.Signature, int64, error) {
	if old > tree.N {
		return nil, -1, fmt.Errorf("witness holds size %d, larger than the log's %d", old, tree.N)
	}
	var body bytes.Buffer
	fmt.Fprintf(&body, "old %d\n", old)
	if old > 0 && old < tree.N {
		proof, err := tlog.ProveTree(tree.N, old, tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
			return ws.cfg.Source.ReadHashes(ctx, idx)
		}))
		if err != nil {
			return nil, -1, fmt.Errorf("failed to prove consistency from %d to %d: %w", old, tree.N, err)
		}
		for _, h := range proof {
			body.WriteString(h.String() + "\n")
		}
	}
	body.WriteString("\n")
	body.Write(cp)

	ctx, cancel := context.WithTimeout(ctx, ws.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.w.URL+"/add-checkpoint", &body)
	if err != nil {
		return nil, -1, fmt.Errorf("failed to build the request: %w", err)
	}
	resp, err := ws.cfg.Client.Do(req)
	if err != nil {
		return nil, -1, fmt.Errorf("failed to reach the witness: %w", err)
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, ws.cfg.MaxResponse+1))
	if err != nil {
		return nil, -1, fmt.Errorf("failed to read the witness's response: %w", err)
	}
	if int64(len(rb)) > ws.cfg.MaxResponse {
		return nil, -1, fmt.Errorf("witness response is longer than %d bytes", ws.cfg.MaxResponse)
	}
	return parseResponse(resp.StatusCode, rb, cp, s.verifier)
}

// parseResponse reads a witness's answer to add-checkpoint of cp: the
// verified cosignatures (200), or the size the witness holds (409, as
// conflict; else conflict is -1).
func parseResponse(status int, body, cp []byte, v note.Verifier) ([]note.Signature, int64, error) {
	switch status {
	case http.StatusOK:
	case http.StatusConflict:
		line := strings.TrimSuffix(string(body), "\n")
		n, err := strconv.ParseInt(line, 10, 64)
		if err != nil || n < 0 || strconv.FormatInt(n, 10) != line {
			return nil, -1, &httpError{status, "malformed size " + strconv.Quote(truncate(string(body)))}
		}
		return nil, n, &httpError{status, "witness holds size " + line}
	default:
		return nil, -1, &httpError{status, truncate(string(body))}
	}
	// The response is signature lines: append them to the note and let
	// note.Open, knowing only this witness's key, verify them.
	n, err := note.Open(append(bytes.Clone(cp), body...), note.VerifierList(v))
	if err != nil {
		return nil, -1, fmt.Errorf("witness returned no valid cosignature: %w", err)
	}
	return n.Sigs, -1, nil
}

func truncate(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// Checkpoint returns the source's latest checkpoint with the cosignatures of
// every witness that cosigned exactly it: what /v1/audit/checkpoint serves
// (tiles.Options.Checkpoint). While the log is empty it is nil.
func (ws *Witnesses) Checkpoint(ctx context.Context) ([]byte, error) {
	cp, err := ws.cfg.Source.Checkpoint(ctx)
	if err != nil || cp == nil {
		return nil, err // nil, nil for an empty log
	}
	i := bytes.Index(cp, []byte("\n\n"))
	if i < 0 {
		return nil, errors.New("stored checkpoint is not a signed note")
	}
	text := string(cp[:i+1])
	out := bytes.Clone(cp)
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for _, s := range ws.states {
		if s.text != text {
			continue
		}
		for _, sig := range s.sigs {
			if bytes.Contains(out, []byte("\n— "+sig.Name+" "+sig.Base64+"\n")) {
				continue
			}
			out = fmt.Appendf(out, "— %s %s\n", sig.Name, sig.Base64)
		}
	}
	return out, nil
}

// Status reports each witness, in configuration order: for /readyz.
func (ws *Witnesses) Status() []Status {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	out := make([]Status, 0, len(ws.states))
	for _, s := range ws.states {
		out = append(out, Status{Name: s.name, URL: s.w.URL, VerifierKey: s.w.VerifierKey, CosignedSize: s.cosigned, Lag: ws.lagLocked(s), LastError: s.lastErr})
	}
	return out
}

// ParseWitness parses a witness as the host's --witness flag gives it,
// URL=VKEY: the submission prefix and the cosignature/v1 verifier key (whose
// base64 has no '=', so the last '=' separates them).
func ParseWitness(s string) (Witness, error) {
	i := strings.LastIndex(s, "=")
	if i < 0 {
		return Witness{}, fmt.Errorf("%q is not URL=VKEY", s)
	}
	w := Witness{URL: strings.TrimSpace(s[:i]), VerifierKey: strings.TrimSpace(s[i+1:])}
	if !strings.HasPrefix(w.URL, "http://") && !strings.HasPrefix(w.URL, "https://") {
		return Witness{}, fmt.Errorf("%q: the URL %q is not http(s)", s, w.URL)
	}
	if _, err := tlogproof.NewCosignatureVerifier(w.VerifierKey); err != nil {
		return Witness{}, fmt.Errorf("%q: the key is not a cosignature/v1 verifier key: %w", s, err)
	}
	return w, nil
}
