package attest_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/torchwood"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/agentkeys/broker/attest"
	"github.com/agentkeys/broker/host/tiles"
	"github.com/agentkeys/broker/host/tiles/tilestest"
	"github.com/agentkeys/broker/shared/auditlog"
)

func serveLog(t *testing.T, src tiles.Source, opts tiles.Options) attest.AuditLog {
	t.Helper()
	srv := httptest.NewServer(tiles.New(src, opts))
	t.Cleanup(srv.Close)
	l, err := attest.NewHTTPAuditLog(srv.URL, srv.Client(), 0)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func verifyLog(t *testing.T, log attest.AuditLog, opts attest.AuditOptions) attest.AuditResult {
	t.Helper()
	if opts.Key == "" {
		opts.Key = tilestest.VerifierKey()
	}
	return attest.VerifyAuditLog(context.Background(), log, opts)
}

func mustPass(t *testing.T, r attest.Report) {
	t.Helper()
	if !r.OK() {
		var b bytes.Buffer
		r.WriteText(&b)
		t.Fatalf("verification failed:\n%s", b.String())
	}
}

func mustFail(t *testing.T, r attest.Report, want string) {
	t.Helper()
	f := r.FirstFailure()
	if f == nil {
		t.Fatalf("verification passed, want a failure %q", want)
	}
	if !strings.Contains(f.Name+": "+f.Detail, want) {
		t.Fatalf("first failure %s: %s, want %q", f.Name, f.Detail, want)
	}
}

func TestAuditVerify(t *testing.T) {
	for _, n := range []int64{0, 1, 255, 256, 257, 1000} {
		l := tilestest.New(nil)
		l.AppendN(n)
		var calls int64
		res := verifyLog(t, serveLog(t, l, tiles.Options{}), attest.AuditOptions{Progress: func(done, total int64) { calls = total }})
		mustPass(t, res.Report)
		if res.Tree.N != n {
			t.Errorf("tree size %d, want %d", res.Tree.N, n)
		}
		if n > 0 && calls == 0 {
			t.Errorf("n=%d: no progress reported", n)
		}
	}
	l := tilestest.New(nil)
	l.AppendN(5)
	_, other := tilestest.NewKey(tilestest.Origin, "another key")
	mustFail(t, verifyLog(t, serveLog(t, l, tiles.Options{}), attest.AuditOptions{Key: other}).Report, "not signed by --key")
}

// tamper rewrites the bundle holding index i in an exported log with f
// applied to its entries.
func tamper(t *testing.T, dir string, n, i int64, f func([][]byte, int) [][]byte) {
	t.Helper()
	k := i / 256
	w := min(256, n-k*256)
	tl := tlog.Tile{H: 8, L: -1, N: k, W: int(w)}
	path := filepath.Join(dir, filepath.FromSlash(torchwood.TilePath(tl)))
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var es [][]byte
	for len(b) > 0 {
		var e []byte
		e, b, err = torchwood.ReadTileEntry(b)
		if err != nil {
			t.Fatal(err)
		}
		es = append(es, e)
	}
	var out []byte
	for _, e := range f(es, int(i-k*256)) {
		out = binary.BigEndian.AppendUint16(out, uint16(len(e)))
		out = append(out, e...)
	}
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestAuditTamper alters, deletes or reorders one stored entry; verification
// must fail naming that index.
func TestAuditTamper(t *testing.T) {
	const n = 600
	l := tilestest.New(nil)
	l.AppendN(n)
	src := serveLog(t, l, tiles.Options{})
	for _, i := range []int64{0, 255, 256, 300, n - 1} {
		for _, c := range []struct {
			name string
			f    func([][]byte, int) [][]byte
		}{
			{"alter", func(es [][]byte, j int) [][]byte { es[j] = []byte("forged"); return es }},
			{"delete", func(es [][]byte, j int) [][]byte { return append(es[:j:j], es[j+1:]...) }},
			{"reorder", func(es [][]byte, j int) [][]byte {
				if j+1 < len(es) {
					es[j], es[j+1] = es[j+1], es[j]
				} else {
					es[j], es[j-1] = es[j-1], es[j]
				}
				return es
			}},
		} {
			t.Run(fmt.Sprintf("%s %d", c.name, i), func(t *testing.T) {
				dir := t.TempDir()
				if _, err := attest.ExportAuditLog(context.Background(), src, dir, nil); err != nil {
					t.Fatal(err)
				}
				mustPass(t, verifyLog(t, attest.NewDirAuditLog(dir), attest.AuditOptions{}).Report)
				tamper(t, dir, n, i, c.f)
				want := i
				if c.name == "reorder" && (i+1)%256 == 0 || c.name == "reorder" && i == n-1 {
					want = i - 1
				}
				mustFail(t, verifyLog(t, attest.NewDirAuditLog(dir), attest.AuditOptions{}).Report, fmt.Sprintf("entry %d ", want))
			})
		}
	}
	// The same through HTTP: the host's entry store rewritten, its hashes not.
	l.Tamper(400, []byte("forged"))
	mustFail(t, verifyLog(t, src, attest.AuditOptions{}).Report, "entry 400 does not match")
}

// lyingHashes serves one wrong stored hash.
type lyingHashes struct {
	*tilestest.Log
	index int64
}

func (l lyingHashes) ReadHashes(ctx context.Context, idx []int64) ([]tlog.Hash, error) {
	hs, err := l.Log.ReadHashes(ctx, idx)
	for i, x := range idx {
		if x == l.index {
			hs[i][0] ^= 1
		}
	}
	return hs, err
}

func TestAuditBadTile(t *testing.T) {
	l := tilestest.New(nil)
	l.AppendN(70000)
	r := verifyLog(t, serveLog(t, lyingHashes{l, tlog.StoredHashIndex(8, 3)}, tiles.Options{}), attest.AuditOptions{}).Report
	mustFail(t, r, "tiles: hash tile tile/1/000 is not the one the entries give")
}

func TestAuditSince(t *testing.T) {
	ctx := context.Background()
	l := tilestest.New(nil)
	l.AppendN(100)
	at100, _ := l.Checkpoint(ctx)
	src := serveLog(t, l, tiles.Options{})
	mustPass(t, verifyLog(t, src, attest.AuditOptions{Since: at100}).Report)
	l.AppendN(200)
	at300, _ := l.Checkpoint(ctx)
	res := verifyLog(t, src, attest.AuditOptions{Since: at100})
	mustPass(t, res.Report)
	if !bytes.Equal(res.Checkpoint, at300) {
		t.Error("result checkpoint is not the log's")
	}

	fork := tilestest.New(nil)
	fork.Append([]byte("forged"))
	fork.AppendN(299)
	forkSrc := serveLog(t, fork, tiles.Options{})
	mustFail(t, verifyLog(t, forkSrc, attest.AuditOptions{Since: at100}).Report, "since: fork")
	mustFail(t, verifyLog(t, forkSrc, attest.AuditOptions{Since: at300}).Report, "since: fork")

	short := tilestest.New(nil)
	short.AppendN(100)
	mustFail(t, verifyLog(t, serveLog(t, short, tiles.Options{}), attest.AuditOptions{Since: at300}).Report, "since: rollback")

	otherSigner, _ := tilestest.NewKey(tilestest.Origin, "x")
	o := tilestest.New(otherSigner)
	o.AppendN(1)
	foreign, _ := o.Checkpoint(ctx)
	mustFail(t, verifyLog(t, src, attest.AuditOptions{Since: foreign}).Report, "since: not signed by --key")
}

// cosigned serves l's checkpoint cosigned by the given witnesses.
func cosigned(l *tilestest.Log, ws ...*torchwood.CosignatureSigner) func(context.Context) ([]byte, error) {
	return func(ctx context.Context) ([]byte, error) {
		cp, _ := l.Checkpoint(ctx)
		text, _, _ := bytes.Cut(cp, []byte("\n\n"))
		var sigs []byte
		for _, w := range ws {
			c, err := note.Sign(&note.Note{Text: string(text) + "\n"}, w)
			if err != nil {
				return nil, err
			}
			_, s, _ := bytes.Cut(c, []byte("\n\n"))
			sigs = append(sigs, s...)
		}
		return append(cp, sigs...), nil
	}
}

func witnessSigner(t *testing.T, name string) *torchwood.CosignatureSigner {
	seed := sha256.Sum256([]byte(name))
	s, err := torchwood.NewCosignatureSigner(name, ed25519.NewKeyFromSeed(seed[:]))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestAuditWitnesses(t *testing.T) {
	l := tilestest.New(nil)
	l.AppendN(10)
	w1, w2, w3 := witnessSigner(t, "w1.example"), witnessSigner(t, "w2.example"), witnessSigner(t, "w3.example")
	src := serveLog(t, l, tiles.Options{Checkpoint: cosigned(l, w1, w2)})
	keys := func(ws ...*torchwood.CosignatureSigner) []string {
		var out []string
		for _, w := range ws {
			out = append(out, w.Verifier().String())
		}
		return out
	}
	mustPass(t, verifyLog(t, src, attest.AuditOptions{Witnesses: keys(w1, w2)}).Report)
	mustFail(t, verifyLog(t, src, attest.AuditOptions{Witnesses: keys(w1, w3)}).Report, "witness w3.example: no valid cosignature")
	// A cosignature over another checkpoint, pasted on this one.
	other := tilestest.New(nil)
	other.AppendN(11)
	pasted := func(ctx context.Context) ([]byte, error) {
		cp, _ := l.Checkpoint(ctx)
		o, _ := cosigned(other, w1)(ctx)
		i := bytes.LastIndex(o, []byte("— w1.example"))
		return append(cp, o[i:]...), nil
	}
	mustFail(t, verifyLog(t, serveLog(t, l, tiles.Options{Checkpoint: pasted}), attest.AuditOptions{Witnesses: keys(w1)}).Report, "signature by w1.example does not verify")
	mustFail(t, verifyLog(t, src, attest.AuditOptions{Witnesses: []string{tilestest.VerifierKey()}}).Report, "not a cosignature/v1")
}

const testWallet = "0x00000000000000000000000000000000000000aa"

func fakeJWT(jti string) string { return walletJWT(jti, testWallet) }

func walletJWT(jti, wallet string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"ES256"}`)) + "." + enc([]byte(`{"jti":"`+jti+`","agentkeys_user_wallet":"`+wallet+`"}`)) + "." + enc([]byte("sig"))
}

// jwtEntry is the log entry the enclave writes for a JWT it minted.
func jwtEntry(t *testing.T, jti, wallet, token string) []byte {
	t.Helper()
	b, err := auditlog.Entry{Version: auditlog.Version, Time: 1700000000, Kind: auditlog.KindOIDCJWT, Outcome: auditlog.OutcomeOK,
		Wallet: wallet, SessionID: "s", JTI: jti, JWTSHA256: auditlog.JWTHash(token)}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// jwtLog is a log of n test entries whose entry at is entry.
func jwtLog(n, at int64, entry []byte) *tilestest.Log {
	l := tilestest.New(nil)
	l.AppendN(at)
	l.Append(entry)
	l.AppendN(n - at - 1)
	return l
}

func TestAuditJWT(t *testing.T) {
	jwt := fakeJWT("257")
	src := serveLog(t, jwtLog(300, 257, jwtEntry(t, "257", testWallet, jwt)), tiles.Options{})
	r := verifyLog(t, src, attest.AuditOptions{JWT: jwt}).Report
	mustPass(t, r)
	if c := r.Find("jwt"); c == nil || !strings.Contains(c.Detail, "entry 257") {
		t.Errorf("jwt check: %+v", c)
	}
	if c := r.Find("jwt entry"); c == nil || c.Status != attest.StatusPass || !strings.Contains(c.Detail, auditlog.JWTHash(jwt)) {
		t.Errorf("jwt entry check: %+v", c)
	}
	mustPass(t, verifyLog(t, src, attest.AuditOptions{JWT: jwt + "\n"}).Report) // as read from a file
	mustFail(t, verifyLog(t, src, attest.AuditOptions{JWT: fakeJWT("300")}).Report, "jti 300 is not in the log")
	mustFail(t, verifyLog(t, src, attest.AuditOptions{JWT: fakeJWT("0257")}).Report, `JWT jti "0257" is not an audit log entry id`)
	mustFail(t, verifyLog(t, src, attest.AuditOptions{JWT: fakeJWT("/257")}).Report, `JWT jti "/257" is not an audit log entry id`)
	mustFail(t, verifyLog(t, src, attest.AuditOptions{JWT: "nope"}).Report, "not a compact JWT")
}

// issJWT is a fake JWT of issuer iss (no iss claim when "") with jti.
func issJWT(iss, jti string) string {
	enc := base64.RawURLEncoding.EncodeToString
	c := `{"jti":"` + jti + `","agentkeys_user_wallet":"` + testWallet + `"}`
	if iss != "" {
		c = `{"iss":"` + iss + `","jti":"` + jti + `","agentkeys_user_wallet":"` + testWallet + `"}`
	}
	return enc([]byte(`{"alg":"ES256"}`)) + "." + enc([]byte(c)) + "." + enc([]byte("sig"))
}

// TestAuditJWTNamedLog: a JWT whose jti names the log host-a ("host-a/257")
// verifies against that log, and verify --jwt refuses it against another
// log of its issuer, and a JWT naming another log against host-a, naming
// both logs; the log verified is known from the manifest's key or, without
// one, from the JWT's iss.
func TestAuditJWTNamedLog(t *testing.T) {
	const iss = "https://broker.example.com" // tilestest.Origin's issuer
	jwt := issJWT(iss, "host-a/257")
	signer, namedKey := tilestest.NewKey(tilestest.Origin+"/host-a", "tilestest")
	named := tilestest.New(signer)
	named.AppendN(257)
	named.Append(jwtEntry(t, "host-a/257", testWallet, jwt))
	named.AppendN(42)
	namedSrc := serveLog(t, named, tiles.Options{})
	defJWT := issJWT(iss, "257")
	defSrc := serveLog(t, jwtLog(300, 257, jwtEntry(t, "257", testWallet, defJWT)), tiles.Options{})
	// Without iss or manifest the log verified is not known: the entry's
	// jti must be the JWT's (the entry here names the JWT but not its log).
	noIss := issJWT("", "host-a/257")
	noIssSrc := serveLog(t, jwtLog(300, 257, jwtEntry(t, "257", testWallet, noIss)), tiles.Options{})
	manifest := tilestest.VerifierKey()
	for _, tc := range []struct {
		name string
		log  attest.AuditLog
		opts attest.AuditOptions
		want string // "" passes
	}{
		{"named, by iss", namedSrc, attest.AuditOptions{Key: namedKey, JWT: jwt}, ""},
		{"named, by manifest", namedSrc, attest.AuditOptions{ManifestKey: manifest, JWT: jwt}, ""},
		{"default, by iss", defSrc, attest.AuditOptions{JWT: defJWT}, ""},
		{"default jti against host-a", namedSrc, attest.AuditOptions{Key: namedKey, JWT: defJWT},
			`jwt log: the JWT's jti "257" names entry 257 of the default log, but the log verified is the log "host-a"`},
		{"host-b jti against host-a", namedSrc, attest.AuditOptions{ManifestKey: manifest, JWT: issJWT("", "host-b/257")},
			`jwt log: the JWT's jti "host-b/257" names entry 257 of the log "host-b", but the log verified is the log "host-a"`},
		{"host-a jti against default", defSrc, attest.AuditOptions{JWT: jwt},
			`jwt log: the JWT's jti "host-a/257" names entry 257 of the log "host-a", but the log verified is the default log`},
		{"host-a jti against default, no iss", noIssSrc, attest.AuditOptions{JWT: noIss},
			`jwt entry: entry 257 carries jti "257", the JWT's is "host-a/257"`},
		{"another issuer", namedSrc, attest.AuditOptions{Key: namedKey, JWT: issJWT("https://other.example", "host-a/257")},
			`jwt log: the JWT (jti "host-a/257", issuer "https://other.example") is not of this log`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := tc.opts
			if opts.Key == "" && opts.ManifestKey == "" {
				opts.Key = tilestest.VerifierKey()
			}
			r := attest.VerifyAuditLog(context.Background(), tc.log, opts).Report
			if tc.want == "" {
				mustPass(t, r)
			} else {
				mustFail(t, r, tc.want)
			}
			pr := attest.VerifyAuditProofFromLog(context.Background(), proofOf(t, tc.log, 257), tc.log, opts)
			if tc.want == "" {
				mustPass(t, pr)
			} else {
				mustFail(t, pr, tc.want)
			}
		})
	}
}

// TestAuditJWTEntry: the entry at the JWT's index must record that JWT; an
// entry of another JWT, kind, jti or wallet fails at that index.
func TestAuditJWTEntry(t *testing.T) {
	jwt := fakeJWT("257")
	aws, _ := auditlog.Entry{Version: auditlog.Version, Time: 1, Kind: auditlog.KindAWSCreds, Outcome: auditlog.OutcomeOK,
		Wallet: testWallet, JTI: "257", JWTSHA256: auditlog.JWTHash(jwt), HostAsserted: true}.Marshal()
	for _, c := range []struct {
		name  string
		entry []byte
		want  string
	}{
		{"another JWT", jwtEntry(t, "257", testWallet, walletJWT("257", "0x00000000000000000000000000000000000000bb")), "jwt entry: entry 257 names another JWT"},
		{"another wallet", jwtEntry(t, "257", "0x00000000000000000000000000000000000000bb", jwt), "jwt entry: entry 257 names wallet 0x00000000000000000000000000000000000000bb"},
		{"another jti", jwtEntry(t, "256", testWallet, jwt), `jwt entry: entry 257 carries jti "256"`},
		{"another kind", aws, "jwt entry: entry 257 is a aws_creds entry"},
		{"not an entry", tilestest.Entry(257), "jwt entry: entry 257 is not an audit log entry"},
	} {
		t.Run(c.name, func(t *testing.T) {
			src := serveLog(t, jwtLog(300, 257, c.entry), tiles.Options{})
			mustFail(t, verifyLog(t, src, attest.AuditOptions{JWT: jwt}).Report, c.want)
			r := attest.VerifyAuditProofFromLog(context.Background(), proofOf(t, src, 257), src, attest.AuditOptions{Key: tilestest.VerifierKey(), JWT: jwt})
			mustFail(t, r, c.want)
		})
	}
}

func proofOf(t *testing.T, log attest.AuditLog, index int64) []byte {
	t.Helper()
	b, err := log.ReadEndpoint(context.Background(), fmt.Sprintf("proof/%d", index))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAuditProof(t *testing.T) {
	ctx := context.Background()
	jwt := fakeJWT("257")
	entry := jwtEntry(t, "257", testWallet, jwt)
	l := jwtLog(300, 257, entry)
	w1 := witnessSigner(t, "w1.example")
	srv := httptest.NewServer(tiles.New(l, tiles.Options{Checkpoint: cosigned(l, w1)}))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/v1/audit/proof/257")
	if err != nil {
		t.Fatal(err)
	}
	var proof bytes.Buffer
	proof.ReadFrom(resp.Body)
	resp.Body.Close()
	opts := attest.AuditOptions{Key: tilestest.VerifierKey(), Witnesses: []string{w1.Verifier().String()}, JWT: jwt}
	r := attest.VerifyAuditProof(proof.Bytes(), entry, opts)
	mustPass(t, r)
	if c := r.Find("jwt entry"); c == nil || c.Status != attest.StatusPass {
		t.Errorf("jwt entry check: %+v", c)
	}
	r = attest.VerifyAuditProof(proof.Bytes(), nil, opts)
	if !r.OK() || r.Find("inclusion").Status != attest.StatusSkip {
		t.Errorf("without the entry: %+v", r)
	}
	mustFail(t, attest.VerifyAuditProof(proof.Bytes(), tilestest.Entry(256), opts), "inclusion: entry 257 is not included")
	o := opts
	o.JWT = fakeJWT("256")
	mustFail(t, attest.VerifyAuditProof(proof.Bytes(), entry, o), "the proof is for entry 257, the JWT's jti is 256")
	mustFail(t, attest.VerifyAuditProof([]byte("junk"), nil, opts), "proof: malformed")
	log, _ := attest.NewHTTPAuditLog(srv.URL, srv.Client(), 0)
	e, err := attest.ReadAuditEntry(ctx, log, tlog.Tree{N: 300}, 257)
	if err != nil || !bytes.Equal(e, entry) {
		t.Errorf("ReadAuditEntry = %q, %v", e, err)
	}
}

// handlerLog reads the tiles handler without a network.
type handlerLog struct{ h http.Handler }

func (l handlerLog) ReadEndpoint(_ context.Context, path string) ([]byte, error) {
	rec := httptest.NewRecorder()
	l.h.ServeHTTP(rec, httptest.NewRequest("GET", "/v1/audit/"+path, nil))
	if rec.Code != 200 {
		return nil, fmt.Errorf("%s: %d", path, rec.Code)
	}
	return rec.Body.Bytes(), nil
}

// BenchmarkVerifyAuditLog verifies a log of 65536 entries read through the
// tiles handler in process.
func BenchmarkVerifyAuditLog(b *testing.B) {
	l := tilestest.New(nil)
	l.AppendN(1 << 16)
	log := handlerLog{tiles.New(l, tiles.Options{})}
	opts := attest.AuditOptions{Key: tilestest.VerifierKey()}
	for b.Loop() {
		if r := attest.VerifyAuditLog(context.Background(), log, opts); !r.OK() {
			b.Fatal(r.FirstFailure())
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/(1<<16), "ns/entry")
}
