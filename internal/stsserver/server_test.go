package stsserver

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/aws-sdk-go-v2/service/sts/types"
	"github.com/aws/smithy-go"
	"github.com/golang-jwt/jwt/v5"

	"github.com/agentkeys/broker/shared/claims"
)

const (
	dataRoleARN  = "arn:aws:iam::123456789012:role/agentkeys-data-role"
	assumeARN    = "arn:aws:iam::123456789012:role/service/agentkeys-assume-role"
	chainRoleARN = "arn:aws:iam::123456789012:role/agentkeys-chained"
	longRoleARN  = "arn:aws:iam::123456789012:role/agentkeys-long"
	deadRoleARN  = "arn:aws:iam::123456789012:role/agentkeys-dead-issuer"
	brokerKeyID  = "AKIAIOSFODNN7EXAMPLE"
	brokerSecret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	brokerARN    = "arn:aws:iam::123456789012:user/agentkeys-host"
	otherKeyID   = "AKIAOTHERKEYEXAMPLE0"
	otherSecret  = "otherSecretotherSecretotherSecretotherSe"
	wallet       = "0x52908400098527886e0f7030069857d2e4169ee7"
	walletTag    = claims.WalletTag
)

// testIssuer is a tiny OIDC issuer: discovery, JWKS and ES256 minting.
type testIssuer struct {
	srv *httptest.Server
	url string
	key *ecdsa.PrivateKey
	kid string
	// jwksStatus, if not 0, is answered for the JWKS instead of the keys.
	jwksStatus atomic.Int32
}

func newIssuer(t *testing.T) *testIssuer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	iss := &testIssuer{key: key, kid: "test-kid-1"}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{
			"issuer":                                iss.url,
			"jwks_uri":                              iss.url + "/.well-known/jwks.json",
			"id_token_signing_alg_values_supported": []string{"ES256"},
		})
	})
	mux.HandleFunc("GET /.well-known/jwks.json", func(w http.ResponseWriter, r *http.Request) {
		if s := iss.jwksStatus.Load(); s != 0 {
			http.Error(w, "unavailable", int(s))
			return
		}
		raw, _ := key.PublicKey.Bytes()
		b64 := base64.RawURLEncoding
		json.NewEncoder(w).Encode(map[string]any{"keys": []map[string]string{{
			"kty": "EC", "crv": "P-256", "x": b64.EncodeToString(raw[1:33]), "y": b64.EncodeToString(raw[33:]),
			"kid": iss.kid, "alg": "ES256", "use": "sig",
		}}})
	})
	iss.srv = httptest.NewTLSServer(mux)
	t.Cleanup(iss.srv.Close)
	iss.url = iss.srv.URL
	return iss
}

// claims are the claims the broker mints (shared/claims), as a map that a
// test may change.
func (iss *testIssuer) claims() jwt.MapClaims {
	now := time.Now()
	b, err := json.Marshal(claims.OIDC{
		Issuer: iss.url, Subject: claims.SubjectPrefix + wallet, Audience: "sts.amazonaws.com",
		IssuedAt: now.Unix(), NotBefore: now.Unix(), ExpiresAt: now.Add(5 * time.Minute).Unix(), ID: "42",
		Wallet: wallet, Tags: claims.MintTags(wallet, "42"),
	})
	if err != nil {
		panic(err)
	}
	var c jwt.MapClaims
	if err := json.Unmarshal(b, &c); err != nil {
		panic(err)
	}
	return c
}

func (iss *testIssuer) mint(t *testing.T, mutate func(jwt.MapClaims)) string {
	t.Helper()
	c := iss.claims()
	if mutate != nil {
		mutate(c)
	}
	return signES256(t, iss.key, iss.kid, c)
}

func signES256(t *testing.T, key *ecdsa.PrivateKey, kid string, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, c)
	tok.Header["kid"] = kid
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

type fixture struct {
	iss      *testIssuer
	deadURL  string // a registered issuer nobody listens on
	srv      *Server
	endpoint string
	clock    *clock
}

// clock is a settable clock, real time plus an offset.
type clock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	iss := newIssuer(t)
	clk := &clock{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "https://" + l.Addr().String()
	l.Close()
	srv := New(Options{
		Roles: []Role{
			{ARN: deadRoleARN, ProviderIssuer: deadURL},
			{ARN: dataRoleARN, ProviderIssuer: iss.url, Audience: "sts.amazonaws.com", RequireTag: walletTag},
			{ARN: assumeARN, RequireTag: walletTag, TrustedPrincipals: []string{brokerARN}},
			{ARN: chainRoleARN, TrustedPrincipals: []string{dataRoleARN}},
			{ARN: longRoleARN, ProviderIssuer: iss.url, MaxSessionDuration: 12 * time.Hour},
		},
		AccessKeys: []AccessKey{
			{ID: brokerKeyID, Secret: brokerSecret, ARN: brokerARN},
			{ID: otherKeyID, Secret: otherSecret},
		},
		HTTPClient: iss.srv.Client(),
		Now:        clk.now,
	})
	return &fixture{iss: iss, deadURL: deadURL, srv: srv, endpoint: srv.Start(t), clock: clk}
}

// client is the real SDK client pointed at the server; retries 1 means no retry.
func (f *fixture) client(creds aws.CredentialsProvider, retries int) *sts.Client {
	return sts.New(sts.Options{BaseEndpoint: aws.String(f.endpoint), Region: "us-east-1", Credentials: creds, RetryMaxAttempts: retries})
}

func (f *fixture) anonymous() *sts.Client { return f.client(aws.AnonymousCredentials{}, 1) }

func (f *fixture) signed(id, secret, token string) *sts.Client {
	return f.client(credentials.NewStaticCredentialsProvider(id, secret, token), 1)
}

func webIdentityInput(token string) *sts.AssumeRoleWithWebIdentityInput {
	return &sts.AssumeRoleWithWebIdentityInput{
		RoleArn: aws.String(dataRoleARN), RoleSessionName: aws.String("agentkeys-" + wallet[2:12]), WebIdentityToken: aws.String(token),
	}
}

// wantAPIError checks that err is the STS error code with its HTTP status, as
// the SDK surfaces it.
func wantAPIError(t *testing.T, err error, code string) smithy.APIError {
	t.Helper()
	if err == nil {
		t.Fatalf("succeeded; want %s", code)
	}
	apiErr, ok := errors.AsType[smithy.APIError](err)
	if !ok {
		t.Fatalf("error %v is not a smithy.APIError", err)
	}
	if apiErr.ErrorCode() != code {
		t.Fatalf("error code %q (%v); want %q", apiErr.ErrorCode(), err, code)
	}
	respErr, ok := errors.AsType[*awshttp.ResponseError](err)
	if !ok {
		t.Fatalf("error %v carries no HTTP response", err)
	}
	if got, want := respErr.HTTPStatusCode(), StatusFor(code); got != want {
		t.Errorf("%s: HTTP status %d; want %d", code, got, want)
	}
	if respErr.RequestID == "" {
		t.Errorf("%s: no request ID", code)
	}
	return apiErr
}

func TestAssumeRoleWithWebIdentity(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	in := webIdentityInput(f.iss.mint(t, nil))
	in.DurationSeconds = aws.Int32(1800)
	out, err := f.anonymous().AssumeRoleWithWebIdentity(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	cr := out.Credentials
	if !strings.HasPrefix(*cr.AccessKeyId, "ASIA") || len(*cr.AccessKeyId) != 20 || len(*cr.SecretAccessKey) != 40 || *cr.SessionToken == "" {
		t.Errorf("credentials %q/%q/%q do not look like STS ones", *cr.AccessKeyId, *cr.SecretAccessKey, *cr.SessionToken)
	}
	if d := time.Until(*cr.Expiration); d < 29*time.Minute || d > 30*time.Minute {
		t.Errorf("expiration in %v; want 30m", d)
	}
	session := *in.RoleSessionName
	if got, want := *out.AssumedRoleUser.Arn, "arn:aws:sts::123456789012:assumed-role/agentkeys-data-role/"+session; got != want {
		t.Errorf("assumed role ARN %q; want %q", got, want)
	}
	if id := *out.AssumedRoleUser.AssumedRoleId; !strings.HasPrefix(id, "AROA") || !strings.HasSuffix(id, ":"+session) {
		t.Errorf("assumed role ID %q", id)
	}
	if got, want := *out.SubjectFromWebIdentityToken, claims.SubjectPrefix+wallet; got != want {
		t.Errorf("subject %q; want %q", got, want)
	}
	if *out.Audience != "sts.amazonaws.com" {
		t.Errorf("audience %q", *out.Audience)
	}
	if got, want := *out.Provider, "arn:aws:iam::123456789012:oidc-provider/"+strings.TrimPrefix(f.iss.url, "https://"); got != want {
		t.Errorf("provider %q; want %q", got, want)
	}
	if out.SourceIdentity != nil {
		t.Errorf("source identity %q; want none", *out.SourceIdentity)
	}

	issued, ok := f.srv.Issued(*cr.AccessKeyId)
	if !ok {
		t.Fatal("the issued credentials are unknown to Issued")
	}
	// Both tags of a minted JWT, the wallet and the log index, are session
	// tags, and both are transitive.
	if issued.PrincipalTags[walletTag] != wallet || issued.PrincipalTags[claims.LogIndexTag] != "42" ||
		len(issued.TransitiveTagKeys) != 2 || issued.TransitiveTagKeys[0] != walletTag || issued.TransitiveTagKeys[1] != claims.LogIndexTag {
		t.Errorf("issued tags %v, transitive %v", issued.PrincipalTags, issued.TransitiveTagKeys)
	}
	if issued.SecretAccessKey != *cr.SecretAccessKey || !issued.Expiration.Equal(*cr.Expiration) || issued.Subject != *out.SubjectFromWebIdentityToken {
		t.Errorf("issued %+v does not match the response", issued)
	}

	calls := f.srv.Calls()
	if len(calls) != 1 {
		t.Fatalf("%d calls; want 1", len(calls))
	}
	c := calls[0]
	if c.Action != "AssumeRoleWithWebIdentity" || c.RoleARN != dataRoleARN || c.RoleSessionName != session ||
		c.DurationSeconds != 1800 || c.Subject != claims.SubjectPrefix+wallet || c.SessionTags[walletTag] != wallet ||
		c.AccessKeyID != *cr.AccessKeyId || c.ErrorCode != "" || c.Claims["jti"] != "42" {
		t.Errorf("call %+v", c)
	}

	// The credentials work: GetCallerIdentity signed with them names the session.
	id, err := f.signed(*cr.AccessKeyId, *cr.SecretAccessKey, *cr.SessionToken).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		t.Fatal(err)
	}
	if *id.Arn != *out.AssumedRoleUser.Arn || *id.UserId != *out.AssumedRoleUser.AssumedRoleId || *id.Account != "123456789012" {
		t.Errorf("caller identity %q %q %q", *id.Arn, *id.UserId, *id.Account)
	}
}

func TestAssumeRoleWithWebIdentityDefaultsAndSourceIdentity(t *testing.T) {
	f := newFixture(t)
	tok := f.iss.mint(t, func(c jwt.MapClaims) { c[sourceIdentityClaim] = "agent-" + wallet[2:10] })
	in := webIdentityInput(tok)
	in.RoleArn = aws.String(longRoleARN)
	in.DurationSeconds = aws.Int32(43200)
	out, err := f.anonymous().AssumeRoleWithWebIdentity(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(*out.Credentials.Expiration); d < 12*time.Hour-time.Minute {
		t.Errorf("expiration in %v; want 12h", d)
	}
	if out.SourceIdentity == nil || *out.SourceIdentity != "agent-"+wallet[2:10] {
		t.Errorf("source identity %v", out.SourceIdentity)
	}

	// No DurationSeconds: one hour.
	out, err = f.anonymous().AssumeRoleWithWebIdentity(context.Background(), webIdentityInput(f.iss.mint(t, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(*out.Credentials.Expiration); d < 59*time.Minute || d > time.Hour {
		t.Errorf("expiration in %v; want the 1h default", d)
	}
}

func TestAssumeRoleWithWebIdentityRefusals(t *testing.T) {
	f := newFixture(t)
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	hs256, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, f.iss.claims()).SignedString([]byte("secret"))
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, f.iss.claims()).SignedString(jwt.UnsafeAllowNoneSignatureType)
	rs256 := func() string {
		tok := jwt.NewWithClaims(jwt.SigningMethodRS256, f.iss.claims())
		tok.Header["kid"] = f.iss.kid
		s, _ := tok.SignedString(rsaKey)
		return s
	}()

	tests := []struct {
		name  string
		token func() string
		input func(*sts.AssumeRoleWithWebIdentityInput)
		setup func(t *testing.T) // run before, undone by t.Cleanup
		code  string
		msg   string // substring of the message, if set
	}{
		{name: "iss with a trailing slash", token: func() string {
			return f.iss.mint(t, func(c jwt.MapClaims) { c["iss"] = f.iss.url + "/" })
		}, code: "InvalidIdentityToken", msg: "No OpenIDConnect provider found in your account for " + f.iss.url + "/"},
		{name: "iss of another host", token: func() string {
			return f.iss.mint(t, func(c jwt.MapClaims) { c["iss"] = "https://accounts.example.com" })
		}, code: "InvalidIdentityToken", msg: "No OpenIDConnect provider found"},
		{name: "wrong aud", token: func() string {
			return f.iss.mint(t, func(c jwt.MapClaims) { c["aud"] = "sts.amazonaws.com.evil" })
		}, code: "InvalidIdentityToken", msg: "Incorrect token audience"},
		{name: "aud array without the audience", token: func() string {
			return f.iss.mint(t, func(c jwt.MapClaims) { c["aud"] = []string{"a", "b"} })
		}, code: "InvalidIdentityToken", msg: "Incorrect token audience"},
		{name: "no tags claim", token: func() string {
			return f.iss.mint(t, func(c jwt.MapClaims) { delete(c, tagsClaim) })
		}, code: "AccessDenied", msg: "Not authorized to perform sts:AssumeRoleWithWebIdentity"},
		{name: "tags claim without the required tag", token: func() string {
			return f.iss.mint(t, func(c jwt.MapClaims) {
				c[tagsClaim] = map[string]any{"principal_tags": map[string][]string{"other": {"x"}}}
			})
		}, code: "AccessDenied"},
		{name: "tag with two values", token: func() string {
			return f.iss.mint(t, func(c jwt.MapClaims) {
				c[tagsClaim] = map[string]any{"principal_tags": map[string][]string{walletTag: {wallet, wallet}}}
			})
		}, code: "InvalidIdentityToken"},
		{name: "transitive key that is not a tag", token: func() string {
			return f.iss.mint(t, func(c jwt.MapClaims) {
				c[tagsClaim] = map[string]any{"principal_tags": map[string][]string{walletTag: {wallet}}, "transitive_tag_keys": []string{"nope"}}
			})
		}, code: "InvalidIdentityToken"},
		{name: "expired", token: func() string {
			return f.iss.mint(t, func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Second).Unix() })
		}, code: "ExpiredTokenException", msg: "Token expired: current date/time "},
		{name: "no exp", token: func() string {
			return f.iss.mint(t, func(c jwt.MapClaims) { delete(c, "exp") })
		}, code: "InvalidIdentityToken"},
		{name: "nbf in the future", token: func() string {
			return f.iss.mint(t, func(c jwt.MapClaims) { c["nbf"] = time.Now().Add(time.Hour).Unix() })
		}, code: "InvalidIdentityToken"},
		{name: "no sub", token: func() string {
			return f.iss.mint(t, func(c jwt.MapClaims) { delete(c, "sub") })
		}, code: "InvalidIdentityToken"},
		{name: "bad signature", token: func() string {
			return signES256(t, otherKey, f.iss.kid, f.iss.claims())
		}, code: "InvalidIdentityToken"},
		{name: "tampered payload", token: func() string {
			parts := strings.Split(f.iss.mint(t, nil), ".")
			other := strings.Split(f.iss.mint(t, func(c jwt.MapClaims) { c["sub"] = claims.SubjectPrefix + "0x0000000000000000000000000000000000000000" }), ".")
			return parts[0] + "." + other[1] + "." + parts[2]
		}, code: "InvalidIdentityToken"},
		{name: "unknown kid", token: func() string {
			return signES256(t, f.iss.key, "rotated-away", f.iss.claims())
		}, code: "InvalidIdentityToken", msg: "Couldn't retrieve verification key from your identity provider,  please reference"},
		{name: "RS256 with an EC JWKS", token: func() string { return rs256 }, code: "InvalidIdentityToken"},
		{name: "HS256", token: func() string { return hs256 }, code: "InvalidIdentityToken", msg: "not a valid JWT"},
		{name: "alg none", token: func() string { return none }, code: "InvalidIdentityToken", msg: "not a valid JWT"},
		{name: "not a JWT", token: func() string { return "an-opaque-access-token" }, code: "InvalidIdentityToken", msg: "not a valid JWT"},
		{name: "JWKS answers 500", token: func() string { return f.iss.mint(t, nil) }, setup: func(t *testing.T) {
			f.iss.jwksStatus.Store(500)
			t.Cleanup(func() { f.iss.jwksStatus.Store(0) })
		}, code: "InvalidIdentityToken", msg: "Couldn't retrieve verification key"},
		{name: "issuer unreachable", token: func() string {
			return f.iss.mint(t, func(c jwt.MapClaims) { c["iss"] = f.deadURL })
		}, input: func(in *sts.AssumeRoleWithWebIdentityInput) {
			in.RoleArn = aws.String(deadRoleARN)
		}, code: "IDPCommunicationError"},
		{name: "unknown role", token: func() string { return f.iss.mint(t, nil) }, input: func(in *sts.AssumeRoleWithWebIdentityInput) {
			in.RoleArn = aws.String("arn:aws:iam::123456789012:role/nope")
		}, code: "AccessDenied"},
		{name: "role that does not trust web identity", token: func() string { return f.iss.mint(t, nil) }, input: func(in *sts.AssumeRoleWithWebIdentityInput) {
			in.RoleArn = aws.String(assumeARN)
		}, code: "AccessDenied"},
		{name: "DurationSeconds below 900", token: func() string { return f.iss.mint(t, nil) }, input: func(in *sts.AssumeRoleWithWebIdentityInput) {
			in.DurationSeconds = aws.Int32(899)
		}, code: "ValidationError", msg: "1 validation error detected: Value '899' at 'durationSeconds' failed to satisfy constraint: Member must have value greater than or equal to 900"},
		{name: "DurationSeconds above 12h", token: func() string { return f.iss.mint(t, nil) }, input: func(in *sts.AssumeRoleWithWebIdentityInput) {
			in.DurationSeconds = aws.Int32(43201)
		}, code: "ValidationError", msg: "less than or equal to 43200"},
		{name: "DurationSeconds above the role's maximum", token: func() string { return f.iss.mint(t, nil) }, input: func(in *sts.AssumeRoleWithWebIdentityInput) {
			in.DurationSeconds = aws.Int32(3601)
		}, code: "ValidationError", msg: "The requested DurationSeconds exceeds the MaxSessionDuration set for this role."},
		{name: "session name too short", token: func() string { return f.iss.mint(t, nil) }, input: func(in *sts.AssumeRoleWithWebIdentityInput) {
			in.RoleSessionName = aws.String("a")
		}, code: "ValidationError", msg: "at 'roleSessionName' failed to satisfy constraint: Member must have length greater than or equal to 2"},
		{name: "session name too long", token: func() string { return f.iss.mint(t, nil) }, input: func(in *sts.AssumeRoleWithWebIdentityInput) {
			in.RoleSessionName = aws.String(strings.Repeat("a", 65))
		}, code: "ValidationError"},
		{name: "session name with a space", token: func() string { return f.iss.mint(t, nil) }, input: func(in *sts.AssumeRoleWithWebIdentityInput) {
			in.RoleSessionName = aws.String("bad name")
		}, code: "ValidationError", msg: "regular expression pattern"},
		{name: "two validation errors", token: func() string { return f.iss.mint(t, nil) }, input: func(in *sts.AssumeRoleWithWebIdentityInput) {
			in.RoleSessionName = aws.String("a")
			in.DurationSeconds = aws.Int32(1)
		}, code: "ValidationError", msg: "2 validation errors detected: "},
		{name: "token over 20000 characters", token: func() string {
			return f.iss.mint(t, func(c jwt.MapClaims) { c["pad"] = strings.Repeat("x", 20000) })
		}, code: "ValidationError", msg: "webIdentityToken"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.setup != nil {
				tt.setup(t)
			}
			in := webIdentityInput(tt.token())
			if tt.input != nil {
				tt.input(in)
			}
			before := len(f.srv.Calls())
			_, err := f.anonymous().AssumeRoleWithWebIdentity(context.Background(), in)
			apiErr := wantAPIError(t, err, tt.code)
			if !strings.Contains(apiErr.ErrorMessage(), tt.msg) {
				t.Errorf("message %q; want it to contain %q", apiErr.ErrorMessage(), tt.msg)
			}
			calls := f.srv.Calls()
			if len(calls) != before+1 || calls[before].ErrorCode != tt.code || calls[before].Injected || calls[before].AccessKeyID != "" {
				t.Errorf("calls %+v", calls[before:])
			}
		})
	}
}

// The modeled errors surface as the SDK's typed errors.
func TestTypedErrors(t *testing.T) {
	f := newFixture(t)
	_, err := f.anonymous().AssumeRoleWithWebIdentity(context.Background(), webIdentityInput(f.iss.mint(t, func(c jwt.MapClaims) {
		c["exp"] = time.Now().Add(-time.Minute).Unix()
	})))
	if _, ok := errors.AsType[*types.ExpiredTokenException](err); !ok {
		t.Errorf("expired: %T %v; want *types.ExpiredTokenException", err, err)
	}
	_, err = f.anonymous().AssumeRoleWithWebIdentity(context.Background(), webIdentityInput("x.y.z"))
	if _, ok := errors.AsType[*types.InvalidIdentityTokenException](err); !ok {
		t.Errorf("garbage: %T %v; want *types.InvalidIdentityTokenException", err, err)
	}
}

func TestFailNext(t *testing.T) {
	f := newFixture(t)
	codes := []string{
		"AccessDenied", "InvalidIdentityToken", "IDPCommunicationError", "IDPRejectedClaim", "ExpiredTokenException",
		"RegionDisabledException", "MalformedPolicyDocument", "PackedPolicyTooLarge", "Throttling",
		"InternalFailure", "ServiceUnavailable", "InvalidClientTokenId",
	}
	for _, code := range codes {
		t.Run(code, func(t *testing.T) {
			f.srv.FailNext("AssumeRoleWithWebIdentity", code, "injected "+code, 1)
			_, err := f.anonymous().AssumeRoleWithWebIdentity(context.Background(), webIdentityInput(f.iss.mint(t, nil)))
			apiErr := wantAPIError(t, err, code)
			if apiErr.ErrorMessage() != "injected "+code {
				t.Errorf("message %q", apiErr.ErrorMessage())
			}
			wantFault := smithy.FaultClient
			if StatusFor(code) >= 500 {
				wantFault = smithy.FaultServer
			}
			if code == "AccessDenied" || code == "InvalidClientTokenId" || code == "Throttling" ||
				code == "InternalFailure" || code == "ServiceUnavailable" {
				wantFault = smithy.FaultUnknown // unmodeled: a GenericAPIError
			}
			if apiErr.ErrorFault() != wantFault {
				t.Errorf("fault %v; want %v", apiErr.ErrorFault(), wantFault)
			}
			calls := f.srv.Calls()
			if last := calls[len(calls)-1]; !last.Injected || last.ErrorCode != code || last.Subject != claims.SubjectPrefix+wallet {
				t.Errorf("last call %+v", last)
			}
			// Only the next call failed.
			if _, err := f.anonymous().AssumeRoleWithWebIdentity(context.Background(), webIdentityInput(f.iss.mint(t, nil))); err != nil {
				t.Errorf("the call after the injected failure: %v", err)
			}
		})
	}
	if _, ok := errors.AsType[*types.RegionDisabledException](func() error {
		f.srv.FailNext("AssumeRoleWithWebIdentity", "RegionDisabledException", "", 1)
		_, err := f.anonymous().AssumeRoleWithWebIdentity(context.Background(), webIdentityInput(f.iss.mint(t, nil)))
		return err
	}()); !ok {
		t.Error("RegionDisabledException does not surface as *types.RegionDisabledException")
	}
}

func TestFailNextCountsAndWildcard(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	broker := f.signed(brokerKeyID, brokerSecret, "")
	f.srv.FailNext("*", "ServiceUnavailable", "", 2)
	for range 2 {
		_, err := broker.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
		wantAPIError(t, err, "ServiceUnavailable")
	}
	if _, err := broker.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{}); err != nil {
		t.Fatal(err)
	}
	// n = 0 cancels a pending failure.
	f.srv.FailNext("GetCallerIdentity", "AccessDenied", "", 5)
	f.srv.FailNext("GetCallerIdentity", "AccessDenied", "", 0)
	if _, err := broker.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{}); err != nil {
		t.Fatal(err)
	}
}

// The SDK retries IDPCommunicationError, as against AWS.
func TestIDPCommunicationErrorIsRetried(t *testing.T) {
	f := newFixture(t)
	f.srv.FailNext("AssumeRoleWithWebIdentity", "IDPCommunicationError", "", 1)
	_, err := f.client(aws.AnonymousCredentials{}, 3).AssumeRoleWithWebIdentity(context.Background(), webIdentityInput(f.iss.mint(t, nil)))
	if err != nil {
		t.Fatal(err)
	}
	calls := f.srv.Calls()
	if len(calls) != 2 || !calls[0].Injected || calls[1].ErrorCode != "" {
		t.Errorf("calls %+v; want an injected failure then a success", calls)
	}
}

func TestAssumeRole(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	broker := f.signed(brokerKeyID, brokerSecret, "")
	in := &sts.AssumeRoleInput{
		RoleArn: aws.String(assumeARN), RoleSessionName: aws.String("agentkeys-session"), DurationSeconds: aws.Int32(900),
		SourceIdentity: aws.String("agent-1"),
		Tags: []types.Tag{
			{Key: aws.String(walletTag), Value: aws.String(wallet)},
			{Key: aws.String("purpose"), Value: aws.String("test run")},
		},
		TransitiveTagKeys: []string{walletTag},
	}
	out, err := broker.AssumeRole(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := *out.AssumedRoleUser.Arn, "arn:aws:sts::123456789012:assumed-role/agentkeys-assume-role/agentkeys-session"; got != want {
		t.Errorf("assumed role ARN %q; want %q", got, want)
	}
	if out.SourceIdentity == nil || *out.SourceIdentity != "agent-1" {
		t.Errorf("source identity %v", out.SourceIdentity)
	}
	if d := time.Until(*out.Credentials.Expiration); d < 14*time.Minute || d > 15*time.Minute {
		t.Errorf("expiration in %v; want 15m", d)
	}
	issued, ok := f.srv.Issued(*out.Credentials.AccessKeyId)
	if !ok || issued.PrincipalTags[walletTag] != wallet || issued.PrincipalTags["purpose"] != "test run" ||
		issued.Caller != brokerARN || issued.Action != "AssumeRole" {
		t.Errorf("issued %+v", issued)
	}
	c := f.srv.Calls()[0]
	if c.Caller != brokerARN || c.CallerAccessKeyID != brokerKeyID || c.SessionTags[walletTag] != wallet ||
		len(c.TransitiveTagKeys) != 1 || c.SourceIdentity != "agent-1" || c.DurationSeconds != 900 {
		t.Errorf("call %+v", c)
	}

	id, err := broker.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		t.Fatal(err)
	}
	if *id.Arn != brokerARN || *id.Account != "123456789012" || !strings.HasPrefix(*id.UserId, "AIDA") {
		t.Errorf("caller identity %q %q %q", *id.Arn, *id.Account, *id.UserId)
	}
}

func TestAssumeRoleRefusals(t *testing.T) {
	f := newFixture(t)
	good := func() *sts.AssumeRoleInput {
		return &sts.AssumeRoleInput{RoleArn: aws.String(assumeARN), RoleSessionName: aws.String("s1"),
			Tags: []types.Tag{{Key: aws.String(walletTag), Value: aws.String(wallet)}}}
	}
	tests := []struct {
		name   string
		client *sts.Client
		input  func(*sts.AssumeRoleInput)
		code   string
		msg    string
	}{
		{name: "unsigned", client: f.anonymous(), code: "MissingAuthenticationToken"},
		{name: "unknown access key", client: f.signed("AKIAUNKNOWNKEY000000", brokerSecret, ""), code: "InvalidClientTokenId",
			msg: "The security token included in the request is invalid."},
		{name: "wrong secret", client: f.signed(brokerKeyID, otherSecret, ""), code: "SignatureDoesNotMatch"},
		{name: "long-term key with a session token", client: f.signed(brokerKeyID, brokerSecret, "token"), code: "InvalidClientTokenId"},
		{name: "untrusted principal", client: f.signed(otherKeyID, otherSecret, ""), code: "AccessDenied",
			msg: "User: arn:aws:iam::123456789012:user/stsserver is not authorized to perform: sts:AssumeRole on resource: " + assumeARN},
		{name: "without the required tag", client: f.signed(brokerKeyID, brokerSecret, ""), input: func(in *sts.AssumeRoleInput) { in.Tags = nil },
			code: "AccessDenied"},
		{name: "unknown role", client: f.signed(brokerKeyID, brokerSecret, ""), input: func(in *sts.AssumeRoleInput) {
			in.RoleArn = aws.String("arn:aws:iam::123456789012:role/nope")
		}, code: "AccessDenied"},
		{name: "duration above the role maximum", client: f.signed(brokerKeyID, brokerSecret, ""), input: func(in *sts.AssumeRoleInput) {
			in.DurationSeconds = aws.Int32(7200)
		}, code: "ValidationError", msg: "MaxSessionDuration"},
		{name: "bad session name", client: f.signed(brokerKeyID, brokerSecret, ""), input: func(in *sts.AssumeRoleInput) {
			in.RoleSessionName = aws.String("no/slashes")
		}, code: "ValidationError"},
		{name: "bad source identity", client: f.signed(brokerKeyID, brokerSecret, ""), input: func(in *sts.AssumeRoleInput) {
			in.SourceIdentity = aws.String("x")
		}, code: "ValidationError", msg: "sourceIdentity"},
		{name: "duplicate tag keys", client: f.signed(brokerKeyID, brokerSecret, ""), input: func(in *sts.AssumeRoleInput) {
			in.Tags = append(in.Tags, types.Tag{Key: aws.String(strings.ToUpper(walletTag)), Value: aws.String("x")})
		}, code: "InvalidParameterValue"},
		{name: "too many tags", client: f.signed(brokerKeyID, brokerSecret, ""), input: func(in *sts.AssumeRoleInput) {
			for i := range 50 {
				in.Tags = append(in.Tags, types.Tag{Key: aws.String("k" + string(rune('a'+i%26)) + string(rune('a'+i/26))), Value: aws.String("v")})
			}
		}, code: "ValidationError"},
		{name: "transitive key that is not a tag", client: f.signed(brokerKeyID, brokerSecret, ""), input: func(in *sts.AssumeRoleInput) {
			in.TransitiveTagKeys = []string{"nope"}
		}, code: "InvalidParameterValue"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := good()
			if tt.input != nil {
				tt.input(in)
			}
			_, err := tt.client.AssumeRole(context.Background(), in)
			apiErr := wantAPIError(t, err, tt.code)
			if !strings.Contains(apiErr.ErrorMessage(), tt.msg) {
				t.Errorf("message %q; want it to contain %q", apiErr.ErrorMessage(), tt.msg)
			}
		})
	}
}

func TestRoleChaining(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	out, err := f.anonymous().AssumeRoleWithWebIdentity(ctx, webIdentityInput(f.iss.mint(t, nil)))
	if err != nil {
		t.Fatal(err)
	}
	cr := out.Credentials
	session := f.signed(*cr.AccessKeyId, *cr.SecretAccessKey, *cr.SessionToken)

	// At most one hour when chaining.
	_, err = session.AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: aws.String(chainRoleARN), RoleSessionName: aws.String("chained"), DurationSeconds: aws.Int32(3601)})
	wantAPIError(t, err, "ValidationError")

	// The transitive wallet tag carries over.
	chained, err := session.AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: aws.String(chainRoleARN), RoleSessionName: aws.String("chained")})
	if err != nil {
		t.Fatal(err)
	}
	issued, _ := f.srv.Issued(*chained.Credentials.AccessKeyId)
	if issued.PrincipalTags[walletTag] != wallet || issued.Caller != *out.AssumedRoleUser.Arn {
		t.Errorf("chained session %+v", issued)
	}

	// A transitive tag cannot be set again.
	_, err = session.AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: aws.String(chainRoleARN), RoleSessionName: aws.String("chained"),
		Tags: []types.Tag{{Key: aws.String(walletTag), Value: aws.String("0x0")}}})
	wantAPIError(t, err, "InvalidParameterValue")

	// A role that does not trust the session's role refuses it.
	_, err = session.AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: aws.String(assumeARN), RoleSessionName: aws.String("chained")})
	wantAPIError(t, err, "AccessDenied")

	// A wrong session token, then an expired session.
	_, err = f.signed(*cr.AccessKeyId, *cr.SecretAccessKey, "forged").GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	wantAPIError(t, err, "InvalidClientTokenId")
	f.clock.advance(2 * time.Hour)
	_, err = session.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	wantAPIError(t, err, "ExpiredToken")
}

// The server's clock governs signatures, and its Date header lets the SDK
// correct its skew, as against AWS.
func TestSigningTime(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.clock.advance(time.Hour)

	_, err := f.signed(brokerKeyID, brokerSecret, "").GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	apiErr := wantAPIError(t, err, "SignatureDoesNotMatch")
	if !strings.HasPrefix(apiErr.ErrorMessage(), "Signature expired: ") {
		t.Errorf("message %q", apiErr.ErrorMessage())
	}

	retrying := f.client(credentials.NewStaticCredentialsProvider(brokerKeyID, brokerSecret, ""), 3)
	if _, err := retrying.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{}); err != nil {
		t.Errorf("the SDK did not correct its clock skew from the server's Date: %v", err)
	}
}

// The wire format itself, without the SDK.
func TestWireFormat(t *testing.T) {
	f := newFixture(t)
	post := func(body string) (*http.Response, string) {
		t.Helper()
		resp, err := http.Post(f.endpoint, "application/x-www-form-urlencoded", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, string(b)
	}

	resp, body := post("Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=" + dataRoleARN +
		"&RoleSessionName=s1&WebIdentityToken=" + f.iss.mint(t, nil))
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/xml" || resp.Header.Get("X-Amzn-Requestid") == "" {
		t.Fatalf("%d %v\n%s", resp.StatusCode, resp.Header, body)
	}
	for _, want := range []string{
		`<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>ASIA`,
		`</AssumeRoleWithWebIdentityResult><ResponseMetadata><RequestId>` + resp.Header.Get("X-Amzn-Requestid") + `</RequestId></ResponseMetadata></AssumeRoleWithWebIdentityResponse>`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("response lacks %s:\n%s", want, body)
		}
	}

	resp, body = post("Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=" + dataRoleARN + "&RoleSessionName=s1&WebIdentityToken=abcd")
	want := `<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>` +
		`The ID Token provided is not a valid JWT. (You may see this error if you sent an Access Token)</Message></Error><RequestId>` +
		resp.Header.Get("X-Amzn-Requestid") + `</RequestId></ErrorResponse>`
	if resp.StatusCode != 400 || body != want {
		t.Errorf("%d\n%s\nwant\n%s", resp.StatusCode, body, want)
	}

	for _, tt := range []struct{ body, code string }{
		{"Version=2011-06-15", "MissingAction"},
		{"Action=GetSessionToken&Version=2011-06-15", "InvalidAction"},
		{"Action=GetCallerIdentity&Version=2010-01-01", "InvalidAction"},
		{"Action=GetCallerIdentity&Version=2011-06-15&" + strings.Repeat("x", 70<<10), "RequestEntityTooLarge"},
	} {
		resp, body := post(tt.body)
		if resp.StatusCode != StatusFor(tt.code) || !strings.Contains(body, "<Code>"+tt.code+"</Code>") {
			t.Errorf("%.40s: %d %s; want %s", tt.body, resp.StatusCode, body, tt.code)
		}
	}
	f.srv.FailNext("*", "InternalFailure", "", 1)
	resp, body = post("Action=GetCallerIdentity&Version=2011-06-15")
	if resp.StatusCode != 500 || !strings.Contains(body, "<Type>Receiver</Type>") {
		t.Errorf("%d %s; want a 500 Receiver error", resp.StatusCode, body)
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	for _, opts := range []Options{
		{Roles: []Role{{ARN: "arn:aws:iam::123:role/x"}}},
		{Roles: []Role{{ARN: "arn:aws:iam::123456789012:user/x"}}},
		{Roles: []Role{{ARN: dataRoleARN, ProviderIssuer: "http://127.0.0.1:1"}}},
		{Roles: []Role{{ARN: dataRoleARN, MaxSessionDuration: 13 * time.Hour}}},
		{Roles: []Role{{ARN: dataRoleARN}, {ARN: dataRoleARN}}},
		{AccessKeys: []AccessKey{{ID: "AKIA"}}},
	} {
		if _, err := newServer(opts); err == nil {
			t.Errorf("newServer(%+v) succeeded", opts)
		}
	}
	if _, err := newServer(Options{Roles: []Role{{ARN: dataRoleARN, ProviderIssuer: "http://127.0.0.1:1"}}, AllowHTTPIssuer: true}); err != nil {
		t.Errorf("http issuer with AllowHTTPIssuer: %v", err)
	}
}

// An http issuer works with AllowHTTPIssuer, as the in-process broker needs.
func TestHTTPIssuer(t *testing.T) {
	iss := newIssuer(t)
	plain := httptest.NewServer(iss.srv.Config.Handler)
	t.Cleanup(plain.Close)
	iss.url = plain.URL
	srv := New(Options{Roles: []Role{{ARN: dataRoleARN, ProviderIssuer: plain.URL, RequireTag: walletTag}}, AllowHTTPIssuer: true})
	endpoint := srv.Start(t)
	client := sts.New(sts.Options{BaseEndpoint: &endpoint, Region: "us-east-1", Credentials: aws.AnonymousCredentials{}})
	if _, err := client.AssumeRoleWithWebIdentity(context.Background(), webIdentityInput(iss.mint(t, nil))); err != nil {
		t.Fatal(err)
	}
}

func FuzzParseToken(f *testing.F) {
	f.Add("eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJ4In0.AAAA")
	f.Add("a.b.c")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := parseToken(s)
		if err != nil {
			return
		}
		tok.audiences()
		tok.decoded()
		tok.timeClaim("exp")
		tok.sessionTags()
		pub, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if tok.verify(&pub.PublicKey) {
			t.Fatal("a fuzzed token verified with a fresh key")
		}
	})
}

func FuzzParseAuthorization(f *testing.F) {
	f.Add("AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/sts/aws4_request, SignedHeaders=host;x-amz-date, Signature=" + strings.Repeat("0", 64))
	f.Add("AWS4-HMAC-SHA256 ")
	f.Fuzz(func(t *testing.T, h string) {
		a, e := parseAuthorization(h)
		if e == nil && (a.accessKeyID == "" || len(a.signedHeaders) == 0) {
			t.Fatalf("accepted %q without a key or signed headers", h)
		}
	})
}

func FuzzJWK(f *testing.F) {
	f.Add(`{"kty":"EC","crv":"P-256","x":"AAAA","y":"AAAA"}`)
	f.Add(`{"kty":"RSA","n":"AAAA","e":"AQAB"}`)
	f.Fuzz(func(t *testing.T, s string) {
		var k jwk
		if json.Unmarshal([]byte(s), &k) == nil {
			k.publicKey()
		}
	})
}
