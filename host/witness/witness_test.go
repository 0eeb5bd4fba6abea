package witness_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"filippo.io/torchwood"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/mod/sumdb/note"

	"github.com/agentkeys/broker/host/tiles/tilestest"
	"github.com/agentkeys/broker/host/witness"
	"github.com/agentkeys/broker/internal/witnesstest"
	"github.com/agentkeys/broker/shared/tlogproof"
)

func TestMain(m *testing.M) {
	code := m.Run()
	witnesstest.Cleanup()
	os.Exit(code)
}

func newWitnesses(t *testing.T, l *tilestest.Log, reg prometheus.Registerer, ws ...witness.Witness) *witness.Witnesses {
	t.Helper()
	w, err := witness.New(witness.Config{Source: l, Witnesses: ws, Registerer: reg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// cosigners returns the names of the witnesses whose cosignature on cp
// verifies.
func cosigners(t *testing.T, cp []byte, lws ...*witnesstest.Witness) []string {
	t.Helper()
	var vs []note.Verifier
	for _, w := range lws {
		v, err := tlogproof.NewCosignatureVerifier(w.VerifierKey)
		if err != nil {
			t.Fatal(err)
		}
		vs = append(vs, v)
	}
	logV, err := note.NewVerifier(tilestest.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	n, err := note.Open(cp, note.VerifierList(append(vs, logV)...))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range n.Sigs {
		if s.Name != tilestest.Origin {
			names = append(names, s.Name)
		}
	}
	return names
}

// TestCosigned: two litewitnesses cosign the first checkpoint, then a larger
// one (a consistency proof), and a fresh host that does not know their state
// catches up through 409.
func TestCosigned(t *testing.T) {
	ctx := context.Background()
	l := tilestest.New(nil)
	l.AppendN(3)
	w1 := witnesstest.Start(t, "w1.example/witness", tilestest.Origin, tilestest.VerifierKey())
	w2 := witnesstest.Start(t, "w2.example/witness", tilestest.Origin, tilestest.VerifierKey())
	cfg := []witness.Witness{{URL: w1.URL, VerifierKey: w1.VerifierKey}, {URL: w2.URL, VerifierKey: w2.VerifierKey}}
	reg := prometheus.NewRegistry()
	ws := newWitnesses(t, l, reg, cfg...)

	for _, n := range []int64{0, 300, 1, 70000} {
		l.AppendN(n)
		if err := ws.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		cp, err := ws.Checkpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := cosigners(t, cp, w1, w2); len(got) != 2 {
			t.Fatalf("size %d: cosigned by %v:\n%s", l.Size(), got, cp)
		}
		for _, s := range ws.Status() {
			if s.Lag != 0 || s.CosignedSize != l.Size() || s.LastError != "" {
				t.Fatalf("size %d: status %+v", l.Size(), s)
			}
		}
	}
	if got := lag(t, reg, w1.Name); got != 0 {
		t.Errorf("lag %v", got)
	}
	if !strings.Contains(w1.LogState(t, tilestest.Origin), `"size":70304`) {
		t.Errorf("witness state: %s", w1.LogState(t, tilestest.Origin))
	}

	// A restarted host starts from "old 0"; the witness answers 409 with its
	// size and the host retries from there.
	l.AppendN(5)
	fresh := newWitnesses(t, l, nil, cfg...)
	if err := fresh.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	cp, _ := fresh.Checkpoint(ctx)
	if got := cosigners(t, cp, w1, w2); len(got) != 2 {
		t.Fatalf("after restart: cosigned by %v", got)
	}
}

// TestFork presents the witness a checkpoint of a different tree at a larger
// size: the witness refuses (422), the host records it, minting goes on and
// the lag grows.
func TestFork(t *testing.T) {
	ctx := context.Background()
	w := witnesstest.Start(t, "w.example/witness", tilestest.Origin, tilestest.VerifierKey())
	cfg := witness.Witness{URL: w.URL, VerifierKey: w.VerifierKey}

	honest := tilestest.New(nil)
	honest.AppendN(10)
	if err := newWitnesses(t, honest, nil, cfg).Sync(ctx); err != nil {
		t.Fatal(err)
	}

	fork := tilestest.New(nil) // same key, other entries
	fork.Append([]byte("forged 0"))
	fork.AppendN(19)
	reg := prometheus.NewRegistry()
	ws := newWitnesses(t, fork, reg, cfg)
	if err := ws.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	st := ws.Status()[0]
	if st.CosignedSize != -1 || st.Lag != 20 || !strings.Contains(st.LastError, "422") {
		t.Fatalf("status %+v", st)
	}
	cp, err := ws.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := cosigners(t, cp, w); len(got) != 0 {
		t.Fatalf("fork cosigned by %v", got)
	}
	fork.AppendN(5) // minting continues
	if err := ws.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := lag(t, reg, w.Name); got != 25 {
		t.Errorf("lag gauge %v, want 25", got)
	}
	if n := testutil.CollectAndCount(reg, "agentkeys_witness_failures_total"); n != 1 {
		t.Errorf("%d failure series", n)
	}
	if !strings.Contains(w.LogState(t, tilestest.Origin), `"size":10`) {
		t.Errorf("witness state moved: %s", w.LogState(t, tilestest.Origin))
	}
}

// TestRefusals covers a witness that is down, one that does not know the log
// (404; litewitness says 403), one that does not trust its key (403), and one whose cosignature
// does not verify.
func TestRefusals(t *testing.T) {
	ctx := context.Background()
	l := tilestest.New(nil)
	l.AppendN(4)
	_, otherKey := tilestest.NewKey(tilestest.Origin, "another key")
	unknown := witnesstest.Start(t, "unknown.example/w", "other.example/log", tilestest.VerifierKey())
	distrust := witnesstest.Start(t, "distrust.example/w", tilestest.Origin, otherKey)
	real := witnesstest.Start(t, "real.example/w", tilestest.Origin, tilestest.VerifierKey())

	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	// An impostor relays to the real witness but claims a key it lacks.
	impostorKey := randomKey(t, real.Name)
	ws := newWitnesses(t, l, nil,
		witness.Witness{URL: down.URL, VerifierKey: randomKey(t, "down.example/w")},
		witness.Witness{URL: unknown.URL, VerifierKey: unknown.VerifierKey},
		witness.Witness{URL: distrust.URL, VerifierKey: distrust.VerifierKey},
		witness.Witness{URL: real.URL, VerifierKey: impostorKey},
	)
	if err := ws.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// litewitness v0.6.1 answers 403 "unknown log" where the spec says 404.
	want := []string{"failed to reach", "unknown log", "403", "no valid cosignature"}
	for i, s := range ws.Status() {
		if s.CosignedSize != -1 || s.Lag != 4 || !strings.Contains(s.LastError, want[i]) {
			t.Errorf("witness %d: %+v, want error %q", i, s, want[i])
		}
	}
}

// randomKey returns a cosignature verifier key named name with a new key.
func randomKey(t *testing.T, name string) string {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := torchwood.NewCosignatureSigner(name, priv)
	if err != nil {
		t.Fatal(err)
	}
	return s.Verifier().String()
}

// lag reads agentkeys_witness_lag_entries{witness=name} from reg.
func lag(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "agentkeys_witness_lag_entries" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "witness" && lp.GetValue() == name {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatalf("no lag gauge for %s", name)
	return 0
}

// TestFakeWitness covers answers litewitness does not give: a witness ahead
// of the log, malformed 409 bodies, an oversized body, a server error.
func TestFakeWitness(t *testing.T) {
	ctx := context.Background()
	l := tilestest.New(nil)
	l.AppendN(4)
	for _, c := range []struct {
		name    string
		handler http.HandlerFunc
		want    string
	}{
		{"ahead", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/x.tlog.size")
			w.WriteHeader(409)
			w.Write([]byte("9\n"))
		}, "larger than the log's 4"},
		{"malformed 409", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(409)
			w.Write([]byte("04\n"))
		}, "malformed size"},
		{"oversized", func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(strings.Repeat("— x AAAA\n", 10000)))
		}, "longer than"},
		{"500", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "boom", 500) }, "500: boom"},
		{"garbage", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("hello\n")) }, "no valid cosignature"},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := httptest.NewServer(c.handler)
			defer srv.Close()
			ws := newWitnesses(t, l, nil, witness.Witness{URL: srv.URL, VerifierKey: randomKey(t, "fake.example/w")})
			if err := ws.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			if s := ws.Status()[0]; !strings.Contains(s.LastError, c.want) || s.Lag != 4 {
				t.Errorf("status %+v, want error %q", s, c.want)
			}
			cp, _ := ws.Checkpoint(ctx)
			want, _ := l.Checkpoint(ctx)
			if string(cp) != string(want) {
				t.Errorf("served checkpoint changed:\n%s", cp)
			}
		})
	}
}

// TestRunNotify checks that Run submits on Notify.
func TestRunNotify(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	l := tilestest.New(nil)
	got := make(chan string, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- string(b)
		http.Error(w, "no", 403)
	}))
	defer srv.Close()
	ws, err := witness.New(witness.Config{Source: l, Interval: time.Hour, Logger: slog.New(slog.DiscardHandler),
		Witnesses: []witness.Witness{{URL: srv.URL, VerifierKey: randomKey(t, "fake.example/w")}}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { ws.Run(ctx); close(done) }()
	if b := <-got; !strings.HasPrefix(b, "old 0\n\n"+tilestest.Origin+"\n0\n") {
		t.Fatalf("first submission %q", b)
	}
	l.AppendN(2)
	ws.Notify()
	if b := <-got; !strings.HasPrefix(b, "old 0\n\n"+tilestest.Origin+"\n2\n") {
		t.Fatalf("second submission %q", b)
	}
	cancel()
	<-done
}

// emptySource is a Source with no checkpoint yet (nil), as the audit stores
// are before the first entry, until fill.
type emptySource struct {
	*tilestest.Log
	filled chan struct{}
}

func (s emptySource) Checkpoint(ctx context.Context) ([]byte, error) {
	select {
	case <-s.filled:
		return s.Log.Checkpoint(ctx)
	default:
		return nil, nil
	}
}

// TestEmptyLog: while the log is empty a witness is not contacted (Sync
// waits without an error), Checkpoint is nil and the lag is 0; the first
// checkpoint is then submitted.
func TestEmptyLog(t *testing.T) {
	ctx := context.Background()
	got := make(chan string, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- string(b)
		http.Error(w, "no", 403)
	}))
	defer srv.Close()
	src := emptySource{tilestest.New(nil), make(chan struct{})}
	ws, err := witness.New(witness.Config{Source: src, Logger: slog.New(slog.DiscardHandler),
		Witnesses: []witness.Witness{{URL: srv.URL, VerifierKey: randomKey(t, "fake.example/w")}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := ws.Sync(ctx); err != nil {
		t.Fatalf("Sync on an empty log: %v", err)
	}
	if cp, err := ws.Checkpoint(ctx); cp != nil || err != nil {
		t.Fatalf("Checkpoint on an empty log = %q, %v; want nil, nil", cp, err)
	}
	if st := ws.Status(); len(st) != 1 || st[0].Lag != 0 || st[0].CosignedSize != -1 || st[0].LastError != "" {
		t.Fatalf("Status on an empty log = %+v", st)
	}
	select {
	case b := <-got:
		t.Fatalf("submitted %q on an empty log", b)
	default:
	}
	src.AppendN(1)
	close(src.filled)
	if err := ws.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if b := <-got; !strings.HasPrefix(b, "old 0\n\n"+tilestest.Origin+"\n1\n") {
		t.Fatalf("first submission %q", b)
	}
}
