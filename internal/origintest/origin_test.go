package origintest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/golang-jwt/jwt/v5"

	"github.com/agentkeys/broker/attest"
	"github.com/agentkeys/broker/enclave/attester"
	"github.com/agentkeys/broker/enclave/egress"
	"github.com/agentkeys/broker/enclave/keys"
	"github.com/agentkeys/broker/enclave/origin"
	"github.com/agentkeys/broker/enclave/service"
	"github.com/agentkeys/broker/host/relay"
	"github.com/agentkeys/broker/internal/pebbletest"
	"github.com/agentkeys/broker/internal/stsserver"
	"github.com/agentkeys/broker/shared/httpapi"
	"github.com/agentkeys/broker/shared/jwk"
	"github.com/agentkeys/broker/shared/manifest"
	"github.com/agentkeys/broker/shared/policy"
	"github.com/agentkeys/broker/shared/protocol"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pebbletest.Cleanup()
	os.Exit(code)
}

const roleARN = "arn:aws:iam::123456789012:role/agentkeys-data-role"

var testSeed = []byte("0123456789abcdef0123456789abcdef")

type broker struct {
	issuer   string
	svc      *service.Service
	manifest manifest.Manifest
	pebble   *pebbletest.Pebble
	relayAt  string  // the relay's address (the public :443)
	injected jwk.Key // the key the compromised host publishes on the API origin
	hostKey  *ecdsa.PrivateKey
	apiRoots *x509.CertPool // trusts the host's API certificate (for 127.0.0.1)
}

// start runs, in one process: Pebble; the enclave service with issuer_origin
// enclave, its origin served on a unix socket (the enclave transport); the
// host's relay on the public port, routing SNI "localhost" (the issuer) to
// the enclave and everything else to a compromised host's API, which serves a
// JWKS with a key of its own at every path.
func start(t *testing.T) *broker {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(pebbletest.LocalhostAddr(t), "0"))
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	p := pebbletest.Start(t, pebbletest.Options{HTTPPort: freePort(t), TLSPort: port})
	b := &broker{issuer: "https://localhost:" + strconv.Itoa(port), pebble: p, relayAt: ln.Addr().String()}

	pol := policy.Default(b.issuer)
	pol.APIURL = "https://127.0.0.1:" + strconv.Itoa(port)
	pol.AllowHostAssertedWallet = true
	if err := pol.Normalize(); err != nil {
		t.Fatal(err)
	}
	att, err := attester.NewSimulated(attester.SimulatedOptions{StateDir: t.TempDir(), AppData: []byte("policy")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { att.Close() })
	b.svc, err = service.New(service.Config{Policy: pol, Seed: testSeed, Attester: att, IssuerOrigin: manifest.OriginEnclave,
		OriginACME: &origin.ACME{Directory: p.DirectoryURL, Dialer: egress.Direct{}, RootCAs: p.ServerRoots}})
	if err != nil {
		t.Fatal(err)
	}
	// An empty audit log: the enclave mints once the host has presented it.
	if _, err := b.svc.AuditResume(protocol.AuditResumeRequest{}); err != nil {
		t.Fatal(err)
	}
	if b.manifest, err = manifest.Parse(b.svc.Info().Manifest); err != nil {
		t.Fatal(err)
	}

	// The enclave's origin listener, on the enclave transport.
	originAddr := "unix:" + filepath.Join(t.TempDir(), "origin.sock")
	ol, err := protocol.Listen(originAddr)
	if err != nil {
		t.Fatal(err)
	}
	osrv := &origin.Server{}
	osrv.Set(b.svc.Origin())
	go osrv.Serve(ol)
	t.Cleanup(func() { osrv.Shutdown(context.Background()) })

	// The host: the relay, and behind it the compromised API.
	r, err := relay.New(relay.Config{IssuerHost: "localhost",
		DialEnclave: func(ctx context.Context) (net.Conn, error) { return protocol.Dial(ctx, originAddr) }})
	if err != nil {
		t.Fatal(err)
	}
	go r.Serve(ln)
	t.Cleanup(func() { r.Close() })
	b.hostKey, b.injected, b.apiRoots = evilAPI(t, r.API(), b.svc.Info().IssuerKeys)
	return b
}

// evilAPI serves, on l, a host that adds its own key to the JWKS and serves
// it at every path of the API origin.
func evilAPI(t *testing.T, l net.Listener, real []jwk.Key) (*ecdsa.PrivateKey, jwk.Key, *x509.CertPool) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	j, err := jwk.FromP256(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(jwk.Set{Keys: append(append([]jwk.Key(nil), real...), j)})
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "evil host"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	srv := &http.Server{ReadHeaderTimeout: 30 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	})}
	go srv.Serve(tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: k}}}))
	t.Cleanup(func() { srv.Close() })
	return k, j, roots
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// issuerClient trusts Pebble's issuing root only, as a relying party trusts
// the public CAs.
func (b *broker) issuerClient(t *testing.T) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: b.pebble.IssuerRoots(t)}}}
}

func TestIssuerOriginThroughRelay(t *testing.T) {
	b := start(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	// Before a certificate there is nothing a relying party trusts.
	if _, err := b.issuerClient(t).Get(b.issuer + httpapi.PathJWKS); err == nil {
		t.Fatal("the issuer origin answered before it had a certificate")
	}

	// Pebble validates TLS-ALPN-01 on the relay's port: the relay carries
	// the validation connection to the enclave, which answers it.
	if err := b.svc.Origin().Obtain(ctx); err != nil {
		t.Fatal(err)
	}
	st := b.svc.Origin().State()
	if len(st.Chain) == 0 || st.ACMEAccountURI == "" || st.TLSSPKISHA256 != b.manifest.IssuerOriginTLSSPKISHA256 {
		t.Fatalf("origin_state after Obtain: %+v", st)
	}

	// A TLS client at the issuer URL sees the enclave's certificate, with
	// the key the manifest names, issued by the CA.
	resp, err := b.issuerClient(t).Get(b.issuer + httpapi.PathJWKS)
	if err != nil {
		t.Fatal(err)
	}
	var set jwk.Set
	err = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&set)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if spki, _ := origin.SPKISHA256(resp.TLS.PeerCertificates[0].PublicKey); spki != b.manifest.IssuerOriginTLSSPKISHA256 {
		t.Fatalf("the issuer URL's certificate key %s is not the manifest's %s", spki, b.manifest.IssuerOriginTLSSPKISHA256)
	}
	if kids := b.manifest.Kids(); len(set.Keys) != len(kids) || kids[set.Keys[0].Kid].Kid == "" {
		t.Fatalf("the issuer origin's JWKS %+v is not the manifest's keys", set)
	}
	// The auditor's check agrees.
	if c := attest.CheckIssuerTLSKey(&b.manifest, resp.TLS.PeerCertificates[0]); c.Status != attest.StatusPass {
		t.Fatalf("agentkeys-attest's issuer tls key check: %+v", c)
	}

	// The compromised host serves its key on the API origin — and that
	// changes nothing at the issuer origin.
	api := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: b.apiRoots}}}
	resp, err = api.Get(strings.Replace(b.issuer, "localhost", "127.0.0.1", 1) + httpapi.PathJWKS)
	if err != nil {
		t.Fatal(err)
	}
	evil, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if !strings.Contains(string(evil), b.injected.Kid) {
		t.Fatal("test setup: the API origin does not serve the injected key")
	}
	for _, k := range set.Keys {
		if k.Kid == b.injected.Kid {
			t.Fatal("the host's injected key appears at the issuer origin")
		}
	}
	// Had the host answered for the issuer itself, the auditor's check
	// would have caught its certificate.
	if c := attest.CheckIssuerTLSKey(&b.manifest, resp.TLS.PeerCertificates[0]); c.Status != attest.StatusFail {
		t.Fatalf("the host's certificate passed the issuer tls key check: %+v", c)
	}

	// go-oidc discovers the issuer through the relay and verifies a JWT the
	// enclave signed.
	mint, err := b.svc.MintOIDC(protocol.MintOIDCRequest{HostAssertedWallet: "0x" + strings.Repeat("ab", 20)})
	if err != nil {
		t.Fatal(err)
	}
	octx := oidc.ClientContext(ctx, b.issuerClient(t))
	provider, err := oidc.NewProvider(octx, b.issuer)
	if err != nil {
		t.Fatal(err)
	}
	verifier := provider.Verifier(&oidc.Config{ClientID: stsserver.DefaultAudience})
	if _, err := verifier.Verify(octx, mint.JWT); err != nil {
		t.Fatalf("go-oidc refused the enclave's JWT: %v", err)
	}
	forged := b.forge(t, mint)
	if _, err := verifier.Verify(octx, forged); err == nil {
		t.Fatal("go-oidc accepted a JWT signed with the host's injected key")
	}

	// The STS emulator fetches discovery and JWKS live from the issuer URL;
	// the real SDK client calls it.
	srv := stsserver.New(stsserver.Options{Roles: []stsserver.Role{{ARN: roleARN, ProviderIssuer: b.issuer}},
		HTTPClient: b.issuerClient(t)})
	endpoint := srv.Start(t)
	client := sts.New(sts.Options{BaseEndpoint: &endpoint, Region: "us-east-1", Credentials: aws.AnonymousCredentials{}, RetryMaxAttempts: 1})
	out, err := client.AssumeRoleWithWebIdentity(ctx, &sts.AssumeRoleWithWebIdentityInput{
		RoleArn: aws.String(roleARN), RoleSessionName: aws.String("origin-test"), WebIdentityToken: aws.String(mint.JWT)})
	if err != nil || out.Credentials == nil {
		t.Fatalf("STS refused the enclave's JWT: %v", err)
	}
	_, err = client.AssumeRoleWithWebIdentity(ctx, &sts.AssumeRoleWithWebIdentityInput{
		RoleArn: aws.String(roleARN), RoleSessionName: aws.String("origin-test"), WebIdentityToken: aws.String(forged)})
	if err == nil || !strings.Contains(err.Error(), "InvalidIdentityToken") {
		t.Fatalf("STS on a JWT signed with the host's injected key: %v, want InvalidIdentityToken", err)
	}
}

// forge signs, with the host's injected key, the claims of a real JWT.
func (b *broker) forge(t *testing.T, m protocol.MintOIDCResponse) string {
	t.Helper()
	var claims jwt.MapClaims
	if _, _, err := jwt.NewParser().ParseUnverified(m.JWT, &claims); err != nil {
		t.Fatal(err)
	}
	claims["sub"] = "0x" + strings.Repeat("cd", 20)
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	tok.Header["kid"] = b.injected.Kid
	s, err := tok.SignedString(b.hostKey)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestRestartedEnclaveServesTheStoredChain: the chain is public; a new
// enclave of the same seed, handed the stored chain (origin_install), serves
// it at once, and refuses a chain for another key.
func TestRestartedEnclaveServesTheStoredChain(t *testing.T) {
	b := start(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if err := b.svc.Origin().Obtain(ctx); err != nil {
		t.Fatal(err)
	}
	chain := b.svc.Origin().State().Chain

	att, err := attester.NewSimulated(attester.SimulatedOptions{StateDir: t.TempDir(), AppData: []byte("policy")})
	if err != nil {
		t.Fatal(err)
	}
	defer att.Close()
	pol := b.svc.Info().Policy
	again, err := service.New(service.Config{Policy: pol, Seed: testSeed, Attester: att, IssuerOrigin: manifest.OriginEnclave})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := protocol.Marshal(protocol.OriginInstallRequest{Chain: chain})
	res, err := again.Handle(ctx, protocol.OpOriginInstall, body)
	if err != nil || !res.(protocol.OriginInstallResponse).Installed {
		t.Fatalf("origin_install of the stored chain: %+v, %v", res, err)
	}

	other, err := service.New(service.Config{Policy: pol, Seed: []byte("another seed, another tls key..."), Attester: att, IssuerOrigin: manifest.OriginEnclave})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Handle(ctx, protocol.OpOriginInstall, body); !errors.Is(err, protocol.ErrBadRequest) {
		t.Fatalf("an enclave of another seed installed the chain: %v", err)
	}
}

// call is an enclaveclient-style Call straight into a service, through the
// protocol's encoding.
func call(svc *service.Service) func(ctx context.Context, op protocol.Op, req, resp any) error {
	return func(ctx context.Context, op protocol.Op, req, resp any) error {
		body, err := protocol.Marshal(req)
		if err != nil {
			return err
		}
		out, err := svc.Handle(ctx, op, body)
		if err != nil {
			return err
		}
		b, err := protocol.Marshal(out)
		if err != nil {
			return err
		}
		return protocol.Unmarshal(b, resp)
	}
}

// TestKeeperStoresAndReinstalls: the host's Keeper stores the chain the
// enclave obtained, and hands it to a restarted enclave that has none.
func TestKeeperStoresAndReinstalls(t *testing.T) {
	b := start(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	path := filepath.Join(t.TempDir(), relay.ChainFile)
	k := &relay.Keeper{Path: path, Call: call(b.svc)}
	if err := k.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a chain was stored before the enclave had one: %v", err)
	}
	if err := b.svc.Origin().Obtain(ctx); err != nil {
		t.Fatal(err)
	}
	if err := k.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("stored chain: %v, %v", fi, err)
	}

	att, err := attester.NewSimulated(attester.SimulatedOptions{StateDir: t.TempDir(), AppData: []byte("policy")})
	if err != nil {
		t.Fatal(err)
	}
	defer att.Close()
	restarted, err := service.New(service.Config{Policy: b.svc.Info().Policy, Seed: testSeed, Attester: att, IssuerOrigin: manifest.OriginEnclave})
	if err != nil {
		t.Fatal(err)
	}
	if len(restarted.Origin().State().Chain) != 0 {
		t.Fatal("test setup: the restarted enclave already has a chain")
	}
	k2 := &relay.Keeper{Path: path, Call: call(restarted)}
	if err := k2.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := restarted.Origin().State().Chain, b.svc.Origin().State().Chain; len(got) == 0 || string(got[0]) != string(want[0]) {
		t.Fatal("the restarted enclave did not get the stored chain")
	}
}

// TestIssuerOriginHostWarns: an enclave started with issuer_origin host says
// so in its attested manifest, and verify warns.
func TestIssuerOriginHostWarns(t *testing.T) {
	att, err := attester.NewSimulated(attester.SimulatedOptions{StateDir: t.TempDir(), AppData: []byte("policy")})
	if err != nil {
		t.Fatal(err)
	}
	defer att.Close()
	svc, err := service.New(service.Config{Policy: policy.Default("https://broker.example.com"), Seed: testSeed, Attester: att, IssuerOrigin: manifest.OriginHost})
	if err != nil {
		t.Fatal(err)
	}
	nonce := []byte("0123456789abcdef")
	a, err := svc.Attest(protocol.AttestRequest{Nonce: nonce})
	if err != nil {
		t.Fatal(err)
	}
	d, r := attest.VerifyDocument(a.Document, attest.DocumentOptions{Roots: att.RootPool(), Nonce: nonce, MaxAge: time.Minute, MaxSkew: time.Minute})
	if !r.OK() {
		t.Fatalf("document: %+v", r)
	}
	m, r := attest.VerifyManifest(d, a.Manifest)
	if m == nil || m.IssuerOrigin != manifest.OriginHost {
		t.Fatalf("manifest: %+v", r)
	}
	if c := r.Find("issuer origin"); c == nil || c.Status != attest.StatusWarn {
		t.Fatalf("verify did not warn on issuer_origin host: %+v", r)
	}
	if c := attest.CheckIssuerTLSKey(m, nil); c.Status != attest.StatusSkip {
		t.Fatalf("issuer tls key with issuer_origin host: %+v", c)
	}
}

// TestRenewsAtTwoThirds: an origin whose certificate is two thirds through its
// life obtains a new one from the CA by itself (Run), through the relay.
func TestRenewsAtTwoThirds(t *testing.T) {
	b := start(t)
	o := b.svc.Origin()
	// A chain for the origin's key, 2 h into a 3 h life, from a throwaway
	// CA: what a host could hand back after a long outage.
	ca, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	caT := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "old CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: now.Add(-2 * time.Hour), NotAfter: now.Add(time.Hour)}
	leafT := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"},
		NotBefore: now.Add(-2 * time.Hour), NotAfter: now.Add(time.Hour)}
	// The test knows the seed, so it derives the origin's key as the
	// enclave does.
	tlsKey, err := keys.P256(testSeed, origin.LabelTLS)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, leafT, caT, &tlsKey.PublicKey, ca)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := o.Install([][]byte{der}); err != nil || !r.Installed {
		t.Fatalf("install the old chain: %+v, %v", r, err)
	}
	renewed := o.Installed()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go o.Run(ctx)
	select {
	case <-renewed:
	case <-time.After(90 * time.Second):
		t.Fatalf("no renewal; origin state %+v", o.State())
	}
	leaf, err := x509.ParseCertificate(o.State().Chain[0])
	if err != nil || leaf.Issuer.CommonName == "old CA" || !leaf.NotAfter.After(now.Add(time.Hour)) {
		t.Fatalf("after renewal the leaf is from %q until %s", leaf.Issuer.CommonName, leaf.NotAfter)
	}
}
