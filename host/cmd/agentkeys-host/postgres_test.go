package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentkeys/broker/host/audit"
	"github.com/agentkeys/broker/host/pgdb/pgtest"
	"github.com/agentkeys/broker/host/revocation"
	"github.com/agentkeys/broker/internal/lockedbuf"
	"github.com/agentkeys/broker/shared/httpapi"
	"github.com/agentkeys/broker/shared/protocol"
)

// startPostgresHost runs the host with --audit-dsn dsn in front of a
// stand-in enclave that mints at once, until t ends; it returns the issuer.
func startPostgresHost(t *testing.T, dsn string) (issuer string, logs *lockedbuf.Buffer) {
	t.Helper()
	dir := t.TempDir()
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	issuer = fmt.Sprintf("http://127.0.0.1:%d", port)
	enc := &drainEnclave{issuer: issuer, inMint: make(chan struct{}, 100), release: make(chan struct{}), log: newDrainLog(t, issuer)}
	close(enc.release)
	el, err := protocol.Listen("unix:" + dir + "/e.sock")
	if err != nil {
		t.Fatal(err)
	}
	esrv := &protocol.Server{Handler: enc}
	go esrv.Serve(el)
	t.Cleanup(func() { esrv.Shutdown(context.Background()) })
	cfg, err := parseConfig([]string{"--port", strconv.Itoa(port), "--state-dir", dir, "--enclave", "unix:" + dir + "/e.sock", "--audit-dsn", dsn},
		func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	logs = &lockedbuf.Buffer{}
	go func() { done <- serve(ctx, cfg, slog.New(slog.NewJSONHandler(logs, nil))) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	waitStatus(t, issuer+"/readyz", http.StatusOK)
	return issuer, logs
}

// waitStatus polls url (bounded) until it answers status.
func waitStatus(t *testing.T, url string, status int) {
	t.Helper()
	var last string
	for range 2000 {
		resp, err := http.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == status {
				return
			}
			last = resp.Status + " " + string(b)
		} else {
			last = err.Error()
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s never answered %d (last: %s)", url, status, last)
}

func mint(t *testing.T, issuer string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest("POST", issuer+httpapi.PathMintJWT, nil)
	req.Header.Set("Authorization", "Bearer aaa.eyJzaWQiOiJzMSJ9.ccc")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func getBody(t *testing.T, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// TestPostgresHost: with --audit-dsn the host mints with its record in
// PostgreSQL and serves the proof under /v1/audit/ and /v1/audit/logs/;
// it serves another host's log from the same database; a revocation made
// through another host's store refuses the session here.
func TestPostgresHost(t *testing.T) {
	ctx := context.Background()
	db := pgtest.New(t)
	issuer, logs := startPostgresHost(t, db.DSN)

	status, body := mint(t, issuer)
	var mr httpapi.MintJWTResponse
	if status != http.StatusOK || json.Unmarshal(body, &mr) != nil || mr.JWT == "" || mr.LogProof == "" {
		t.Fatalf("mint: %d %s", status, body)
	}
	s1, own := getBody(t, issuer+httpapi.PathAudit+"proof/0")
	s2, shared := getBody(t, issuer+httpapi.AuditLogPath("")+"proof/0")
	if s1 != http.StatusOK || s2 != http.StatusOK || !bytes.Equal(own, shared) || !bytes.Equal(own, []byte(mr.LogProof)) {
		t.Fatalf("proofs: %d %d\n%s\n%s\nmint's:\n%s", s1, s2, own, shared, mr.LogProof)
	}

	// Another host's log in the same database is served too.
	other, err := audit.OpenPostgres(ctx, db.DSN, "other")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	ol := newDrainLog(t, "http://other.example")
	if _, err := ol.Resume(protocol.AuditResumeRequest{}); err != nil {
		t.Fatal(err)
	}
	logged, err := ol.Append(func(i int64) ([]byte, error) { return []byte(`{"v":1}`), nil })
	if err != nil {
		t.Fatal(err)
	}
	if err := other.AppendBatch(ctx, logged.Batch); err != nil {
		t.Fatal(err)
	}
	if s, cp := getBody(t, issuer+httpapi.AuditLogPath("other")+"checkpoint"); s != http.StatusOK || !bytes.Equal(cp, logged.Batch.Checkpoint) {
		t.Fatalf("the other log's checkpoint: %d %s", s, cp)
	}
	if s, _ := getBody(t, issuer+httpapi.AuditLogPath("other")+"proof/0"); s != http.StatusOK {
		t.Fatalf("the other log's proof: %d", s)
	}
	if s, b := getBody(t, issuer+httpapi.PathAuditLogs); s != http.StatusOK ||
		string(b) != `{"logs":[{"name":"","path":"/v1/audit/logs/_default/","own":true},{"name":"other","path":"/v1/audit/logs/other/","own":false}]}`+"\n" {
		t.Fatalf("the logs: %d %s", s, b)
	}
	if s, b := getBody(t, issuer+httpapi.AuditLogPath("nobody")+"checkpoint"); s != http.StatusNotFound || !strings.Contains(string(b), `"error":"not_found"`) {
		t.Fatalf("an unknown log: %d %s", s, b)
	}

	// A revocation through another host's store.
	revs, err := revocation.OpenPostgres(ctx, db.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer revs.Close()
	if _, err := revs.Revoke(ctx, "s1", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if status, body := mint(t, issuer); status != http.StatusUnauthorized || !strings.Contains(string(body), "revoked") {
		t.Fatalf("mint of a session revoked elsewhere: %d %s", status, body)
	}

	// Both outcomes are recorded in the database, with their entries.
	reader, err := audit.OpenPostgres(ctx, db.DSN, "")
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	recs, err := reader.List(ctx, 0, 10)
	if err != nil || len(recs) != 2 || recs[0].Outcome != audit.OutcomeOK || recs[1].Outcome != audit.OutcomeRevoked || recs[1].Logged == nil {
		t.Fatalf("records: %v %+v", err, recs)
	}
	if !strings.Contains(logs.String(), "audit store and revocation list in PostgreSQL") {
		t.Fatalf("no log line names the store:\n%s", logs)
	}
}

// TestPostgresHostFailsClosed: with the database unreachable the host mints
// nothing and is not ready; once it is back, it mints again.
func TestPostgresHostFailsClosed(t *testing.T) {
	db := pgtest.New(t)
	proxy := db.NewProxy(t)
	issuer, _ := startPostgresHost(t, proxy.DSN)
	if status, body := mint(t, issuer); status != http.StatusOK {
		t.Fatalf("mint: %d %s", status, body)
	}
	proxy.Stop()
	status, body := mint(t, issuer)
	if status == http.StatusOK || strings.Contains(string(body), `"jwt"`) {
		t.Fatalf("minted with the database unreachable: %d %s", status, body)
	}
	waitStatus(t, issuer+"/readyz", http.StatusServiceUnavailable)
	if err := proxy.Start(); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, issuer+"/readyz", http.StatusOK)
	for i := 0; ; i++ {
		status, body = mint(t, issuer)
		if status == http.StatusOK {
			break
		}
		if i > 100 {
			t.Fatalf("no mint after the database came back: %d %s", status, body)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAuditDSNNeverShown: the DSN's password is in no log line, error or
// help text, whether it comes from the flag or the environment.
func TestAuditDSNNeverShown(t *testing.T) {
	const pw = "Sup3r-s3cret-pw"
	dir := t.TempDir()
	for _, tt := range []struct {
		name string
		args []string
		env  map[string]string
		code int
	}{
		{"unreachable", []string{"--audit-dsn", "postgres://agentkeys:" + pw + "@127.0.0.1:1/audit?connect_timeout=5"}, nil, 1},
		{"unreachable env", nil, map[string]string{"BROKER_AUDIT_DSN": "postgresql://agentkeys@127.0.0.1:1/audit?connect_timeout=5&password=" + pw}, 1},
		{"not a URL", []string{"--audit-dsn", "host=db password=" + pw}, nil, 2},
		{"other scheme", []string{"--audit-dsn", "mysql://agentkeys:" + pw + "@db/audit"}, nil, 2},
		{"with audit-db", []string{"--audit-dsn", "postgres://agentkeys:" + pw + "@db/audit", "--audit-db", dir + "/a.db"}, nil, 2},
		{"help", []string{"-h"}, map[string]string{"BROKER_AUDIT_DSN": "postgres://agentkeys:" + pw + "@db/audit"}, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append([]string{"--state-dir", dir, "--enclave", "unix:" + dir + "/none.sock"}, tt.args...)
			code := run(args, func(k string) string { return tt.env[k] }, &stdout, &stderr)
			if code != tt.code {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, tt.code, stderr.String())
			}
			if out := stdout.String() + stderr.String(); strings.Contains(out, pw) {
				t.Fatalf("the password is shown:\n%s", out)
			}
			if tt.code != 0 && !strings.Contains(stderr.String(), "audit") {
				t.Fatalf("the error does not name the audit store:\n%s", stderr.String())
			}
		})
	}
}
