package origin

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agentkeys/broker/shared/httpapi"
	"github.com/agentkeys/broker/shared/jwk"
	"github.com/agentkeys/broker/shared/protocol"
)

func genKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newOrigin(t testing.TB, issuer string, selfSigned bool) (*Origin, jwk.Key) {
	t.Helper()
	ik := genKey(t)
	j, err := jwk.FromP256(&ik.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	o, err := New(Config{Issuer: issuer, TLSKey: genKey(t), AccountKey: genKey(t), JWKS: []jwk.Key{j}, SelfSigned: selfSigned})
	if err != nil {
		t.Fatal(err)
	}
	return o, j
}

// serve runs a Server for o on loopback and returns its address.
func serve(t testing.TB, o *Origin, srv *Server) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if o != nil {
		srv.Set(o)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Shutdown(t.Context()); l.Close() })
	return l.Addr().String()
}

func clientFor(o *Origin, addr string) *http.Client {
	roots := x509.NewCertPool()
	st := o.State()
	leaf, _ := x509.ParseCertificate(st.Chain[0])
	roots.AddCert(leaf)
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: o.Host()},
		DialContext: func(ctx2 context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx2, "tcp", addr)
		},
	}}
}

func TestServesDiscoveryAndJWKSOnly(t *testing.T) {
	o, j := newOrigin(t, "https://issuer.example.com", true)
	addr := serve(t, o, &Server{})
	c := clientFor(o, addr)
	for _, tc := range []struct {
		path   string
		status int
		want   string
	}{
		{httpapi.PathDiscovery, 200, `"jwks_uri":"https://issuer.example.com/.well-known/jwks.json"`},
		{httpapi.PathJWKS, 200, j.Kid},
		{"/v1/session", 404, ""},
		{"/.well-known/agentkeys-manifest.json", 404, ""},
	} {
		resp, err := c.Get("https://issuer.example.com" + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if resp.StatusCode != tc.status || !strings.Contains(string(b), tc.want) {
			t.Errorf("GET %s = %d %s, want %d with %q", tc.path, resp.StatusCode, b, tc.status, tc.want)
		}
	}
	var set jwk.Set
	resp, err := c.Get("https://issuer.example.com" + httpapi.PathJWKS)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil || len(set.Keys) != 1 || set.Keys[0].Kid != j.Kid {
		t.Fatalf("jwks = %+v, %v", set, err)
	}
	if got := resp.TLS.PeerCertificates[0]; mustSPKI(t, got.PublicKey) != o.SPKISHA256() {
		t.Fatal("the served certificate does not carry the origin's key")
	}
}

func mustSPKI(t testing.TB, pub any) string {
	s, err := SPKISHA256(pub)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestNotReadyRefusesHandshakes(t *testing.T) {
	addr := serve(t, nil, &Server{})
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, ServerName: "issuer.example.com"})
	if err == nil {
		c.Close()
		t.Fatal("a handshake succeeded before the origin was set")
	}
}

func TestWrongSNIRefused(t *testing.T) {
	o, _ := newOrigin(t, "https://issuer.example.com", true)
	addr := serve(t, o, &Server{})
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, ServerName: "api.example.com"})
	if err == nil {
		c.Close()
		t.Fatal("the origin answered for another name")
	}
}

// cert issues a leaf for key, named name, valid [nb, na), signed by a throwaway CA.
func cert(t testing.TB, key *ecdsa.PrivateKey, name string, nb, na time.Time) []byte {
	t.Helper()
	ca := genKey(t)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "leaf"}, DNSNames: []string{name},
		NotBefore: nb, NotAfter: na}
	caT := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: nb, NotAfter: na, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caT, &key.PublicKey, ca)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestInstall(t *testing.T) {
	o, _ := newOrigin(t, "https://issuer.example.com", false)
	now := time.Now()
	good := cert(t, o.cfg.TLSKey, "issuer.example.com", now.Add(-time.Hour), now.Add(90*24*time.Hour))
	for _, tc := range []struct {
		name  string
		chain [][]byte
		want  string
	}{
		{"empty", nil, "1 to"},
		{"too many", make([][]byte, protocol.MaxOriginChain+1), "1 to"},
		{"oversize cert", [][]byte{make([]byte, protocol.MaxOriginCert+1)}, "bytes of DER"},
		{"garbage", [][]byte{[]byte("not a certificate")}, "does not parse"},
		{"another key", [][]byte{cert(t, genKey(t), "issuer.example.com", now.Add(-time.Hour), now.Add(time.Hour))}, "does not carry"},
		{"another name", [][]byte{cert(t, o.cfg.TLSKey, "evil.example.com", now.Add(-time.Hour), now.Add(time.Hour))}, "not for issuer.example.com"},
		{"expired", [][]byte{cert(t, o.cfg.TLSKey, "issuer.example.com", now.Add(-2*time.Hour), now.Add(-time.Hour))}, "expired"},
	} {
		if _, err := o.Install(tc.chain); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Install = %v, want an error with %q", tc.name, err, tc.want)
		}
	}
	if st := o.State(); len(st.Chain) != 0 {
		t.Fatal("a refused chain was installed")
	}
	r, err := o.Install([][]byte{good})
	if err != nil || !r.Installed || r.NotAfter != o.State().NotAfter {
		t.Fatalf("Install(good) = %+v, %v", r, err)
	}
	older := cert(t, o.cfg.TLSKey, "issuer.example.com", now.Add(-time.Hour), now.Add(30*24*time.Hour))
	if r, err := o.Install([][]byte{older}); err != nil || r.Installed {
		t.Fatalf("an older chain replaced the current one: %+v, %v", r, err)
	}
}

// FuzzInstall: any chain the host hands over (origin_install) is refused
// unless it carries the origin's key; nothing panics.
func FuzzInstall(f *testing.F) {
	o, _ := newOrigin(f, "https://issuer.example.com", false)
	now := time.Now()
	f.Add(cert(f, o.cfg.TLSKey, "issuer.example.com", now.Add(-time.Hour), now.Add(time.Hour)), []byte(nil))
	f.Add([]byte("not a certificate"), []byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, leaf, next []byte) {
		chain := [][]byte{leaf}
		if next != nil {
			chain = append(chain, next)
		}
		r, err := o.Install(chain)
		if err != nil || !r.Installed {
			return
		}
		got, perr := x509.ParseCertificate(leaf)
		if perr != nil || mustSPKI(t, got.PublicKey) != o.SPKISHA256() {
			t.Fatalf("installed a chain whose leaf does not carry the origin's key")
		}
	})
}
