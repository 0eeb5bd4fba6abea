package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/rogpeppe/go-internal/testscript"

	"github.com/aws/aws-sdk-go-v2/credentials/processcreds"

	"github.com/agentkeys/broker/host/awscreds"
	"github.com/agentkeys/broker/host/client"
	"github.com/agentkeys/broker/internal/scriptcmd"
	"github.com/agentkeys/broker/internal/stsserver"
	"github.com/agentkeys/broker/internal/testbroker"
	"github.com/agentkeys/broker/shared/jwk"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"agentkeys": func() { os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) },
	})
}

// TestScript runs the scripts in testdata/script, each against its own
// in-process broker (real enclave service, real host API), with
// AGENTKEYS_BROKER set to it, BROKER_LOCALHOST to the same server named
// localhost (not the issuer), HOME to $WORK, UNREACHABLE to a loopback URL
// where nothing listens, and FAKE_BROKER to fakeBroker.
func TestScript(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		RequireExplicitExec: true,
		Setup: func(env *testscript.Env) error {
			tb, ok := env.T().(testing.TB)
			if !ok {
				return errors.New("testscript did not pass a testing.TB")
			}
			b := testbroker.Start(tb, testbroker.Options{AWS: func(issuer string) *awscreds.Broker {
				sts := stsserver.New(stsserver.Options{
					Roles:           []stsserver.Role{{ARN: testRole, ProviderIssuer: issuer, RequireTag: "agentkeys_user_wallet"}},
					AllowHTTPIssuer: true,
				})
				ab, err := awscreds.New(context.Background(), awscreds.Config{RoleARN: testRole, Endpoint: sts.Start(tb)})
				if err != nil {
					tb.Fatal(err)
				}
				return ab
			}})
			env.Setenv("AGENTKEYS_BROKER", b.URL)
			env.Setenv("BROKER_LOCALHOST", strings.Replace(b.URL, "127.0.0.1", "localhost", 1))
			env.Setenv("HOME", env.WorkDir)
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return err
			}
			env.Setenv("UNREACHABLE", "http://"+l.Addr().String())
			fake := httptest.NewServer(fakeBroker())
			tb.Cleanup(fake.Close)
			env.Setenv("FAKE_BROKER", fake.URL)
			return l.Close()
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"exitcode":     scriptcmd.ExitCode,
			"filemode":     cmdFileMode,
			"jwtverify":    cmdJWTVerify,
			"processcreds": cmdProcessCreds,
		},
	})
}

// fakeBroker answers sign-in for any wallet (with the session token
// "fake.session.token") and revocation by the bearer: "revoked.before.sig" was
// already revoked ({"revoked": false}), "unconfirmed.x.sig" gets an answer
// without "revoked", "fails.x.sig" a 503; any other is revoked by this call.
// It stands in for answers the in-process broker does not give.
func fakeBroker() http.Handler {
	wallet := regexp.MustCompile(`0x[0-9a-fA-F]{40}`)
	mux := http.NewServeMux()
	writeJSON := func(w http.ResponseWriter, status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET /v1/session/nonce", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"nonce": "fakenonce12345678", "expires_at": time.Now().Add(5 * time.Minute).Unix()})
	})
	mux.HandleFunc("POST /v1/session", func(w http.ResponseWriter, r *http.Request) {
		var body struct{ Message string }
		json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&body)
		writeJSON(w, 200, map[string]any{"session": "fake.session.token", "wallet": strings.ToLower(wallet.FindString(body.Message)),
			"expiration": time.Now().Add(time.Hour).Unix()})
	})
	mux.HandleFunc("POST /v1/session/revoke", func(w http.ResponseWriter, r *http.Request) {
		const w1 = "0x1a642f0e3c3af545e7acbd38b07251b3990914f1"
		switch r.Header.Get("Authorization") {
		case "Bearer revoked.before.sig":
			writeJSON(w, 200, map[string]any{"revoked": false, "wallet": w1})
		case "Bearer unconfirmed.x.sig":
			writeJSON(w, 200, map[string]any{"wallet": w1})
		case "Bearer fails.x.sig":
			writeJSON(w, 503, map[string]any{"error": "enclave_unavailable", "message": "the enclave is unreachable; try again shortly"})
		default:
			writeJSON(w, 200, map[string]any{"revoked": true, "wallet": w1})
		}
	})
	return mux
}

const testRole = "arn:aws:iam::123456789012:role/agentkeys-data-role"

// processcreds COMMAND [ARGS...] runs the command as the AWS SDK's
// credential_process provider (aws-sdk-go-v2 processcreds) does, in the
// script's environment, and prints what the SDK made of it.
func cmdProcessCreds(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) == 0 {
		ts.Fatalf("usage: processcreds COMMAND [ARGS...]")
	}
	var env []string
	for _, k := range []string{"PATH", "HOME", "AGENTKEYS_BROKER"} {
		env = append(env, k+"="+ts.Getenv(k))
	}
	// The command is looked up in the script's PATH (where testscript put agentkeys).
	path := ""
	for _, d := range filepath.SplitList(ts.Getenv("PATH")) {
		if fi, err := os.Stat(filepath.Join(d, args[0])); err == nil && !fi.IsDir() {
			path = filepath.Join(d, args[0])
			break
		}
	}
	if path == "" {
		ts.Fatalf("%s not found in the script's PATH", args[0])
	}
	p := processcreds.NewProviderCommand(processcreds.NewCommandBuilderFunc(func(ctx context.Context) (*exec.Cmd, error) {
		cmd := exec.CommandContext(ctx, path, args[1:]...)
		cmd.Env = env
		cmd.Dir = ts.Getenv("WORK")
		return cmd, nil
	}))
	creds, err := p.Retrieve(context.Background())
	if (err != nil) != neg {
		ts.Fatalf("processcreds: %v", err)
	}
	if err == nil {
		fmt.Fprintf(ts.Stdout(), "source=%s key=%s session_token=%t can_expire=%t expires_in_minutes=%d\n",
			creds.Source, creds.AccessKeyID, creds.SessionToken != "", creds.CanExpire, int(time.Until(creds.Expires).Round(time.Minute).Minutes()))
	}
}

// filemode PERM FILE checks a file's permission bits (octal). It checks
// nothing on Windows.
func cmdFileMode(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: filemode PERM FILE")
	}
	want, err := strconv.ParseUint(args[0], 8, 32)
	ts.Check(err)
	fi, err := os.Stat(ts.MkAbs(args[1]))
	ts.Check(err)
	if runtime.GOOS == "windows" {
		return
	}
	if got := fi.Mode().Perm(); (uint64(got) == want) == neg {
		ts.Fatalf("%s has mode %04o", args[1], got)
	}
}

// jwtverify JWTFILE WALLETFILE checks the JWT in JWTFILE (or "stdout") against
// the broker's JWKS: ES256, iss the broker, aud sts.amazonaws.com, sub and
// agentkeys_user_wallet the wallet of WALLETFILE. It prints the claims as JSON
// and then "ttl SECONDS" (exp - iat), for stdout to match.
func cmdJWTVerify(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: jwtverify JWTFILE|stdout WALLETFILE")
	}
	tok := strings.TrimSuffix(ts.ReadFile(args[0]), "\n")
	_, address, err := client.LoadWalletFile(ts.MkAbs(args[1]))
	ts.Check(err)
	wallet := strings.ToLower(address)
	broker := ts.Getenv("AGENTKEYS_BROKER")

	resp, err := http.Get(broker + "/.well-known/jwks.json")
	ts.Check(err)
	defer resp.Body.Close()
	var set jwk.Set
	ts.Check(json.NewDecoder(resp.Body).Decode(&set))

	claims := jwt.MapClaims{}
	_, err = jwt.ParseWithClaims(tok, claims, func(t *jwt.Token) (any, error) {
		for _, k := range set.Keys {
			if k.Kid == t.Header["kid"] {
				return k.PublicKey()
			}
		}
		return nil, errors.New("kid not in the JWKS")
	}, jwt.WithValidMethods([]string{"ES256"}), jwt.WithIssuer(broker),
		jwt.WithAudience("sts.amazonaws.com"), jwt.WithExpirationRequired(), jwt.WithIssuedAt())
	if err != nil {
		ts.Fatalf("the JWT does not verify: %v", err)
	}
	if sub, _ := claims.GetSubject(); sub != "agentkeys:agent:"+wallet {
		ts.Fatalf("sub is %q, want %q", sub, "agentkeys:agent:"+wallet)
	}
	if claims["agentkeys_user_wallet"] != wallet {
		ts.Fatalf("agentkeys_user_wallet is %v, want %q", claims["agentkeys_user_wallet"], wallet)
	}
	exp, _ := claims.GetExpirationTime()
	iat, _ := claims.GetIssuedAt()
	if iat == nil {
		ts.Fatalf("no iat")
	}
	out, err := json.Marshal(claims)
	ts.Check(err)
	fmt.Fprintf(ts.Stdout(), "%s\nttl %d\n", out, exp.Unix()-iat.Unix())
}
