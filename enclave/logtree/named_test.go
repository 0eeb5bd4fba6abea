package logtree

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/agentkeys/broker/shared/auditlog"
	"github.com/agentkeys/broker/shared/protocol"
)

func named(r protocol.AuditResumeRequest, name string) protocol.AuditResumeRequest {
	r.Log = name
	return r
}

func appendOne(l *Log) error {
	_, err := l.Append(func(int64) ([]byte, error) { return []byte("x"), nil })
	return err
}

// TestNamedLog: a log named in the first Resume signs its checkpoints under
// origin/NAME with the same key (the manifest's key under that name
// verifies them, the default log's does not), and a restarted enclave
// resumes it under that name only.
func TestNamedLog(t *testing.T) {
	l1 := newLog(t, 1)
	def := l1.VerifierKey()
	if !strings.HasPrefix(def, origin+"+") {
		t.Fatalf("before Resume the key is %s, want the default log's", def)
	}
	if l1.Name() != "" {
		t.Fatalf("Name before Resume = %q", l1.Name())
	}
	if _, err := l1.Resume(protocol.AuditResumeRequest{Log: "host-a"}); err != nil {
		t.Fatal(err)
	}
	if l1.Name() != "host-a" {
		t.Fatalf("Name after Resume = %q, want host-a", l1.Name())
	}
	want, err := auditlog.LogVerifierKey(def, "host-a")
	if err != nil {
		t.Fatal(err)
	}
	if got := l1.VerifierKey(); got != want {
		t.Fatalf("VerifierKey = %s, want %s", got, want)
	}
	s := newStore()
	appendMany(t, l1, s, 10, 2) // open checks every checkpoint with the named key and origin
	_, cp := l1.State()
	dv, _ := note.NewVerifier(def)
	if _, err := note.Open(cp, note.VerifierList(dv)); err == nil {
		t.Fatal("the default log's key verifies a named log's checkpoint")
	}
	if !strings.HasPrefix(string(cp), origin+"/host-a\n10\n") {
		t.Fatalf("checkpoint %q", cp)
	}

	// A restarted enclave: the named log resumes under its name only, and
	// a refused Resume chooses nothing.
	l2 := newLog(t, 1)
	for _, other := range []string{"", "host-b"} {
		if _, err := l2.Resume(named(s.resumeRequest(10), other)); err == nil {
			t.Fatalf("the log host-a was resumed as %q", other)
		}
		if err := appendOne(l2); !errors.Is(err, ErrNotResumed) {
			t.Fatalf("a refused Resume as %q left the log taking entries: %v", other, err)
		}
	}
	if resp, err := l2.Resume(named(s.resumeRequest(10), "host-a")); err != nil || resp.Size != 10 {
		t.Fatalf("Resume host-a after restart: %+v %v", resp, err)
	}
	if l2.VerifierKey() != want {
		t.Fatalf("VerifierKey after restart = %s", l2.VerifierKey())
	}
	for _, x := range appendMany(t, l2, s, 5, 1) {
		if x < 10 {
			t.Fatalf("index %d after the restart", x)
		}
	}
}

// TestOneLogPerBoot: once a Resume chose a log, a Resume naming another is
// refused (audit_log), whether the log chosen was the default or a named one,
// and the chosen log goes on.
func TestOneLogPerBoot(t *testing.T) {
	for _, tc := range []struct{ chosen, other string }{{"", "host-a"}, {"host-a", ""}, {"host-a", "host-b"}} {
		l := newLog(t, 1)
		if _, err := l.Resume(protocol.AuditResumeRequest{Log: tc.chosen}); err != nil {
			t.Fatal(err)
		}
		s := newStore()
		appendMany(t, l, s, 3, 1)
		vkey := l.VerifierKey()
		for _, req := range []protocol.AuditResumeRequest{{Log: tc.other}, named(s.resumeRequest(3), tc.other)} {
			_, err := l.Resume(req)
			if !errors.Is(err, protocol.ErrAuditLog) || !strings.Contains(err.Error(), "one enclave keeps one log") {
				t.Fatalf("chosen %q, Resume %q: %v", tc.chosen, tc.other, err)
			}
		}
		if l.VerifierKey() != vkey {
			t.Fatal("a refused Resume changed the key")
		}
		if resp, err := l.Resume(named(s.resumeRequest(3), tc.chosen)); err != nil || resp.Size != 3 {
			t.Fatalf("the chosen log: %+v %v", resp, err)
		}
		appendMany(t, l, s, 2, 1)
	}
}

// TestOneLogPerBootRace: of concurrent first Resumes naming different logs,
// exactly one chooses.
func TestOneLogPerBootRace(t *testing.T) {
	l := newLog(t, 1)
	names := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var won []string
	for _, n := range names {
		wg.Go(func() {
			if _, err := l.Resume(protocol.AuditResumeRequest{Log: n}); err == nil {
				mu.Lock()
				won = append(won, n)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(won) != 1 || !strings.HasPrefix(l.VerifierKey(), origin+"/"+won[0]+"+") {
		t.Fatalf("Resumes that chose: %v; key %s", won, l.VerifierKey())
	}
	appendMany(t, l, newStore(), 3, 1)
}

// TestBadLogName: a name that is not a log name is refused (bad_request)
// and chooses nothing.
func TestBadLogName(t *testing.T) {
	for _, name := range []string{"Host-A", "a/b", "-a", "a b", "a.b", "a+b", strings.Repeat("a", 64), "../x"} {
		l := newLog(t, 1)
		if _, err := l.Resume(protocol.AuditResumeRequest{Log: name}); !errors.Is(err, protocol.ErrBadRequest) {
			t.Errorf("Resume %q: %v", name, err)
		}
		if err := appendOne(l); !errors.Is(err, ErrNotResumed) {
			t.Errorf("after Resume %q: %v", name, err)
		}
		if _, err := l.Resume(protocol.AuditResumeRequest{}); err != nil {
			t.Errorf("the default log after a bad name: %v", err)
		}
	}
}
