package attest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/agentkeys/broker/shared/jwk"
	"github.com/agentkeys/broker/shared/manifest"
)

// certFor is a self-signed certificate for 127.0.0.1 carrying key.
func certFor(t testing.TB, key *ecdsa.PrivateKey) (tls.Certificate, *x509.Certificate) {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "issuer origin"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, leaf
}

func TestCheckIssuerTLSKey(t *testing.T) {
	enc := newTestManifest(t, "https://issuer.example", manifest.OriginEnclave)
	host := newTestManifest(t, "https://issuer.example", manifest.OriginHost)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, good := certFor(t, enc.tlsKey)
	_, bad := certFor(t, other)
	for _, tc := range []struct {
		name string
		m    manifest.Manifest
		leaf *x509.Certificate
		want Status
	}{
		{"the enclave's key", enc.m, good, StatusPass},
		{"another key", enc.m, bad, StatusFail},
		{"no TLS", enc.m, nil, StatusFail},
		{"issuer_origin host", host.m, bad, StatusSkip},
	} {
		if c := CheckIssuerTLSKey(&tc.m, tc.leaf); c.Status != tc.want || c.Name != "issuer tls key" {
			t.Errorf("%s: %+v, want %s", tc.name, c, tc.want)
		}
	}
}

// issuerServer serves discovery and the JWKS of tm over TLS with key.
func issuerServer(t *testing.T, tm testManifest, key *ecdsa.PrivateKey) (*httptest.Server, *http.Client) {
	t.Helper()
	cert, leaf := certFor(t, key)
	var srv *httptest.Server
	srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			json.NewEncoder(w).Encode(Discovery{Issuer: srv.URL, JWKSURI: srv.URL + "/.well-known/jwks.json"})
		case "/.well-known/jwks.json":
			w.Header().Set("Cache-Control", "public, max-age=300")
			json.NewEncoder(w).Encode(jwk.Set{Keys: tm.jwks().Keys})
		default:
			http.NotFound(w, r)
		}
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	return srv, &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
}

// TestWatchIssuerTLSKey: with a verified manifest whose issuer_origin is
// enclave, watch alarms when the issuer URL is served with any other TLS key
// (a host that terminates TLS itself, even with a publicly trusted
// certificate and the honest JWKS).
func TestWatchIssuerTLSKey(t *testing.T) {
	tm := newTestManifest(t, "https://issuer.example", manifest.OriginEnclave)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, tc := range []struct {
		name  string
		key   *ecdsa.PrivateKey
		alarm bool
	}{
		{"the enclave terminates TLS", tm.tlsKey, false},
		{"another key", other, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, client := issuerServer(t, tm, tc.key)
			w, err := NewWatcher(WatchConfig{Issuer: srv.URL, Manifests: []manifest.Manifest{tm.m}, Live: LiveOptions{Client: client}})
			if err != nil {
				t.Fatal(err)
			}
			alarms := w.Round(context.Background())
			got := false
			for _, a := range alarms {
				if a.Reason == AlarmIssuerTLSKey {
					got = true
				} else {
					t.Errorf("unexpected alarm %+v", a)
				}
			}
			if got != tc.alarm {
				t.Fatalf("issuer_tls_key alarm = %v, want %v (%+v)", got, tc.alarm, alarms)
			}
		})
	}
}
