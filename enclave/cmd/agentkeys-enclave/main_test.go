package main

import (
	"context"
	"encoding/json"
	"fmt"
	stdlog "log"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/agentkeys/broker/enclave/service"
	"github.com/agentkeys/broker/internal/scriptcmd"
	"github.com/agentkeys/broker/shared/protocol"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"agentkeys-enclave": func() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) },
	})
}

// TestScripts runs the binary as a user would: testdata/script/*.txt.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"enclave-info": cmdEnclaveInfo,
			"mode":         cmdMode,
			"jsonlog":      scriptcmd.JSONLog,
		},
	})
}

// enclave-info ADDR: wait (bounded) for an enclave on ADDR and print its Info as JSON.
func cmdEnclaveInfo(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: enclave-info ADDR")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var lastErr error
	for ctx.Err() == nil {
		conn, err := protocol.Dial(ctx, args[0])
		if err != nil {
			lastErr = err
			time.Sleep(50 * time.Millisecond)
			continue
		}
		c := protocol.NewClient(conn)
		var info protocol.InfoResponse
		err = c.Call(ctx, protocol.OpInfo, protocol.InfoRequest{}, &info)
		c.Close()
		if err != nil {
			lastErr = err
			break
		}
		info.Time = 0 // time_ms moves with every call; the scripts compare the rest
		b, _ := json.MarshalIndent(info, "", "  ")
		fmt.Fprintf(ts.Stdout(), "%s\n", b)
		if neg {
			ts.Fatalf("enclave answered")
		}
		return
	}
	if !neg {
		ts.Fatalf("enclave did not answer: %v", lastErr)
	}
}

// mode FILE OCTAL: assert a file's permission bits.
func cmdMode(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: mode FILE OCTAL")
	}
	fi, err := os.Stat(ts.MkAbs(args[0]))
	ts.Check(err)
	want, err := strconv.ParseUint(args[1], 8, 32)
	ts.Check(err)
	if (uint64(fi.Mode().Perm()) == want) == neg {
		ts.Fatalf("%s has mode %04o", args[0], fi.Mode().Perm())
	}
}

// TestImportsNothingFromHost keeps the enclave binary small and auditable: it may
// depend on enclave/ and shared/ only.
func TestImportsNothingFromHost(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "github.com/agentkeys/broker/") &&
			!strings.HasPrefix(pkg, "github.com/agentkeys/broker/enclave/") &&
			!strings.HasPrefix(pkg, "github.com/agentkeys/broker/shared/") {
			t.Errorf("the enclave imports %s", pkg)
		}
	}
}

// TestStaticBinarySIGTERM builds the binary as the image does (CGO_ENABLED=0),
// starts it, and stops it with SIGTERM, as systemd and nitro-cli do.
func TestStaticBinarySIGTERM(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "agentkeys-enclave")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 build failed: %v\n%s", err, out)
	}
	pol := filepath.Join(dir, "policy.json")
	os.WriteFile(pol, []byte(`{"issuer":"http://127.0.0.1:8091"}`), 0o600)
	sock := filepath.Join(dir, "e.sock")
	var stderr strings.Builder
	enc := exec.Command(bin, "--simulated", "--state-dir", filepath.Join(dir, "state"), "--policy", pol, "--listen", "unix:"+sock)
	enc.Stderr = &stderr
	if err := enc.Start(); err != nil {
		t.Fatal(err)
	}
	defer enc.Process.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		conn, err := protocol.Dial(ctx, "unix:"+sock)
		if err == nil {
			conn.Close()
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("enclave did not come up: %v\n%s", err, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	enc.Process.Signal(syscall.SIGTERM)
	if err := enc.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), `"msg":"stopped"`) {
		t.Fatalf("no clean stop in the log:\n%s", stderr.String())
	}
}

// TestStandardLogIsJSON: what libraries print with the standard log package
// reaches the JSON log.
func TestStandardLogIsJSON(t *testing.T) {
	w, flags, def := stdlog.Writer(), stdlog.Flags(), slog.Default()
	t.Cleanup(func() { slog.SetDefault(def); stdlog.SetOutput(w); stdlog.SetFlags(flags) })
	var buf strings.Builder
	newLogger(&buf, slog.LevelInfo)
	stdlog.Printf("a library speaks")
	var rec map[string]any
	if err := json.Unmarshal([]byte(buf.String()), &rec); err != nil || rec["msg"] != "a library speaks" {
		t.Fatalf("standard log output: %q (%v)", buf.String(), err)
	}
}

// TestServiceTuning: the flags' values reach the service configuration;
// --session-cache 0 is no cache (the service's negative), not its default.
func TestServiceTuning(t *testing.T) {
	for _, tc := range []struct {
		in        serviceTuning
		wantCache int
	}{
		{serviceTuning{sessionCache: 0, auditMaxBatch: 8, auditMaxUnacked: 64}, -1},
		{serviceTuning{sessionCache: 100, auditMaxBatch: 8, auditMaxUnacked: 64}, 100},
	} {
		c := tc.in.apply(service.Config{})
		if c.SessionCache != tc.wantCache || c.Audit.MaxBatch != tc.in.auditMaxBatch || c.Audit.MaxUnacked != int64(tc.in.auditMaxUnacked) {
			t.Errorf("%+v: session cache %d, max batch %d, max unacked %d", tc.in, c.SessionCache, c.Audit.MaxBatch, c.Audit.MaxUnacked)
		}
	}
}
