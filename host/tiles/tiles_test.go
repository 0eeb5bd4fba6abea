package tiles_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"testing"

	"filippo.io/torchwood"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/agentkeys/broker/host/tiles"
	"github.com/agentkeys/broker/host/tiles/tilestest"
	"github.com/agentkeys/broker/shared/tlogproof"
)

func serve(t *testing.T, l *tilestest.Log) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(tiles.New(l, tiles.Options{VerifierKey: tilestest.VerifierKey()}))
	t.Cleanup(srv.Close)
	return srv
}

func verifier(t *testing.T) note.Verifier {
	v, err := note.NewVerifier(tilestest.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestTorchwoodClient reads logs of several sizes through the handler with
// torchwood's tlog-tiles client, which checks every tile and entry against
// the checkpoint's root.
func TestTorchwoodClient(t *testing.T) {
	sizes := []int64{0, 1, 2, 255, 256, 257, 511, 4097}
	if !testing.Short() {
		sizes = append(sizes, 65537)
	}
	for _, n := range sizes {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			l := tilestest.New(nil)
			l.AppendN(n)
			srv := serve(t, l)
			ctx := context.Background()
			f, err := torchwood.NewTileFetcher(srv.URL + "/v1/audit/")
			if err != nil {
				t.Fatal(err)
			}
			raw, err := f.ReadEndpoint(ctx, "checkpoint")
			if err != nil {
				t.Fatal(err)
			}
			nt, err := note.Open(raw, note.VerifierList(verifier(t)))
			if err != nil {
				t.Fatal(err)
			}
			cp, err := torchwood.ParseCheckpoint(nt.Text)
			if err != nil {
				t.Fatal(err)
			}
			if cp.N != n || cp.Origin != tilestest.Origin {
				t.Fatalf("checkpoint %q size %d", cp.Origin, cp.N)
			}
			c, err := torchwood.NewClient(f)
			if err != nil {
				t.Fatal(err)
			}
			next := int64(0)
			for i, e := range c.Entries(ctx, cp.Tree, 0) {
				if i != next || !bytes.Equal(e, tilestest.Entry(i)) {
					t.Fatalf("entry %d = %q, want index %d", i, e, next)
				}
				next++
			}
			if err := c.Err(); err != nil {
				t.Fatal(err)
			}
			// Entries may stop before a partial bundle; Entry reads the rest.
			if n-next >= tiles.Width {
				t.Fatalf("iteration stopped at %d of %d", next, n)
			}
			idx := []int64{}
			for i := next; i < n; i++ {
				idx = append(idx, i)
			}
			for range 20 {
				if n > 0 {
					idx = append(idx, rand.Int64N(n))
				}
			}
			for _, i := range idx {
				e, _, err := c.Entry(ctx, cp.Tree, i)
				if err != nil {
					t.Fatalf("entry %d: %v", i, err)
				}
				if !bytes.Equal(e, tilestest.Entry(i)) {
					t.Fatalf("entry %d = %q", i, e)
				}
			}
		})
	}
}

// httpTiles is a tlog.TileReader over the handler, written without
// torchwood.
type httpTiles struct {
	t    *testing.T
	base string
}

func (h httpTiles) Height() int { return tiles.Height }
func (h httpTiles) ReadTiles(ts []tlog.Tile) ([][]byte, error) {
	var out [][]byte
	for _, t := range ts {
		resp, err := http.Get(h.base + tiles.Path(t))
		if err != nil {
			return nil, err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return nil, fmt.Errorf("%s: %s", tiles.Path(t), resp.Status)
		}
		out = append(out, b)
	}
	return out, nil
}
func (h httpTiles) SaveTiles([]tlog.Tile, [][]byte) {}

// TestTileHashReader reads stored hashes through tlog.TileHashReader, which
// authenticates each tile against the tree root, and compares them with the
// log's.
func TestTileHashReader(t *testing.T) {
	for _, n := range []int64{1, 255, 256, 257, 70000} {
		l := tilestest.New(nil)
		l.AppendN(n)
		srv := serve(t, l)
		raw, _ := l.Checkpoint(context.Background())
		tree, err := tiles.ParseCheckpointSize(raw)
		if err != nil {
			t.Fatal(err)
		}
		want := l.Hashes()
		r := tlog.TileHashReader(tree, httpTiles{t, srv.URL + "/v1/audit/"})
		var idx []int64
		for range 50 {
			i := rand.Int64N(n)
			idx = append(idx, tlog.StoredHashIndex(0, i))
		}
		idx = append(idx, tlog.StoredHashIndex(0, n-1))
		got, err := r.ReadHashes(idx)
		if err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		for k, x := range idx {
			if got[k] != want[x] {
				t.Fatalf("n=%d: stored hash %d differs", n, x)
			}
		}
		// A consistency proof from every interesting older size.
		for _, m := range []int64{1, n / 2, n - 1, n} {
			if m < 1 {
				continue
			}
			p, err := tlog.ProveTree(n, m, r)
			if err != nil {
				t.Fatalf("n=%d m=%d: %v", n, m, err)
			}
			old, _ := tlog.TreeHash(m, tlog.HashReaderFunc(func(i []int64) ([]tlog.Hash, error) { return l.ReadHashes(context.Background(), i) }))
			if err := tlog.CheckTree(p, n, tree.Hash, m, old); err != nil {
				t.Fatalf("n=%d m=%d: %v", n, m, err)
			}
		}
	}
}

func get(t *testing.T, url string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// TestRoutes checks status codes, content types and cache headers, including
// 404 for tiles beyond the tree (size 70000: 273 full level-0 tiles, a partial
// of width 112, one full level-1 tile, a partial of 17, a level-2 partial of
// 1, as in the spec's example).
func TestRoutes(t *testing.T) {
	l := tilestest.New(nil)
	l.AppendN(70000)
	srv := serve(t, l)
	base := srv.URL + "/v1/audit/"
	for _, c := range []struct {
		path, cache string
		status      int
	}{
		{"checkpoint", "no-cache", 200},
		{"verifier-key", "public, max-age=60", 200},
		{"tile/0/000", "public, max-age=31536000, immutable", 200},
		{"tile/0/272", "public, max-age=31536000, immutable", 200},
		{"tile/0/273", "", 404},
		{"tile/0/273.p/112", "public, max-age=60", 200},
		{"tile/0/273.p/113", "", 404},
		{"tile/0/273.p/5", "public, max-age=60", 200},
		{"tile/0/000.p/5", "public, max-age=60", 200},
		{"tile/1/000", "public, max-age=31536000, immutable", 200},
		{"tile/1/001", "", 404},
		{"tile/1/001.p/17", "public, max-age=60", 200},
		{"tile/1/001.p/18", "", 404},
		{"tile/2/000.p/1", "public, max-age=60", 200},
		{"tile/2/000.p/2", "", 404},
		{"tile/2/000", "", 404},
		{"tile/3/000.p/1", "", 404},
		{"tile/entries/000", "public, max-age=31536000, immutable", 200},
		{"tile/entries/273", "", 404},
		{"tile/entries/273.p/112", "public, max-age=60", 200},
		{"tile/entries/273.p/113", "", 404},
		{"tile/entries/x001/000", "", 404},
		{"tile/0/x000/001", "", 404},
		{"tile/0/1", "", 404},
		{"tile/0/000.p/0", "", 404},
		{"tile/0/000.p/256", "", 404},
		{"tile/64/000", "", 404},
		{"tile/00/000", "", 404},
		{"proof/69999", "no-cache", 200},
		{"proof/70000", "", 404},
		{"proof/01", "", 400},
		{"proof/-1", "", 400},
	} {
		resp, body := get(t, base+c.path)
		if resp.StatusCode != c.status {
			t.Errorf("%s: status %d, want %d: %s", c.path, resp.StatusCode, c.status, body)
			continue
		}
		if c.status != 200 {
			continue
		}
		if got := resp.Header.Get("Cache-Control"); got != c.cache {
			t.Errorf("%s: Cache-Control %q, want %q", c.path, got, c.cache)
		}
	}
	resp, body := get(t, base+"tile/entries/273.p/112")
	if resp.Header.Get("Content-Type") != "application/octet-stream" {
		t.Errorf("bundle Content-Type %q", resp.Header.Get("Content-Type"))
	}
	for i := int64(273 * 256); i < 70000; i++ {
		e, rest, err := torchwood.ReadTileEntry(body)
		if err != nil || !bytes.Equal(e, tilestest.Entry(i)) {
			t.Fatalf("bundle entry %d: %q, %v", i, e, err)
		}
		body = rest
	}
	if len(body) != 0 {
		t.Errorf("%d trailing bytes in the bundle", len(body))
	}
	if resp, body := get(t, base+"tile/0/273.p/112"); len(body) != 112*32 || resp.Header.Get("Content-Type") != "application/octet-stream" {
		t.Errorf("partial tile: %d bytes, %q", len(body), resp.Header.Get("Content-Type"))
	}
	if resp, _ := get(t, base+"checkpoint"); resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" {
		t.Errorf("checkpoint Content-Type %q", resp.Header.Get("Content-Type"))
	}
	if _, body := get(t, base+"verifier-key"); string(body) != tilestest.VerifierKey()+"\n" {
		t.Errorf("verifier-key %q", body)
	}
}

// TestProof checks that /proof/{index} serves a tlog-proof that verifies
// under the checkpoint it embeds.
func TestProof(t *testing.T) {
	l := tilestest.New(nil)
	l.AppendN(1000)
	srv := serve(t, l)
	for _, i := range []int64{0, 1, 255, 256, 999} {
		_, body := get(t, fmt.Sprintf("%s/v1/audit/proof/%d", srv.URL, i))
		p, err := tlogproof.Parse(body)
		if err != nil {
			t.Fatal(err)
		}
		nt, err := note.Open(p.Checkpoint, note.VerifierList(verifier(t)))
		if err != nil {
			t.Fatal(err)
		}
		tree, err := tiles.ParseCheckpointSize([]byte(nt.Text))
		if err != nil {
			t.Fatal(err)
		}
		if p.Index != i {
			t.Fatalf("index %d, want %d", p.Index, i)
		}
		if err := tlog.CheckRecord(p.Hashes, tree.N, tree.Hash, i, tlog.RecordHash(tilestest.Entry(i))); err != nil {
			t.Errorf("proof of %d: %v", i, err)
		}
		if err := tlog.CheckRecord(p.Hashes, tree.N, tree.Hash, i, tlog.RecordHash(tilestest.Entry(i+1))); err == nil {
			t.Errorf("proof of %d verifies another entry", i)
		}
	}
}

// TestPath compares Path and ParsePath with torchwood's implementation of
// the same spec.
func TestPath(t *testing.T) {
	for _, c := range []struct {
		path string
		tile tlog.Tile
	}{
		{"tile/0/000", tlog.Tile{H: 8, L: 0, N: 0, W: 256}},
		{"tile/0/x001/x234/067", tlog.Tile{H: 8, L: 0, N: 1234067, W: 256}},
		{"tile/entries/x001/x234/067.p/8", tlog.Tile{H: 8, L: -1, N: 1234067, W: 8}},
		{"tile/3/x999/999.p/255", tlog.Tile{H: 8, L: 3, N: 999999, W: 255}},
	} {
		if got := tiles.Path(c.tile); got != c.path {
			t.Errorf("Path(%+v) = %q, want %q", c.tile, got, c.path)
		}
		got, err := tiles.ParsePath(c.path)
		if err != nil || got != c.tile {
			t.Errorf("ParsePath(%q) = %+v, %v", c.path, got, err)
		}
	}
	for range 2000 {
		tl := tlog.Tile{H: 8, L: rand.IntN(6) - 1, N: rand.Int64N(1 << rand.IntN(50)), W: 1 + rand.IntN(256)}
		if got, want := tiles.Path(tl), torchwood.TilePath(tl); got != want {
			t.Fatalf("Path(%+v) = %q, torchwood says %q", tl, got, want)
		}
	}
}

func FuzzParsePath(f *testing.F) {
	for _, s := range []string{"tile/0/000", "tile/entries/x001/002.p/3", "tile/63/x009/x223/x372/x036/x854/x775/807"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tl, err := tiles.ParsePath(s)
		if err != nil {
			return
		}
		if got := tiles.Path(tl); got != s {
			t.Fatalf("ParsePath(%q) = %+v, whose Path is %q", s, tl, got)
		}
		if tw, err := torchwood.ParseTilePath(s); err != nil || tw != tl {
			t.Fatalf("torchwood.ParseTilePath(%q) = %+v, %v; ours %+v", s, tw, err, tl)
		}
	})
}

// emptySource is a Source with no checkpoint yet, as the audit stores are
// before the first entry.
type emptySource struct{ *tilestest.Log }

func (emptySource) Checkpoint(context.Context) ([]byte, error) { return nil, nil }

// TestEmptyLog: before the first entry (a nil checkpoint) the checkpoint,
// tiles and proofs are 404, not 500, and the verifier key is still served.
func TestEmptyLog(t *testing.T) {
	srv := httptest.NewServer(tiles.New(emptySource{tilestest.New(nil)}, tiles.Options{VerifierKey: tilestest.VerifierKey()}))
	defer srv.Close()
	for path, status := range map[string]int{
		"checkpoint": 404, "tile/0/000.p/1": 404, "tile/entries/000.p/1": 404, "proof/0": 404, "verifier-key": 200,
	} {
		resp, body := get(t, srv.URL+"/v1/audit/"+path)
		if resp.StatusCode != status {
			t.Errorf("%s: status %d, want %d: %s", path, resp.StatusCode, status, body)
		}
	}
}
