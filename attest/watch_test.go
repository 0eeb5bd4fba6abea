package attest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentkeys/broker/internal/testbroker"
	"github.com/agentkeys/broker/shared/jwk"
	"github.com/agentkeys/broker/shared/manifest"
)

// rogueHost wraps a real broker's handler as a compromised host could: it
// adds a key of its own to the JWKS, serves the JWKS uncacheable, or moves
// jwks_uri. Each misbehaviour is switched on between rounds.
type rogueHost struct {
	b                            *testbroker.Broker
	addKey, noCache, moveJWKSURI atomic.Bool
	rogue                        jwk.Key
}

func (h *rogueHost) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/rogue/jwks.json" {
		r.URL.Path = "/.well-known/jwks.json"
	}
	rec := httptest.NewRecorder()
	h.b.API.ServeHTTP(rec, r)
	body := rec.Body.Bytes()
	switch r.URL.Path {
	case "/.well-known/jwks.json":
		if h.addKey.Load() {
			var set jwk.Set
			json.Unmarshal(body, &set)
			set.Keys = append(set.Keys, h.rogue)
			body, _ = json.Marshal(set)
		}
		if h.noCache.Load() {
			rec.Header().Set("Cache-Control", "public, max-age=0")
		}
	case "/.well-known/openid-configuration":
		if h.moveJWKSURI.Load() {
			var d map[string]any
			json.Unmarshal(body, &d)
			d["jwks_uri"] = h.b.URL + "/rogue/jwks.json"
			body, _ = json.Marshal(d)
		}
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.Header().Del("Content-Length")
	w.WriteHeader(rec.Code)
	w.Write(body)
}

// viaHost is a client whose every connection goes to the host at addr, as if
// the issuer's name resolved to it.
func viaHost(addr string) *http.Client {
	return &http.Client{Timeout: time.Minute, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}}
}

func TestWatchRogueHost(t *testing.T) {
	b := testbroker.Start(t, testbroker.Options{})
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rogue, _ := jwk.FromP256(&key.PublicKey)
	h := &rogueHost{b: b, rogue: rogue}
	srv := httptest.NewServer(h)
	defer srv.Close()

	w, err := NewWatcher(WatchConfig{
		Issuer: b.URL, ManifestURL: b.URL,
		Document: DocumentOptions{Roots: b.Attester.RootPool(), MaxAge: 5 * time.Minute, MaxSkew: time.Minute},
		Live:     LiveOptions{Client: viaHost(srv.Listener.Addr().String())},
	})
	if err != nil {
		t.Fatal(err)
	}
	if alarms := w.Round(context.Background()); len(alarms) != 0 {
		t.Fatalf("an honest host raised %+v", alarms)
	}
	tests := []struct {
		name   string
		toggle *atomic.Bool
		reason string
		detail string
	}{
		{"host adds a key of its own", &h.addKey, AlarmUnlistedKey, rogue.Kid},
		{"host serves the JWKS with max-age=0", &h.noCache, AlarmJWKSNoCache, `"public, max-age=0"`},
		{"host moves jwks_uri", &h.moveJWKSURI, AlarmJWKSURIChanged, "/rogue/jwks.json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.toggle.Store(true)
			defer tt.toggle.Store(false)
			alarms := w.Round(context.Background())
			if len(alarms) != 1 || alarms[0].Reason != tt.reason || !strings.Contains(alarms[0].Detail, tt.detail) {
				t.Fatalf("alarms %+v, want one %s naming %s", alarms, tt.reason, tt.detail)
			}
			m := scrape(t, w)
			if !strings.Contains(m, `agentkeys_attest_watch_alarm{reason="`+tt.reason+`"} 1`) {
				t.Errorf("the gauge does not show the alarm:\n%s", m)
			}
		})
	}
	if alarms := w.Round(context.Background()); len(alarms) != 0 {
		t.Fatalf("the host behaves again, yet %+v", alarms)
	}
	m := scrape(t, w)
	for _, r := range alarmReasons {
		if !strings.Contains(m, `agentkeys_attest_watch_alarm{reason="`+r+`"} 0`) {
			t.Errorf("the gauge for %s is not back to 0:\n%s", r, m)
		}
	}
}

func TestWatchIssuerMismatch(t *testing.T) {
	b := testbroker.Start(t, testbroker.Options{})
	tm := newTestManifest(t, b.URL, "host")
	w, err := NewWatcher(WatchConfig{Issuer: strings.Replace(b.URL, "127.0.0.1", "localhost", 1), Manifests: []manifest.Manifest{tm.m}})
	if err != nil {
		t.Fatal(err)
	}
	alarms := w.Round(context.Background())
	var reasons []string
	for _, a := range alarms {
		reasons = append(reasons, a.Reason)
	}
	// The discovery issuer is not the URL watched, and the manifest given
	// is not the broker's, so its key is unlisted.
	if strings.Join(reasons, ",") != AlarmIssuerChanged+","+AlarmUnlistedKey {
		t.Fatalf("alarms %+v", alarms)
	}
}

func TestNoCache(t *testing.T) {
	for cc, want := range map[string]bool{
		"": false, "public, max-age=300": false, "max-age=0": true, "no-cache": true, "No-Store": true,
		"public, max-age=-1": true, `no-cache="set-cookie"`: true, "private": false, "max-age=x": true,
	} {
		if got := noCache(cc); got != want {
			t.Errorf("noCache(%q) = %v", cc, got)
		}
	}
}

func scrape(t *testing.T, w *Watcher) string {
	t.Helper()
	srv := httptest.NewServer(w.MetricsHandler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
