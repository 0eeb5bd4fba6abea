package server

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/agentkeys/broker/internal/lockedbuf"
)

func TestIssuerRedirect(t *testing.T) {
	h := IssuerRedirect("https://b.example.com:8443/oidc")
	tests := []struct {
		method, target, want string
		status               int
	}{
		{"GET", "/.well-known/jwks.json", "https://b.example.com:8443/.well-known/jwks.json", 308},
		{"HEAD", "/oidc/x?y=1", "https://b.example.com:8443/oidc/x?y=1", 308},
		{"POST", "/v1/session", "", 400},
	}
	for _, tt := range tests {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tt.method, "http://evil.example.com"+tt.target, nil))
		if rec.Code != tt.status || rec.Header().Get("Location") != tt.want {
			t.Errorf("%s %s: %d %q", tt.method, tt.target, rec.Code, rec.Header().Get("Location"))
		}
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	for i := 0; ; i++ {
		resp, err := http.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return resp.StatusCode, string(b)
		}
		if i > 2000 {
			t.Fatalf("GET %s: %v", url, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRun: the API and the metrics listener serve, the http.Server's own
// errors (here a handler's panic) are JSON log lines, and a cancel stops
// everything cleanly.
func TestRun(t *testing.T) {
	api, metricsAddr := freeAddr(t), freeAddr(t)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ok", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "api") })
	mux.HandleFunc("GET /panic", func(w http.ResponseWriter, r *http.Request) { panic("boom") })
	logs := &lockedbuf.Buffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{API: mux, Addr: api, Issuer: "http://" + api, ShutdownGrace: 10 * time.Second,
			Metrics: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "metrics") }), MetricsAddr: metricsAddr,
			Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	}()
	if code, body := get(t, "http://"+api+"/ok"); code != 200 || body != "api" {
		t.Fatalf("api: %d %q", code, body)
	}
	if code, body := get(t, "http://"+metricsAddr+"/metrics"); code != 200 || body != "metrics" {
		t.Fatalf("metrics: %d %q", code, body)
	}
	if code, _ := get(t, "http://"+metricsAddr+"/ok"); code != 404 {
		t.Fatalf("the metrics listener serves the API: %d", code)
	}
	if _, err := http.Get("http://" + api + "/panic"); err == nil {
		t.Fatal("a panicking handler answered")
	}
	for i := 0; !strings.Contains(logs.String(), "panic serving"); i++ {
		if i > 2000 {
			t.Fatalf("the server's panic was not logged:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if !json.Valid([]byte(line)) {
			t.Errorf("not a JSON log line: %q", line)
		}
	}
	if !strings.Contains(logs.String(), `"msg":"stopped"`) {
		t.Errorf("no stop in the log:\n%s", logs.String())
	}
}

func TestRunListenError(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	err = Run(context.Background(), Config{API: http.NotFoundHandler(), Addr: l.Addr().String()})
	if err == nil || !strings.Contains(err.Error(), "failed to listen on "+l.Addr().String()) {
		t.Fatalf("err = %v", err)
	}
}
