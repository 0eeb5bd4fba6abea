// Package tiles serves the audit log over HTTP as a C2SP tiled transparency
// log (https://c2sp.org/tlog-tiles), plus the log's verifier key and C2SP
// tlog-proof inclusion proofs.
//
// # Routes
//
// [New] returns an http.Handler for these GET routes (the prefix is
// /v1/audit/, so a tlog-tiles client is given the base URL
// https://broker.example.com/v1/audit/):
//
//	/v1/audit/checkpoint                 the latest (cosigned) checkpoint, a signed note
//	/v1/audit/tile/<L>/<N>[.p/<W>]       hash tiles, height 8
//	/v1/audit/tile/entries/<N>[.p/<W>]   entry bundles (big-endian uint16 length, entry)
//	/v1/audit/verifier-key               the checkpoint's note verifier key, text
//	/v1/audit/proof/{index}              tlog-proof of entry index under the checkpoint
//
// <N> is written in 3-digit groups, all but the last prefixed with x:
// 1234067 is x001/x234/067. A tile or bundle that the current checkpoint's
// tree does not contain is 404. Full tiles and bundles never change and are
// served "public, max-age=31536000, immutable"; partial ones for a minute;
// the checkpoint and proofs with no-cache. While the log is empty (the
// Source has no checkpoint) the checkpoint, every tile and every proof are
// 404.
//
// A store that holds the logs of several hosts (the PostgreSQL store) is
// served by [NewLogs] as well: every log in it under
// /v1/audit/logs/{name}/, with the same routes.
//
// # Trust
//
// Nothing here needs to be trusted: the host reads what its [Source] stores
// and a client checks every tile against the signed checkpoint's root. The
// handler parses the checkpoint only to learn the tree size.
package tiles

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/agentkeys/broker/host/audit"
	"github.com/agentkeys/broker/shared/httpapi"
	"github.com/agentkeys/broker/shared/tlogproof"
)

// Source is the stored log: the audit store's LogReader. Its Checkpoint is
// nil while the log is empty; the handler then answers 404 to the
// checkpoint, every tile and every proof.
type Source = audit.LogReader

// errEmpty is current's error for a log with no checkpoint yet.
var errEmpty = errors.New("the audit log is empty: no checkpoint yet")

// Height is the tile height of C2SP tlog-tiles.
const Height = 8

// Width is the number of hashes (or entries) in a full tile (or bundle).
const Width = 1 << Height

// Cache-Control values.
const (
	cacheImmutable = "public, max-age=31536000, immutable"
	cachePartial   = "public, max-age=60"
	cacheNone      = "no-cache"
)

// Options configures the handler.
type Options struct {
	// VerifierKey is the checkpoint's note verifier key, served at
	// /v1/audit/verifier-key (empty: 404).
	VerifierKey string
	// Checkpoint, if set, is what /v1/audit/checkpoint serves and proofs
	// embed instead of Source.Checkpoint: the witness package's cosigned
	// checkpoint.
	Checkpoint func(ctx context.Context) ([]byte, error)
	// Logger receives errors reading the source (default slog.Default()).
	Logger *slog.Logger
}

type handler struct {
	src  Source
	opts Options
	mux  *http.ServeMux
}

// New returns the handler of the routes in the package doc.
func New(src Source, opts Options) http.Handler {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Checkpoint == nil {
		opts.Checkpoint = src.Checkpoint
	}
	h := &handler{src: src, opts: opts, mux: http.NewServeMux()}
	h.mux.HandleFunc("GET "+httpapi.PathAudit+"checkpoint", h.checkpoint)
	h.mux.HandleFunc("GET "+httpapi.PathAudit+"verifier-key", h.verifierKey)
	h.mux.HandleFunc("GET "+httpapi.PathAudit+"proof/{index}", h.proof)
	h.mux.HandleFunc("GET "+httpapi.PathAudit+"tile/{path...}", h.tile)
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// ParseCheckpointSize returns the tree of a checkpoint note: its second and
// third lines. It does not verify any signature.
func ParseCheckpointSize(note []byte) (tlog.Tree, error) {
	lines := strings.SplitN(string(note), "\n", 4)
	if len(lines) < 4 {
		return tlog.Tree{}, errors.New("malformed checkpoint")
	}
	n, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || n < 0 || strconv.FormatInt(n, 10) != lines[1] {
		return tlog.Tree{}, errors.New("malformed checkpoint size")
	}
	hash, err := tlog.ParseHash(lines[2])
	if err != nil {
		return tlog.Tree{}, errors.New("malformed checkpoint root hash")
	}
	return tlog.Tree{N: n, Hash: hash}, nil
}

// current returns the checkpoint to serve and its tree.
func (h *handler) current(ctx context.Context) ([]byte, tlog.Tree, error) {
	cp, err := h.opts.Checkpoint(ctx)
	if err != nil {
		return nil, tlog.Tree{}, fmt.Errorf("failed to read the checkpoint: %w", err)
	}
	if cp == nil {
		return nil, tlog.Tree{}, errEmpty
	}
	tree, err := ParseCheckpointSize(cp)
	if err != nil {
		return nil, tlog.Tree{}, fmt.Errorf("failed to parse the stored checkpoint: %w", err)
	}
	return cp, tree, nil
}

// internal answers a failure of current or of reading the source: 404 for
// an empty log, 500 otherwise.
func (h *handler) internal(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, errEmpty) {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	if unknownLog(w, err) {
		return
	}
	h.opts.Logger.ErrorContext(r.Context(), "audit log read failed", "path", r.URL.Path, "err", err.Error())
	http.Error(w, "internal error reading the audit log", http.StatusInternalServerError)
}

func (h *handler) checkpoint(w http.ResponseWriter, r *http.Request) {
	cp, _, err := h.current(r.Context())
	if err != nil {
		h.internal(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", cacheNone)
	w.Write(cp)
}

func (h *handler) verifierKey(w http.ResponseWriter, r *http.Request) {
	if h.opts.VerifierKey == "" {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", cachePartial)
	fmt.Fprintln(w, h.opts.VerifierKey)
}

func (h *handler) proof(w http.ResponseWriter, r *http.Request) {
	s := r.PathValue("index")
	index, err := strconv.ParseInt(s, 10, 64)
	if err != nil || index < 0 || strconv.FormatInt(index, 10) != s {
		http.Error(w, "the index must be a decimal entry index", http.StatusBadRequest)
		return
	}
	cp, tree, err := h.current(r.Context())
	if err != nil {
		h.internal(w, r, err)
		return
	}
	if index >= tree.N {
		http.Error(w, fmt.Sprintf("entry %d is not in the log yet (size %d)", index, tree.N), http.StatusNotFound)
		return
	}
	rp, err := tlog.ProveRecord(tree.N, index, h.hashReader(r.Context()))
	if err != nil {
		h.internal(w, r, fmt.Errorf("failed to prove entry %d: %w", index, err))
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", cacheNone)
	w.Write(tlogproof.Proof{Index: index, Hashes: rp, Checkpoint: cp}.Marshal())
}

func (h *handler) hashReader(ctx context.Context) tlog.HashReader {
	return tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) {
		return h.src.ReadHashes(ctx, indexes)
	})
}

// ParsePath parses a tile path relative to the prefix ("tile/0/x001/234",
// "tile/entries/005.p/7"). Entry bundles have L == -1.
func ParsePath(path string) (tlog.Tile, error) {
	rest, ok := strings.CutPrefix(path, "tile/")
	if !ok {
		return tlog.Tile{}, errors.New("not a tile path")
	}
	var t tlog.Tile
	t.H = Height
	level, rest, _ := strings.Cut(rest, "/")
	if level == "entries" {
		t.L = -1
	} else {
		l, err := strconv.Atoi(level)
		if err != nil || l < 0 || l > 63 || strconv.Itoa(l) != level {
			return tlog.Tile{}, errors.New("bad tile level")
		}
		t.L = l
	}
	t.W = Width
	if i := strings.Index(rest, ".p/"); i >= 0 {
		ws := rest[i+3:]
		w, err := strconv.Atoi(ws)
		if err != nil || w < 1 || w >= Width || strconv.Itoa(w) != ws {
			return tlog.Tile{}, errors.New("bad partial tile width")
		}
		t.W = w
		rest = rest[:i]
	}
	elems := strings.Split(rest, "/")
	if len(elems) > 7 { // 2^63 needs 7 groups
		return tlog.Tile{}, errors.New("bad tile index")
	}
	if len(elems) > 1 && elems[0] == "x000" {
		return tlog.Tile{}, errors.New("bad tile index")
	}
	var n int64
	for i, e := range elems {
		if i < len(elems)-1 {
			var ok bool
			if e, ok = strings.CutPrefix(e, "x"); !ok {
				return tlog.Tile{}, errors.New("bad tile index")
			}
		}
		if len(e) != 3 || e[0] < '0' || e[0] > '9' || e[1] < '0' || e[1] > '9' || e[2] < '0' || e[2] > '9' {
			return tlog.Tile{}, errors.New("bad tile index")
		}
		d, _ := strconv.Atoi(e)
		if n > (1<<63-1-int64(d))/1000 {
			return tlog.Tile{}, errors.New("bad tile index")
		}
		n = n*1000 + int64(d)
	}
	t.N = n
	return t, nil
}

// Path is the inverse of ParsePath.
func Path(t tlog.Tile) string {
	var b strings.Builder
	b.WriteString("tile/")
	if t.L == -1 {
		b.WriteString("entries")
	} else {
		b.WriteString(strconv.Itoa(t.L))
	}
	n := t.N
	var groups []string
	for {
		groups = append(groups, fmt.Sprintf("%03d", n%1000))
		n /= 1000
		if n == 0 {
			break
		}
	}
	for i := len(groups) - 1; i >= 0; i-- {
		b.WriteString("/")
		if i > 0 {
			b.WriteString("x")
		}
		b.WriteString(groups[i])
	}
	if t.W != Width {
		b.WriteString(".p/" + strconv.Itoa(t.W))
	}
	return b.String()
}

// inTree reports whether tree size n contains all of tile t: its last hash
// (or entry) covers entries below n.
func inTree(t tlog.Tile, n int64) bool {
	l := t.L
	if l < 0 {
		l = 0
	}
	if l*Height >= 63 {
		return false
	}
	span := int64(1) << (l * Height) // entries per hash at level l
	last := t.N*Width + int64(t.W)   // hashes of level l the tile reaches
	if last < t.N || last > (1<<63-1)/span {
		return false
	}
	return last*span <= n
}

func (h *handler) tile(w http.ResponseWriter, r *http.Request) {
	t, err := ParsePath("tile/" + r.PathValue("path"))
	if err != nil {
		http.Error(w, "malformed tile path: "+err.Error(), http.StatusNotFound)
		return
	}
	_, tree, err := h.current(r.Context())
	if err != nil {
		h.internal(w, r, err)
		return
	}
	if !inTree(t, tree.N) {
		http.Error(w, "tile beyond the tree", http.StatusNotFound)
		return
	}
	var data []byte
	if t.L == -1 {
		data, err = h.bundle(r.Context(), t)
	} else {
		data, err = tlog.ReadTileData(t, h.hashReader(r.Context()))
	}
	if err != nil {
		h.internal(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	if t.W == Width {
		w.Header().Set("Cache-Control", cacheImmutable)
	} else {
		w.Header().Set("Cache-Control", cachePartial)
	}
	w.Write(data)
}

func (h *handler) bundle(ctx context.Context, t tlog.Tile) ([]byte, error) {
	start := t.N * Width
	entries, err := h.src.ReadEntries(ctx, start, start+int64(t.W))
	if err != nil {
		return nil, fmt.Errorf("failed to read entries [%d, %d): %w", start, start+int64(t.W), err)
	}
	if len(entries) != t.W {
		return nil, fmt.Errorf("read %d entries from [%d, %d)", len(entries), start, start+int64(t.W))
	}
	var b bytes.Buffer
	for i, e := range entries {
		if len(e) > 0xffff {
			return nil, fmt.Errorf("entry %d is %d bytes, more than a bundle can hold", start+int64(i), len(e))
		}
		b.Write(binary.BigEndian.AppendUint16(nil, uint16(len(e))))
		b.Write(e)
	}
	return b.Bytes(), nil
}
