package tiles_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"filippo.io/torchwood"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/agentkeys/broker/host/audit"
	"github.com/agentkeys/broker/host/tiles"
	"github.com/agentkeys/broker/host/tiles/tilestest"
	"github.com/agentkeys/broker/shared/httpapi"
	"github.com/agentkeys/broker/shared/tlogproof"
)

// fakeLogs is an audit.Logs of in-memory logs.
type fakeLogs struct {
	own  string
	logs map[string]*tilestest.Log
}

func (f fakeLogs) OwnLog() string { return f.own }

func (f fakeLogs) LogReader(name string) (audit.LogReader, error) {
	if err := audit.CheckLogName(name); err != nil {
		return nil, err
	}
	if l, ok := f.logs[name]; ok {
		return l, nil
	}
	return unknownLog{}, nil
}

func (f fakeLogs) LogNames(context.Context) ([]string, error) {
	var names []string
	for n := range f.logs {
		names = append(names, n)
	}
	slices.Sort(names)
	return names, nil
}

type unknownLog struct{}

func (unknownLog) Checkpoint(context.Context) ([]byte, error) { return nil, audit.ErrUnknownLog }
func (unknownLog) ReadHashes(context.Context, []int64) ([]tlog.Hash, error) {
	return nil, audit.ErrUnknownLog
}
func (unknownLog) ReadEntries(context.Context, int64, int64) ([][]byte, error) {
	return nil, audit.ErrUnknownLog
}

// TestLogs: every log of the store is served under its name, read and
// checked by torchwood's client; the default log under _default; an unknown
// or invalid name and another log's verifier key are 404 with a JSON error.
func TestLogs(t *testing.T) {
	other, otherKey := tilestest.NewKey(tilestest.Origin+"/b", "other")
	logs := fakeLogs{own: "b", logs: map[string]*tilestest.Log{"": tilestest.New(nil), "b": tilestest.New(other)}}
	logs.logs[""].AppendN(300)
	logs.logs["b"].AppendN(7)
	h, err := tiles.NewLogs(logs, tiles.Options{VerifierKey: otherKey})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	ctx := context.Background()
	for _, tt := range []struct {
		name string
		vkey string
		n    int64
	}{{"", tilestest.VerifierKey(), 300}, {"b", otherKey, 7}} {
		base := srv.URL + httpapi.AuditLogPath(tt.name)
		f, err := torchwood.NewTileFetcher(base)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := f.ReadEndpoint(ctx, "checkpoint")
		if err != nil {
			t.Fatal(err)
		}
		v, _ := note.NewVerifier(tt.vkey)
		nt, err := note.Open(raw, note.VerifierList(v))
		if err != nil {
			t.Fatalf("%q: %v", tt.name, err)
		}
		cp, err := torchwood.ParseCheckpoint(nt.Text)
		if err != nil || cp.N != tt.n {
			t.Fatalf("%q: checkpoint %v, size %d", tt.name, err, cp.N)
		}
		c, err := torchwood.NewClient(f)
		if err != nil {
			t.Fatal(err)
		}
		next := int64(0)
		for i, e := range c.Entries(ctx, cp.Tree, 0) {
			if i != next || !bytes.Equal(e, tilestest.Entry(i)) {
				t.Fatalf("%q: entry %d", tt.name, i)
			}
			next++
		}
		if err := c.Err(); err != nil {
			t.Fatal(err)
		}
		// Entries may stop before a partial bundle; Entry reads the rest.
		for i := next; i < tt.n; i++ {
			if e, _, err := c.Entry(ctx, cp.Tree, i); err != nil || !bytes.Equal(e, tilestest.Entry(i)) {
				t.Fatalf("%q: entry %d: %v", tt.name, i, err)
			}
		}
		resp, body := get(t, base+"proof/3")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%q: proof %d %s", tt.name, resp.StatusCode, body)
		}
		p, err := tlogproof.Parse(body)
		if err != nil || p.Index != 3 {
			t.Fatalf("%q: proof %v", tt.name, err)
		}
	}
	resp, body := get(t, srv.URL+httpapi.PathAuditLogs)
	var index httpapi.AuditLogs
	if err := json.Unmarshal(body, &index); err != nil || resp.StatusCode != http.StatusOK ||
		!slices.Equal(index.Logs, []httpapi.AuditLog{{Name: "", Path: "/v1/audit/logs/_default/"}, {Name: "b", Path: "/v1/audit/logs/b/", Own: true}}) {
		t.Fatalf("index: %d %s", resp.StatusCode, body)
	}
	for _, tt := range []struct {
		path, want string
		status     int
	}{
		{httpapi.AuditLogPath("b") + "verifier-key", otherKey + "\n", http.StatusOK},
		{httpapi.AuditLogPath("") + "verifier-key", "not_found", http.StatusNotFound},
		{httpapi.AuditLogPath("nobody") + "checkpoint", "not_found", http.StatusNotFound},
		{httpapi.AuditLogPath("nobody") + "tile/0/000", "not_found", http.StatusNotFound},
		{httpapi.AuditLogPath("nobody") + "proof/0", "not_found", http.StatusNotFound},
		{httpapi.PathAuditLogs + "Bad_Name/checkpoint", "not_found", http.StatusNotFound},
	} {
		resp, body := get(t, srv.URL+tt.path)
		if resp.StatusCode != tt.status {
			t.Errorf("%s: %d %s, want %d", tt.path, resp.StatusCode, body, tt.status)
			continue
		}
		if tt.status == http.StatusOK {
			if string(body) != tt.want {
				t.Errorf("%s: %q, want %q", tt.path, body, tt.want)
			}
			continue
		}
		var e httpapi.Error
		if err := json.Unmarshal(body, &e); err != nil || e.Error != tt.want || e.Message == "" || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: %s (%v), want a JSON error %q", tt.path, body, err, tt.want)
		}
		if strings.Contains(tt.path, "nobody") && !strings.Contains(e.Message, "no audit log") {
			t.Errorf("%s: message %q does not say the log is unknown", tt.path, e.Message)
		}
	}
}
