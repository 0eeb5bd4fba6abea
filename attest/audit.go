package attest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"filippo.io/torchwood"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/agentkeys/broker/shared/auditlog"
	"github.com/agentkeys/broker/shared/claims"
	"github.com/agentkeys/broker/shared/tlogproof"
)

// This file verifies the audit log: a C2SP tiled transparency log
// (https://c2sp.org/tlog-tiles) whose checkpoints the enclave signs and
// witnesses cosign.
//
// VerifyAuditLog reads every entry bundle, recomputes the Merkle tree from
// the entries (RFC 6962 leaf hashes → tlog stored hashes), and checks that
// the root is the checkpoint's, that every hash tile the host serves is the
// one the entries give, consistency with a checkpoint saved earlier, and the
// inclusion of a JWT. VerifyAuditProof checks a saved C2SP tlog-proof.

// AuditLog is where an audit log is read from: a tlog-tiles prefix. Paths
// are relative to it: "checkpoint", "tile/0/x001/234", "tile/entries/005.p/7".
type AuditLog interface {
	ReadEndpoint(ctx context.Context, path string) ([]byte, error)
}

// auditTileWidth is the width of a full tile of tlog-tiles.
const auditTileWidth = torchwood.TileWidth

// DefaultAuditMaxBody bounds each HTTP response of NewHTTPAuditLog: a full
// entry bundle of 256 entries of up to 64 KiB each.
const DefaultAuditMaxBody = 256 * (2 + 65535)

// NewHTTPAuditLog reads a log over HTTP. base is the log's prefix
// (https://broker.example.com/v1/audit/); a bare origin
// (https://broker.example.com) gets /v1/audit/ appended.
func NewHTTPAuditLog(base string, client *http.Client, maxBody int64) (AuditLog, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("%q is not an http(s) URL", base)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/v1/audit/"
	}
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
	}
	if client == nil {
		client = http.DefaultClient
	}
	if maxBody <= 0 {
		maxBody = DefaultAuditMaxBody
	}
	return &httpAuditLog{base: u.String(), lo: LiveOptions{Client: client, MaxBody: maxBody}}, nil
}

type httpAuditLog struct {
	base string
	lo   LiveOptions
}

func (h *httpAuditLog) ReadEndpoint(ctx context.Context, path string) ([]byte, error) {
	b, _, err := get(ctx, h.lo, h.base+path)
	return b, err
}

// NewDirAuditLog reads a log that ExportAuditLog wrote to dir.
func NewDirAuditLog(dir string) AuditLog { return dirAuditLog(dir) }

type dirAuditLog string

func (d dirAuditLog) ReadEndpoint(_ context.Context, path string) ([]byte, error) {
	if !filepath.IsLocal(path) {
		return nil, fmt.Errorf("%q is not a log path", path)
	}
	f, err := os.Open(filepath.Join(string(d), filepath.FromSlash(path)))
	if err != nil {
		return nil, fmt.Errorf("failed to read the exported log: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, DefaultAuditMaxBody+1))
	if err != nil {
		return nil, fmt.Errorf("failed to read the exported log: %w", err)
	}
	if len(b) > DefaultAuditMaxBody {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, DefaultAuditMaxBody)
	}
	return b, nil
}

// AuditOptions says what VerifyAuditLog and VerifyAuditProof trust and check.
type AuditOptions struct {
	// Key is the log's note verifier key: the manifest's
	// checkpoint_verifier_key for the default log, the same key under the
	// name ORIGIN/NAME for the log named NAME (auditlog.LogVerifierKey).
	// Required unless ManifestKey is given.
	Key string
	// ManifestKey is the checkpoint_verifier_key of a manifest the caller
	// verified (VerifyManifest): it binds every log of that enclave. With it,
	// a Key given must be the key of one of those logs
	// (auditlog.VerifierKeyLog), and without a Key the checkpoint's origin
	// names the log and its key is derived (auditlog.OriginVerifierKey); an
	// origin that is not one of the enclave's logs fails.
	ManifestKey string
	// Witnesses are cosignature/v1 verifier keys: each must have cosigned
	// the checkpoint.
	Witnesses []string
	// Since is a checkpoint saved from an earlier run: the log must have
	// grown from it (consistency proof), not forked or rolled back.
	Since []byte
	// JWT is a token the issuer minted: its jti, an audit log entry id
	// (auditlog.EntryID), must name this log (see CheckpointLogName; the
	// JWT's iss gives the default log's origin without ManifestKey) and an
	// entry in it that records the JWT.
	JWT string
	// Progress, if set, is called as tiles are read.
	Progress func(done, total int64)
	// Entry, if set, is called with every entry VerifyAuditLog reads, in
	// index order, before the entries are checked against the checkpoint:
	// trust what it was given only if the report is OK. entry is only valid
	// during the call.
	Entry func(index int64, entry []byte)
}

// AuditResult is a verification's report, and the checkpoint verified (to
// save for the next run's Since) with its tree.
type AuditResult struct {
	Report
	Checkpoint []byte
	Tree       tlog.Tree
}

// checkpointKey returns the key to verify a checkpoint with: opts.Key,
// checked against opts.ManifestKey if given, or the key ManifestKey gives the
// log the checkpoint's origin names.
func checkpointKey(r *Report, raw []byte, opts AuditOptions, label string) (string, bool) {
	if opts.ManifestKey == "" {
		return opts.Key, true
	}
	check := label + " key"
	if opts.Key != "" {
		name, err := auditlog.VerifierKeyLog(opts.ManifestKey, opts.Key)
		if err != nil {
			r.fail(check, "--key is not a key of the manifest's enclave: %v", err)
			return "", false
		}
		r.pass(check, "--key is the manifest's checkpoint key for %s", LogLabel(name))
		return opts.Key, true
	}
	origin, _, _ := bytes.Cut(raw[:min(len(raw), 1024)], []byte("\n"))
	vkey, err := auditlog.OriginVerifierKey(opts.ManifestKey, string(origin))
	if err != nil {
		r.fail(check, "the checkpoint is not of a log of the manifest's enclave: %v", err)
		return "", false
	}
	r.pass(check, "the manifest's checkpoint key under the checkpoint's origin %s", origin)
	return vkey, true
}

// LogLabel names a log in a message: "the default log" or "the log \"NAME\"".
func LogLabel(name string) string {
	if name == "" {
		return "the default log"
	}
	return fmt.Sprintf("the log %q", name)
}

// openCheckpoint verifies a checkpoint's signature with its key (see
// checkpointKey) and its cosignatures with opts.Witnesses.
func openCheckpoint(r *Report, raw []byte, opts AuditOptions, requireWitnesses bool, label string) (tlog.Tree, bool) {
	key, ok := checkpointKey(r, raw, opts, label)
	if !ok {
		return tlog.Tree{}, false
	}
	logV, err := note.NewVerifier(key)
	if err != nil {
		r.fail(label, "--key is not a note verifier key: %v", err)
		return tlog.Tree{}, false
	}
	vs := []note.Verifier{logV}
	var wvs []note.Verifier
	if requireWitnesses {
		for _, k := range opts.Witnesses {
			v, err := tlogproof.NewCosignatureVerifier(k)
			if err != nil {
				r.fail(label, "--witness %q: %v", k, err)
				return tlog.Tree{}, false
			}
			wvs = append(wvs, v)
		}
		vs = append(vs, wvs...)
	}
	n, err := note.Open(raw, note.VerifierList(vs...))
	var invalid *note.InvalidSignatureError
	switch {
	case errors.As(err, &invalid):
		r.fail(label, "the signature by %s does not verify", invalid.Name)
		return tlog.Tree{}, false
	case err != nil:
		r.fail(label, "not signed by --key %s: %v", logV.Name(), err)
		return tlog.Tree{}, false
	}
	has := func(v note.Verifier) (note.Signature, bool) {
		for _, s := range n.Sigs {
			if s.Name == v.Name() && s.Hash == v.KeyHash() {
				return s, true
			}
		}
		return note.Signature{}, false
	}
	if _, ok := has(logV); !ok {
		r.fail(label, "not signed by --key %s (only by witnesses)", logV.Name())
		return tlog.Tree{}, false
	}
	c, err := torchwood.ParseCheckpoint(n.Text)
	if err != nil {
		r.fail(label, "the signed text is not a checkpoint: %v", err)
		return tlog.Tree{}, false
	}
	r.pass(label, "%s, size %d, root %s, signed by %s", c.Origin, c.N, c.Hash, logV.Name())
	if c.Origin != logV.Name() {
		r.warn(label+" origin", "origin %q differs from the key's name %q", c.Origin, logV.Name())
	}
	for _, v := range wvs {
		s, ok := has(v)
		if !ok {
			r.fail("witness "+v.Name(), "no valid cosignature from %s on this checkpoint", v.Name())
			continue
		}
		ts, _ := tlogproof.CosignatureTime(s)
		r.pass("witness "+v.Name(), "cosigned at unix time %d", ts)
	}
	return c.Tree, true
}

// tileList lists the tiles of level l (-1: entry bundles) of a tree of n,
// the last one partial if n is not a multiple of its span.
func tileList(l int, n int64) []tlog.Tile {
	level := l
	if l < 0 {
		level = 0
	}
	hashes := n >> (8 * level) // hashes at this level
	var out []tlog.Tile
	for k := int64(0); k*auditTileWidth < hashes; k++ {
		w := min(auditTileWidth, hashes-k*auditTileWidth)
		out = append(out, tlog.Tile{H: 8, L: l, N: k, W: int(w)})
	}
	return out
}

// allTiles lists every hash tile of a tree of n (full ones and the partial
// ones of size n), level by level.
func allTiles(n int64) []tlog.Tile {
	var out []tlog.Tile
	for l := 0; l < 8 && n>>(8*l) > 0; l++ {
		out = append(out, tileList(l, n)...)
	}
	return out
}

// splitBundle cuts an entry bundle that should hold max entries; on error
// it returns the entries it could cut.
func splitBundle(b []byte, max int) (entries [][]byte, err error) {
	for len(b) > 0 {
		if len(entries) == max {
			return entries, fmt.Errorf("%d trailing bytes after %d entries", len(b), max)
		}
		if len(b) < 2 {
			return entries, errors.New("truncated length prefix")
		}
		l := int(binary.BigEndian.Uint16(b))
		if len(b) < 2+l {
			return entries, fmt.Errorf("entry length %d runs past the bundle", l)
		}
		entries = append(entries, b[2:2+l])
		b = b[2+l:]
	}
	if len(entries) < max {
		return entries, fmt.Errorf("%d entries, want %d", len(entries), max)
	}
	return entries, nil
}

// logTiles is a tlog.TileReader over an AuditLog.
type logTiles struct {
	ctx context.Context
	log AuditLog
}

func (t logTiles) Height() int { return 8 }
func (t logTiles) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, tl := range tiles {
		b, err := t.log.ReadEndpoint(t.ctx, torchwood.TilePath(tl))
		if err != nil {
			return nil, err
		}
		out[i] = b
	}
	return out, nil
}
func (t logTiles) SaveTiles([]tlog.Tile, [][]byte) {}

type memHashes []tlog.Hash

func (m *memHashes) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		if x < 0 || x >= int64(len(*m)) {
			return nil, fmt.Errorf("no stored hash %d", x)
		}
		out[i] = (*m)[x]
	}
	return out, nil
}

// JWTEntryID returns the audit log entry a JWT names in its jti claim
// (auditlog.EntryID): the log's name ("" for the default log) and the index.
// It does not verify the token (verify --jwt does).
func JWTEntryID(token string) (name string, index int64, err error) {
	c, err := jwtLogClaims(token)
	if err != nil {
		return "", 0, err
	}
	if name, index, err = auditlog.ParseEntryID(c.JTI); err != nil {
		return "", 0, fmt.Errorf("JWT jti %.100q is not an audit log entry id (INDEX, or LOGNAME/INDEX for a named log)", c.JTI)
	}
	return name, index, nil
}

// CheckpointLogName returns the name ("" for the default log) of the log
// whose checkpoint is given, from the checkpoint's origin (its first line):
// relative to the default log's origin, which is manifestKey's name when
// given (the manifest's checkpoint_verifier_key), else the one the enclave
// derives from issuer (HOST/PATH/audit). known is false when neither is
// given; an origin that is not a log of that enclave is an error.
func CheckpointLogName(checkpoint []byte, manifestKey, issuer string) (name string, known bool, err error) {
	origin, _, _ := bytes.Cut(checkpoint[:min(len(checkpoint), 1024)], []byte("\n"))
	var def string
	switch {
	case manifestKey != "":
		v, err := note.NewVerifier(manifestKey)
		if err != nil {
			return "", false, fmt.Errorf("the manifest's checkpoint key is not a note verifier key: %w", err)
		}
		def = v.Name()
	case issuer != "":
		u, err := url.Parse(issuer)
		if err != nil || u.Host == "" {
			return "", false, fmt.Errorf("issuer %.200q is not a URL", issuer)
		}
		def = u.Host + strings.TrimSuffix(u.Path, "/") + "/audit"
	default:
		return "", false, nil
	}
	name, err = auditlog.LogName(def, string(origin))
	if err != nil {
		return "", false, fmt.Errorf("the checkpoint's origin %.200q is not a log of the enclave whose default log is %s: %w", origin, def, err)
	}
	return name, true, nil
}

// checkJWTLog checks that the JWT's jti names the log of checkpoint (see
// CheckpointLogName: by the manifest's key, else by the JWT's iss) and
// returns the index it names. When neither says which log the checkpoint's
// is, the entry's jti (checkJWTEntry) must be the JWT's.
func checkJWTLog(r *Report, opts AuditOptions, checkpoint []byte) (int64, bool) {
	name, index, err := JWTEntryID(opts.JWT)
	if err != nil {
		r.fail("jwt", "%v", err)
		return 0, false
	}
	c, _ := jwtLogClaims(opts.JWT)
	logName, known, err := CheckpointLogName(checkpoint, opts.ManifestKey, c.Issuer)
	switch {
	case err != nil:
		r.fail("jwt log", "the JWT (jti %q, issuer %.200q) is not of this log: %v", c.JTI, c.Issuer, err)
		return 0, false
	case known && logName != name:
		r.fail("jwt log", "the JWT's jti %q names entry %d of %s, but the log verified is %s: verify it against the log it names (agentkeys-attest audit verify --log-name %q)",
			c.JTI, index, LogLabel(name), LogLabel(logName), name)
		return 0, false
	case known:
		r.pass("jwt log", "the JWT's jti %q names entry %d of %s, the log verified", c.JTI, index, LogLabel(name))
	}
	return index, true
}

// logClaims are the claims of a JWT its log entry repeats.
type logClaims struct {
	Issuer string `json:"iss"`
	JTI    string `json:"jti"`
	Wallet string `json:"agentkeys_user_wallet"` // claims.Wallet
}

// jwtLogClaims decodes a JWT's payload (unverified).
func jwtLogClaims(token string) (logClaims, error) {
	parts := strings.Split(strings.TrimSpace(token), ".")
	if len(parts) != 3 {
		return logClaims{}, errors.New("not a compact JWT (three dot-separated parts)")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return logClaims{}, fmt.Errorf("JWT payload is not base64url: %w", err)
	}
	var c logClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		return logClaims{}, fmt.Errorf("JWT payload is not JSON: %w", err)
	}
	return c, nil
}

// checkJWTEntry checks that entry, the log's entry at the JWT's index,
// records this JWT: an oidc_jwt entry with the JWT's jti, the SHA-256 of
// its bytes and the wallet of its agentkeys_user_wallet claim.
func checkJWTEntry(r *Report, token string, index int64, entry []byte) {
	token = strings.TrimSpace(token)
	c, err := jwtLogClaims(token)
	if err != nil {
		r.fail("jwt entry", "%v", err)
		return
	}
	e, err := auditlog.Parse(entry)
	switch want := auditlog.JWTHash(token); {
	case err != nil:
		r.fail("jwt entry", "entry %d is not an audit log entry: %v", index, err)
	case e.Kind != auditlog.KindOIDCJWT:
		r.fail("jwt entry", "entry %d is a %s entry, not the oidc_jwt entry of a JWT", index, e.Kind)
	case e.JWTSHA256 != want:
		r.fail("jwt entry", "entry %d names another JWT (SHA-256 %s), not this one (%s)", index, e.JWTSHA256, want)
	case e.JTI != c.JTI:
		r.fail("jwt entry", "entry %d carries jti %q, the JWT's is %q", index, e.JTI, c.JTI)
	case e.Wallet != c.Wallet:
		r.fail("jwt entry", "entry %d names wallet %s, the JWT's %s is %q", index, e.Wallet, claims.Wallet, c.Wallet)
	default:
		r.pass("jwt entry", "entry %d is the oidc_jwt entry of this JWT (SHA-256 %s, wallet %s, outcome %s)", index, want, e.Wallet, e.Outcome)
	}
}

// VerifyAuditLog verifies a whole log; see the comment at the top of this
// file.
func VerifyAuditLog(ctx context.Context, log AuditLog, opts AuditOptions) AuditResult {
	var res AuditResult
	r := &res.Report
	raw, err := log.ReadEndpoint(ctx, "checkpoint")
	if err != nil {
		r.fail("checkpoint", "failed to read: %v", err)
		return res
	}
	tree, ok := openCheckpoint(r, raw, opts, true, "checkpoint")
	if !ok {
		return res
	}
	jwtIndex := int64(-1)
	if opts.JWT != "" {
		if jwtIndex, ok = checkJWTLog(r, opts, raw); !ok {
			return res
		}
	}

	bundles := tileList(-1, tree.N)
	hashTiles := allTiles(tree.N)
	total, done := int64(len(bundles)+len(hashTiles)), int64(0)
	progress := func() {
		done++
		if opts.Progress != nil {
			opts.Progress(done, total)
		}
	}

	// Leaf hashes from the entries, bundle by bundle.
	leaves := make([][]tlog.Hash, len(bundles))
	bad := false
	var jwtEntry []byte
	for k, t := range bundles {
		if err := ctx.Err(); err != nil {
			r.fail("entries", "interrupted: %v", err)
			return res
		}
		b, err := log.ReadEndpoint(ctx, torchwood.TilePath(t))
		progress()
		if err != nil {
			r.fail("entries", "failed to read entries from %d (%s): %v", t.N*auditTileWidth, torchwood.TilePath(t), err)
			return res
		}
		es, err := splitBundle(b, t.W)
		if err != nil {
			bad = true
		}
		for i, e := range es {
			leaves[k] = append(leaves[k], tlog.RecordHash(e))
			if opts.Entry != nil {
				opts.Entry(t.N*auditTileWidth+int64(i), e)
			}
			if t.N*auditTileWidth+int64(i) == jwtIndex {
				jwtEntry = bytes.Clone(e)
			}
		}
	}
	mem := memHashes{}
	var root tlog.Hash
	if !bad {
		var n int64
		for _, ls := range leaves {
			for _, h := range ls {
				hs, err := tlog.StoredHashesForRecordHash(n, h, &mem)
				if err != nil {
					r.fail("entries", "failed to hash entry %d: %v", n, err)
					return res
				}
				mem = append(mem, hs...)
				n++
			}
		}
		if root, err = tlog.TreeHash(tree.N, &mem); err != nil {
			r.fail("entries", "failed to compute the root: %v", err)
			return res
		}
	}
	th := tlog.TileHashReader(tree, logTiles{ctx, log})
	if bad || root != tree.Hash {
		r.fail("entries", "%s", locateBadEntry(tree, leaves, bundles, th))
		return res
	}
	r.pass("entries", "all %d entries hash to the checkpoint's root", tree.N)

	for _, t := range hashTiles {
		got, err := log.ReadEndpoint(ctx, torchwood.TilePath(t))
		progress()
		if err != nil {
			r.fail("tiles", "failed to read %s: %v", torchwood.TilePath(t), err)
			return res
		}
		want, err := tlog.ReadTileData(t, &mem)
		if err != nil {
			r.fail("tiles", "failed to compute %s: %v", torchwood.TilePath(t), err)
			return res
		}
		if !bytes.Equal(got, want) {
			r.fail("tiles", "hash tile %s is not the one the entries give", torchwood.TilePath(t))
			return res
		}
	}
	r.pass("tiles", "all %d hash tiles match the entries", len(hashTiles))

	if opts.Since != nil {
		checkSince(r, opts, tree, th)
	}
	if jwtIndex >= 0 {
		if jwtIndex >= tree.N {
			r.fail("jwt", "jti %d is not in the log (size %d)", jwtIndex, tree.N)
		} else if p, err := tlog.ProveRecord(tree.N, jwtIndex, th); err != nil {
			r.fail("jwt", "failed to prove entry %d from the tiles: %v", jwtIndex, err)
		} else if err := tlog.CheckRecord(p, tree.N, tree.Hash, jwtIndex, mem[tlog.StoredHashIndex(0, jwtIndex)]); err != nil {
			r.fail("jwt", "entry %d is not included under the checkpoint: %v", jwtIndex, err)
		} else {
			r.pass("jwt", "entry %d (jti) is included under the checkpoint (%d bytes)", jwtIndex, len(jwtEntry))
			checkJWTEntry(r, opts.JWT, jwtIndex, jwtEntry)
		}
	}
	res.Checkpoint, res.Tree = raw, tree
	return res
}

// locateBadEntry names the first entry whose leaf hash differs from the
// level-0 hash tiles, once those are authenticated against the root.
func locateBadEntry(tree tlog.Tree, leaves [][]tlog.Hash, bundles []tlog.Tile, th tlog.HashReader) string {
	for k, t := range bundles {
		idx := make([]int64, t.W)
		for i := range idx {
			idx[i] = tlog.StoredHashIndex(0, t.N*auditTileWidth+int64(i))
		}
		want, err := th.ReadHashes(idx)
		if err != nil {
			return fmt.Sprintf("the entries do not hash to the checkpoint's root, and neither do the hash tiles (%v): the log is corrupt beyond locating an entry", err)
		}
		for i, w := range want {
			index := t.N*auditTileWidth + int64(i)
			if i >= len(leaves[k]) {
				return fmt.Sprintf("entry %d is missing (deleted or truncated bundle %s)", index, torchwood.TilePath(t))
			}
			if leaves[k][i] != w {
				return fmt.Sprintf("entry %d does not match the log (altered, deleted or reordered): its leaf hash is not the one the signed tree holds", index)
			}
		}
		if len(leaves[k]) > t.W {
			return fmt.Sprintf("bundle %s holds more than its %d entries", torchwood.TilePath(t), t.W)
		}
	}
	return "the entries do not hash to the checkpoint's root, but every leaf matches the hash tiles: the bundles are malformed"
}

// checkSince checks that the verified tree extends the saved checkpoint.
func checkSince(r *Report, opts AuditOptions, tree tlog.Tree, th tlog.HashReader) {
	var sr Report
	old, ok := openCheckpoint(&sr, opts.Since, AuditOptions{Key: opts.Key, ManifestKey: opts.ManifestKey}, false, "since")
	if !ok {
		r.Merge(sr)
		return
	}
	switch {
	case old.N > tree.N:
		r.fail("since", "rollback: the saved checkpoint has size %d, the log now %d", old.N, tree.N)
	case old.N == tree.N && old.Hash != tree.Hash:
		r.fail("since", "fork: the saved checkpoint has the same size %d but root %s, the log %s", old.N, old.Hash, tree.Hash)
	case old.N == tree.N:
		r.pass("since", "the log has not grown since the saved checkpoint (size %d)", old.N)
	default:
		p, err := tlog.ProveTree(tree.N, old.N, th)
		if err != nil {
			r.fail("since", "failed to build the consistency proof from size %d: %v", old.N, err)
			return
		}
		if err := tlog.CheckTree(p, tree.N, tree.Hash, old.N, old.Hash); err != nil {
			r.fail("since", "fork: the log at size %d is not the tree of the saved checkpoint: %v", old.N, err)
			return
		}
		r.pass("since", "consistent with the saved checkpoint (size %d → %d)", old.N, tree.N)
	}
}

// VerifyAuditProof checks a saved tlog-proof for the JWT in opts.JWT:
// checkpoint and cosignatures, that its index is the JWT's jti, and, when
// entry (the logged entry's bytes) is given, that the proof includes it.
func VerifyAuditProof(proof []byte, entry []byte, opts AuditOptions) Report {
	var r Report
	p, err := tlogproof.Parse(proof)
	if err != nil {
		r.fail("proof", "%v", err)
		return r
	}
	tree, ok := openCheckpoint(&r, p.Checkpoint, opts, true, "proof checkpoint")
	if !ok {
		return r
	}
	if opts.JWT != "" {
		i, ok := checkJWTLog(&r, opts, p.Checkpoint)
		if !ok {
			return r
		}
		if i != p.Index {
			r.fail("jwt", "the proof is for entry %d, the JWT's jti is %d", p.Index, i)
			return r
		}
		r.pass("jwt", "the proof is for entry %d, the JWT's jti", i)
	}
	if p.Index >= tree.N {
		r.fail("proof", "entry %d is beyond the checkpoint's size %d", p.Index, tree.N)
		return r
	}
	if entry == nil {
		r.skip("inclusion", "no entry bytes to hash: give --log to read entry %d and check that it is included and records the JWT", p.Index)
		return r
	}
	if err := tlog.CheckRecord(p.Hashes, tree.N, tree.Hash, p.Index, tlog.RecordHash(entry)); err != nil {
		r.fail("inclusion", "entry %d is not included under the proof's checkpoint: %v", p.Index, err)
		return r
	}
	r.pass("inclusion", "entry %d is included under the checkpoint of size %d", p.Index, tree.N)
	if opts.JWT != "" {
		checkJWTEntry(&r, opts.JWT, p.Index, entry)
	}
	return r
}

// ReadAuditEntry reads entry index from the log's bundles (unverified: a
// caller checks it against a proof).
func ReadAuditEntry(ctx context.Context, log AuditLog, tree tlog.Tree, index int64) ([]byte, error) {
	if index < 0 || index >= tree.N {
		return nil, fmt.Errorf("entry %d is not in a log of size %d", index, tree.N)
	}
	k := index / auditTileWidth
	t := tlog.Tile{H: 8, L: -1, N: k, W: int(min(auditTileWidth, tree.N-k*auditTileWidth))}
	b, err := log.ReadEndpoint(ctx, torchwood.TilePath(t))
	if err != nil {
		return nil, err
	}
	es, _ := splitBundle(b, t.W)
	if i := index - k*auditTileWidth; i < int64(len(es)) {
		return es[i], nil
	}
	return nil, fmt.Errorf("bundle %s does not hold entry %d", torchwood.TilePath(t), index)
}

// ExportAuditLog copies the log's checkpoint, entry bundles and hash tiles
// (full and the checkpoint's partial ones) from src into dir, for
// NewDirAuditLog. The checkpoint is written last. It checks nothing: verify
// the directory afterwards.
func ExportAuditLog(ctx context.Context, src AuditLog, dir string, progress func(done, total int64)) (tlog.Tree, error) {
	raw, err := src.ReadEndpoint(ctx, "checkpoint")
	if err != nil {
		return tlog.Tree{}, fmt.Errorf("failed to read the checkpoint: %w", err)
	}
	text, _, _ := bytes.Cut(raw, []byte("\n\n"))
	c, err := torchwood.ParseCheckpoint(string(text) + "\n")
	if err != nil {
		return tlog.Tree{}, fmt.Errorf("failed to parse the checkpoint: %w", err)
	}
	tiles := append(tileList(-1, c.N), allTiles(c.N)...)
	for i, t := range tiles {
		if err := ctx.Err(); err != nil {
			return tlog.Tree{}, err
		}
		p := torchwood.TilePath(t)
		b, err := src.ReadEndpoint(ctx, p)
		if err != nil {
			return tlog.Tree{}, fmt.Errorf("failed to read %s: %w", p, err)
		}
		if err := writeFile(dir, p, b); err != nil {
			return tlog.Tree{}, err
		}
		if progress != nil {
			progress(int64(i+1), int64(len(tiles)))
		}
	}
	if err := writeFile(dir, "checkpoint", raw); err != nil {
		return tlog.Tree{}, err
	}
	return c.Tree, nil
}

func writeFile(dir, path string, b []byte) error {
	name := filepath.Join(dir, filepath.FromSlash(path))
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		return fmt.Errorf("failed to export: %w", err)
	}
	if err := os.WriteFile(name, b, 0o644); err != nil {
		return fmt.Errorf("failed to export: %w", err)
	}
	return nil
}

// VerifyAuditProofFromLog is VerifyAuditProof with the entry read from log
// (an exported directory keeps this offline).
func VerifyAuditProofFromLog(ctx context.Context, proof []byte, log AuditLog, opts AuditOptions) Report {
	p, err := tlogproof.Parse(proof)
	if err != nil {
		return VerifyAuditProof(proof, nil, opts)
	}
	var r Report
	tree, ok := openCheckpoint(&r, p.Checkpoint, opts, true, "proof checkpoint")
	if !ok {
		return r
	}
	entry, err := ReadAuditEntry(ctx, log, tree, p.Index)
	if err != nil {
		var r Report
		r.fail("entry", "failed to read entry %d from the log: %v", p.Index, err)
		return r
	}
	return VerifyAuditProof(proof, entry, opts)
}
