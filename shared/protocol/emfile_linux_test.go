package protocol

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// emfileChildEnv, when set, makes TestServeSurvivesEMFILE the child: the value
// is the socket path to serve on.
const emfileChildEnv = "AGENTKEYS_PROTOCOL_TEST_EMFILE_CHILD"

// TestServeSurvivesEMFILE runs a server in a child process whose file
// descriptors are used up (RLIMIT_NOFILE lowered, the rest hoarded), so that
// Accept fails with EMFILE. Serve must keep running, and once the child frees
// its descriptors the connection that waited is served, and so is a new one.
//
// The child talks to this test on stdin (commands) and stdout (its JSON log and
// status lines); the test dials from its own process, whose descriptors are
// not limited.
func TestServeSurvivesEMFILE(t *testing.T) {
	if path := os.Getenv(emfileChildEnv); path != "" {
		emfileChild(t, path)
		return
	}
	path := filepath.Join(t.TempDir(), "e.sock")
	cmd := exec.Command(os.Args[0], "-test.run=^TestServeSurvivesEMFILE$", "-test.v")
	cmd.Env = append(os.Environ(), emfileChildEnv+"="+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill() // if the test fails half-way; a no-op after Wait

	lines := make(chan string, 1000)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var seen []string
	waitLine := func(what string, match func(string) bool) string {
		t.Helper()
		timeout := time.After(patience)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("child exited before %s; output:\n%s\nstderr:\n%s", what, strings.Join(seen, "\n"), stderr.String())
				}
				seen = append(seen, l)
				if strings.HasPrefix(l, "serve returned") {
					t.Fatalf("child: %s", l)
				}
				if match(l) {
					return l
				}
			case <-timeout:
				t.Fatalf("gave up waiting for %s; output:\n%s", what, strings.Join(seen, "\n"))
			}
		}
	}
	is := func(s string) func(string) bool { return func(l string) bool { return l == s } }

	waitLine("the child to use up its descriptors", is("exhausted"))
	// This connection waits in the listen backlog: the child cannot accept it.
	conn := dialRaw(t, "unix:"+path)
	defer conn.Close()
	if _, err := conn.Write(requestFrame(t, 1, "echo", "waited")); err != nil {
		t.Fatal(err)
	}
	waitLine("a logged EMFILE from Accept", func(l string) bool {
		return strings.Contains(l, `"msg":"failed to accept a connection; retrying"`) && strings.Contains(l, "too many open files")
	})

	fmt.Fprintln(stdin, "free")
	waitLine("the child to free its descriptors", is("freed"))
	frame, err := ReadFrame(conn)
	if err != nil {
		t.Fatalf("the connection that waited: %v", err)
	}
	resp, err := DecodeResponse(frame)
	var out echoResp
	if err != nil || resp.Err != nil || Unmarshal(resp.Body, &out) != nil || out.Text != "waited" {
		t.Fatalf("the connection that waited: %v %+v", err, resp)
	}
	expectEcho(t, "unix:"+path, "new")

	fmt.Fprintln(stdin, "quit")
	waitLine("a clean shutdown", is("serve ended: "+ErrServerClosed.Error()))
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v; output:\n%s\nstderr:\n%s", err, strings.Join(seen, "\n"), stderr.String())
	}
}

func emfileChild(t *testing.T, path string) {
	l, err := Listen("unix:" + path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{Handler: &testHandler{}, Logger: slog.New(slog.NewJSONHandler(os.Stdout, nil))}
	errc := make(chan error, 1)
	go func() {
		err := srv.Serve(l)
		if !errors.Is(err, ErrServerClosed) {
			fmt.Println("serve returned:", err)
		}
		errc <- err
	}()

	open, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	low := lim
	low.Cur = uint64(len(open) + 16)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	var hoard []*os.File
	for {
		f, err := os.Open(os.DevNull)
		if err != nil {
			if !errors.Is(err, syscall.EMFILE) {
				t.Fatal(err)
			}
			break
		}
		hoard = append(hoard, f)
	}
	fmt.Println("exhausted")

	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch in.Text() {
		case "free":
			for _, f := range hoard {
				f.Close()
			}
			if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
				t.Fatal(err)
			}
			fmt.Println("freed")
		case "quit":
			select {
			case err := <-errc:
				t.Fatalf("Serve had returned: %v", err)
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), patience)
			defer cancel()
			srv.Shutdown(ctx)
			fmt.Println("serve ended:", <-errc)
			return
		}
	}
	t.Fatal("stdin closed before quit")
}
