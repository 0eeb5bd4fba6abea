package witnesstest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"filippo.io/torchwood"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/agentkeys/broker/internal/lockedbuf"
)

// torchwoodModule is built from the module cache.
const torchwoodModule = "filippo.io/torchwood"

// startTimeout bounds how long Start waits for litewitness to listen.
const startTimeout = 60 * time.Second

// Witness is a running litewitness.
type Witness struct {
	// Name is the witness's name (in its cosignature lines).
	Name string
	// URL is the submission prefix, http://127.0.0.1:port.
	URL string
	// VerifierKey is its cosignature/v1 verifier key.
	VerifierKey string
	// DB is the path of its SQLite database.
	DB string
}

var built struct {
	mu  sync.Mutex
	dir string
	err error
}

// binaries returns the directory holding litewitness and witnessctl,
// building them on first use.
func binaries() (string, error) {
	built.mu.Lock()
	defer built.mu.Unlock()
	if built.dir == "" && built.err == nil {
		built.dir, built.err = build()
	}
	return built.dir, built.err
}

// Cleanup removes the binaries built by Start. Call it from TestMain after
// m.Run.
func Cleanup() {
	built.mu.Lock()
	defer built.mu.Unlock()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	built.dir, built.err = "", nil
}

func build() (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("failed to find the go command: %w", err)
	}
	dir, err := os.MkdirTemp("", "witnesstest-")
	if err != nil {
		return "", err
	}
	// Built within this module, so go.mod and go.sum (see tools.go) pick
	// the versions; -s -w makes linking quicker.
	cmd := exec.Command(goBin, "build", "-ldflags=-s -w", "-o", dir+string(filepath.Separator),
		torchwoodModule+"/cmd/litewitness", torchwoodModule+"/cmd/witnessctl")
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("failed to build litewitness (is %s required in go.mod? see tools.go): %w\n%s", torchwoodModule, err, out)
	}
	return dir, nil
}

// Start runs a litewitness named name that knows the log origin with the
// note verifier key logKey. It stops when the test ends.
func Start(t testing.TB, name, origin, logKey string) *Witness {
	t.Helper()
	bin, err := binaries()
	if err != nil {
		t.Fatal(err)
	}
	// A short directory: Unix socket paths are limited to ~100 bytes.
	dir, err := os.MkdirTemp("", "wt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })

	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "agent.sock")
	serveAgent(t, sock, priv)
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := torchwood.NewCosignatureSigner(name, priv)
	if err != nil {
		t.Fatal(err)
	}

	db := filepath.Join(dir, "litewitness.db")
	ctl := func(args ...string) {
		t.Helper()
		cmd := exec.Command(filepath.Join(bin, "witnessctl"), args...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("witnessctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	ctl("add-log", "-db", db, "-origin", origin)
	ctl("add-key", "-db", db, "-origin", origin, "-key", logKey)

	addr := freeAddr(t)
	var stderr lockedbuf.Buffer
	cmd := exec.Command(filepath.Join(bin, "litewitness"),
		"-db", db, "-name", name, "-ssh-agent", sock,
		"-key", ssh.FingerprintSHA256(sshPub), "-listen", addr)
	cmd.Stdout = &stderr
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("failed to start litewitness: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(startTimeout):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("litewitness output:\n%s", stderr.String())
		}
	})
	deadline := time.Now().Add(startTimeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			t.Fatalf("litewitness exited:\n%s", stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("litewitness did not listen on %s within %v:\n%s", addr, startTimeout, stderr.String())
		}
	}
	return &Witness{Name: name, URL: "http://" + addr, VerifierKey: cs.Verifier().String(), DB: db}
}

// serveAgent serves an ssh-agent holding priv on sock until the test ends.
func serveAgent(t testing.TB, sock string, priv ed25519.PrivateKey) {
	kr := agent.NewKeyring()
	if err := kr.Add(agent.AddedKey{PrivateKey: priv}); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				agent.ServeAgent(kr, c)
				c.Close()
			}()
		}
	}()
}

// freeAddr returns a loopback address nothing listens on (litewitness takes
// only an address, not a listener).
func freeAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// LogState returns witnessctl list-logs's JSON line for origin (its size
// and root hash), or "".
func (w *Witness) LogState(t testing.TB, origin string) string {
	bin, err := binaries()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(bin, "witnessctl"), "list-logs", "-db", w.DB).Output()
	if err != nil {
		t.Fatalf("witnessctl list-logs: %v", err)
	}
	for _, l := range bytes.Split(out, []byte("\n")) {
		if bytes.Contains(l, []byte(`"origin":"`+origin+`"`)) {
			return string(l)
		}
	}
	return ""
}
