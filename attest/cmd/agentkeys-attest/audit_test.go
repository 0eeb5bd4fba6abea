package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"filippo.io/torchwood"
	"github.com/rogpeppe/go-internal/testscript"
	"golang.org/x/mod/sumdb/note"

	"github.com/agentkeys/broker/host/tiles"
	"github.com/agentkeys/broker/host/tiles/tilestest"
	"github.com/agentkeys/broker/internal/scriptcmd"
	"github.com/agentkeys/broker/shared/auditlog"
	"github.com/agentkeys/broker/shared/jwk"
	"github.com/agentkeys/broker/shared/manifest"
	"github.com/agentkeys/broker/shared/policy"
)

// TestAuditScript runs the scripts in testdata/audit. Each gets logs served
// by host/tiles over in-memory stores: $LOG (300 entries, cosigned by
// $WITNESS), $FORKLOG (another history of 400 entries, same key), $SHORTLOG
// (the first 100 entries of $LOG); $KEY is the log key, $OTHERWITNESS a
// witness that did not cosign; $WORK/jwt.txt has jti 257 (entry 257 is its
// oidc_jwt entry), $WORK/other-jwt.txt is another JWT of jti 257,
// $WORK/far-jwt.txt jti 999; $WORK/proof.txt is the tlog-proof of entry 257.
// $NAMEDLOG is the log named host-a of the same enclave (50 entries, key
// $NAMEDKEY; entry 7 is the oidc_jwt entry of $WORK/named-jwt.txt, jti
// host-a/7; $WORK/host-b-jwt.txt has jti host-b/7), $STRANGERLOG one of another origin with the same key bytes;
// $WORK/manifest.json is a manifest naming $KEY, $WORK/other-manifest.json
// one naming another key.
func TestAuditScript(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/audit",
		RequireExplicitExec: true,
		Setup: func(env *testscript.Env) error {
			tb, ok := env.T().(testing.TB)
			if !ok {
				return errors.New("testscript did not pass a testing.TB")
			}
			w := witnessSigner(tb, "w1.example")
			serve := func(l *tilestest.Log, cosign bool) string {
				opts := tiles.Options{VerifierKey: tilestest.VerifierKey()}
				if cosign {
					opts.Checkpoint = cosigned(l, w)
				}
				srv := httptest.NewServer(tiles.New(l, opts))
				tb.Cleanup(srv.Close)
				return srv.URL
			}
			// Entry 257 is the enclave's entry of jwt.txt's JWT.
			jwt := fakeJWT("257")
			entry, err := auditlog.Entry{Version: auditlog.Version, Time: 1700000000, Kind: auditlog.KindOIDCJWT, Outcome: auditlog.OutcomeOK,
				Wallet: testWallet, SessionID: "s", JTI: "257", JWTSHA256: auditlog.JWTHash(jwt)}.Marshal()
			if err != nil {
				return err
			}
			l := tilestest.New(nil)
			l.AppendN(257)
			l.Append(entry)
			l.AppendN(42)
			fork := tilestest.New(nil)
			fork.Append([]byte("forged"))
			fork.AppendN(399)
			short := tilestest.New(nil)
			short.AppendN(100)
			logURL := serve(l, true)
			env.Setenv("LOG", logURL)
			env.Setenv("FORKLOG", serve(fork, false))
			env.Setenv("SHORTLOG", serve(short, false))
			env.Setenv("KEY", tilestest.VerifierKey())
			// The log named host-a of the same enclave: the same key
			// under the name Origin/host-a; and a log of another origin.
			namedSigner, namedKey := tilestest.NewKey(tilestest.Origin+"/host-a", "tilestest")
			named := tilestest.New(namedSigner)
			// Entry 7 of host-a is the enclave's entry of named-jwt.txt's
			// JWT (jti host-a/7, minted at 2023-11-14T22:13:20Z).
			namedJWT := fakeJWT("host-a/7")
			namedEntry, err := auditlog.Entry{Version: auditlog.Version, Time: 1700000000, Kind: auditlog.KindOIDCJWT, Outcome: auditlog.OutcomeOK,
				Wallet: testWallet, SessionID: "s", JTI: "host-a/7", ExpiresAt: 1700000900, JWTSHA256: auditlog.JWTHash(namedJWT)}.Marshal()
			if err != nil {
				return err
			}
			named.AppendN(7)
			named.Append(namedEntry)
			named.AppendN(42)
			env.Setenv("NAMEDLOG", serve(named, false))
			env.Setenv("NAMEDKEY", namedKey)
			strangerSigner, _ := tilestest.NewKey("other.example/audit/host-a", "tilestest")
			stranger := tilestest.New(strangerSigner)
			stranger.AppendN(5)
			env.Setenv("STRANGERLOG", serve(stranger, false))
			env.Setenv("WITNESS", w.Verifier().String())
			env.Setenv("OTHERWITNESS", witnessSigner(tb, "w2.example").Verifier().String())
			write := func(name string, data []byte) error {
				return os.WriteFile(filepath.Join(env.WorkDir, name), data, 0o644)
			}
			if err := write("jwt.txt", []byte(jwt+"\n")); err != nil {
				return err
			}
			// manifest.json names $KEY, other-manifest.json another key.
			_, otherKey := tilestest.NewKey(tilestest.Origin, "another enclave")
			for name, vkey := range map[string]string{"manifest.json": tilestest.VerifierKey(), "other-manifest.json": otherKey} {
				if err := write(name, testManifest(tb, vkey)); err != nil {
					return err
				}
			}
			if err := write("other-jwt.txt", []byte(fakeJWT("257", "other")+"\n")); err != nil {
				return err
			}
			if err := write("far-jwt.txt", []byte(fakeJWT("999")+"\n")); err != nil {
				return err
			}
			if err := write("named-jwt.txt", []byte(namedJWT+"\n")); err != nil {
				return err
			}
			if err := write("host-b-jwt.txt", []byte(fakeJWT("host-b/7")+"\n")); err != nil {
				return err
			}
			resp, err := http.Get(logURL + "/v1/audit/proof/257")
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			proof, err := io.ReadAll(resp.Body)
			if err != nil {
				return err
			}
			return write("proof.txt", proof)
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"exitcode": scriptcmd.ExitCode,
			"tamper":   cmdTamper,
		},
	})
}

// tamper DIR INDEX replaces entry INDEX of an exported log with "forged".
func cmdTamper(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: tamper DIR INDEX")
	}
	i, err := strconv.ParseInt(args[1], 10, 64)
	ts.Check(err)
	dir := ts.MkAbs(args[0])
	paths, err := filepath.Glob(filepath.Join(dir, "tile", "entries", "*"))
	ts.Check(err)
	var path string
	for _, p := range paths {
		rel, _ := filepath.Rel(dir, p)
		if t, err := tiles.ParsePath(filepath.ToSlash(rel)); err == nil && t.N == i/256 {
			path = p
		}
		if st, err := os.Stat(p); err == nil && st.IsDir() { // a partial bundle: 001.p/W
			sub, _ := filepath.Glob(filepath.Join(p, "*"))
			for _, s := range sub {
				rel, _ := filepath.Rel(dir, s)
				if t, err := tiles.ParsePath(filepath.ToSlash(rel)); err == nil && t.N == i/256 {
					path = s
				}
			}
		}
	}
	if path == "" {
		ts.Fatalf("no bundle holds entry %d", i)
	}
	b, err := os.ReadFile(path)
	ts.Check(err)
	var out []byte
	for k := int64(0); len(b) > 0; k++ {
		e, rest, err := torchwood.ReadTileEntry(b)
		ts.Check(err)
		if k == i%256 {
			e = []byte("forged")
		}
		out = binary.BigEndian.AppendUint16(out, uint16(len(e)))
		out = append(out, e...)
		b = rest
	}
	ts.Check(os.WriteFile(path, out, 0o644))
}

func witnessSigner(t testing.TB, name string) *torchwood.CosignatureSigner {
	seed := sha256.Sum256([]byte(name))
	s, err := torchwood.NewCosignatureSigner(name, ed25519.NewKeyFromSeed(seed[:]))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// cosigned serves l's checkpoint cosigned by w.
func cosigned(l *tilestest.Log, w *torchwood.CosignatureSigner) func(context.Context) ([]byte, error) {
	return func(ctx context.Context) ([]byte, error) {
		cp, _ := l.Checkpoint(ctx)
		text, _, _ := bytes.Cut(cp, []byte("\n\n"))
		c, err := note.Sign(&note.Note{Text: string(text) + "\n"}, w)
		if err != nil {
			return nil, err
		}
		_, sig, _ := bytes.Cut(c, []byte("\n\n"))
		return append(cp, sig...), nil
	}
}

const testWallet = "0x00000000000000000000000000000000000000aa"

// fakeJWT is an unsigned JWT of jti for testWallet; extra makes another
// token of the same claims.
func fakeJWT(jti string, extra ...string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"ES256"}`)) + "." + enc([]byte(`{"jti":"`+jti+`","agentkeys_user_wallet":"`+testWallet+`"}`)) + "." + enc([]byte("sig"+strings.Join(extra, "")))
}

func TestProgressBar(t *testing.T) {
	var b bytes.Buffer
	if p := newProgressBar(&b); p.on {
		t.Fatal("a bytes.Buffer is not a terminal")
	}
	p := &progressBar{w: &b, on: true}
	p.update(1, 4)
	p.update(4, 4)
	p.done()
	if got := b.String(); !strings.Contains(got, "\r[==========                              ] 1/4 tiles") || !strings.HasSuffix(got, "] 4/4 tiles\n") {
		t.Errorf("progress output %q", got)
	}
	b.Reset()
	off := &progressBar{w: &b}
	off.update(1, 1)
	off.done()
	if b.Len() != 0 {
		t.Errorf("drew %q when off", b.String())
	}
}

// testManifest is a valid key manifest whose checkpoint_verifier_key is vkey.
func testManifest(t testing.TB, vkey string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := jwk.FromP256(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pol := policy.Default("https://broker.example.com")
	if err := pol.Normalize(); err != nil {
		t.Fatal(err)
	}
	b, err := manifest.Manifest{
		Version: manifest.Version, Mode: manifest.ModeSimulated, Issuer: pol.Issuer, IssuerOrigin: manifest.OriginHost,
		Policy: pol, PolicyDigest: pol.Digest(),
		IssuerKeys:            []manifest.IssuerKey{{Label: pol.SigningKey, Kid: k.Kid, Signs: true, JWK: k}},
		CheckpointVerifierKey: vkey,
	}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}
