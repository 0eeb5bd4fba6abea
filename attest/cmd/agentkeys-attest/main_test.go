package main

import (
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/agentkeys/broker/internal/scriptcmd"
	"github.com/agentkeys/broker/internal/testbroker"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"agentkeys-attest": func() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) },
	})
}

// TestScript runs the scripts in testdata/script. Each gets its own
// in-process broker (simulated enclave, real host API) with ISSUER set to its
// URL, $WORK/simulated-root.pem its simulated root, $WORK/real.b64 the real AWS
// document, and $WORK/live.json the broker's attestation response for a fixed
// nonce (document, manifest) and $WORK/jwks.json its JWKS, for offline runs.
func TestScript(t *testing.T) {
	real, err := os.ReadFile("../../testdata/nitro-attestation-2026.b64")
	if err != nil {
		t.Fatal(err)
	}
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		RequireExplicitExec: true,
		Setup: func(env *testscript.Env) error {
			tb, ok := env.T().(testing.TB)
			if !ok {
				return errors.New("testscript did not pass a testing.TB")
			}
			b := testbroker.Start(tb, testbroker.Options{})
			env.Setenv("ISSUER", b.URL)
			write := func(name string, data []byte) error {
				return os.WriteFile(filepath.Join(env.WorkDir, name), data, 0o644)
			}
			if err := write("simulated-root.pem", b.Attester.RootPEM()); err != nil {
				return err
			}
			if err := write("real.b64", real); err != nil {
				return err
			}
			var att struct {
				Document []byte `json:"document"`
				Manifest []byte `json:"manifest"`
			}
			if err := getJSON(b.URL+"/.well-known/attestation?format=json&nonce=00112233445566778899", &att); err != nil {
				return err
			}
			if err := write("doc.cbor", att.Document); err != nil {
				return err
			}
			if err := write("manifest.json", att.Manifest); err != nil {
				return err
			}
			var jwks json.RawMessage
			if err := getJSON(b.URL+"/.well-known/jwks.json", &jwks); err != nil {
				return err
			}
			return write("jwks.json", jwks)
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"exitcode": scriptcmd.ExitCode,
		},
	})
}

func getJSON(url string, v any) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errors.New(url + ": " + resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// TestImportsNoEnclaveCode: the auditor's tool shares nothing with the
// enclave but shared/ (and the test-only packages its tests use).
func TestImportsNoEnclaveCode(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".", "github.com/agentkeys/broker/attest").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		for _, bad := range []string{"enclave/", "host/", "internal/"} {
			if strings.HasPrefix(pkg, "github.com/agentkeys/broker/"+bad) {
				t.Errorf("agentkeys-attest imports %s", pkg)
			}
		}
	}
}
