package api_test

import (
	"bufio"
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentkeys/broker/internal/testbroker"
)

// TestEnclaveClockOffset: the real enclave service runs 5 s ahead of the host;
// /readyz reports the offset as an informative detail (still ready) and
// /metrics exports it as agentkeys_enclave_clock_offset_seconds. The ±1 s
// tolerance absorbs the round trip on a loaded machine; it measures no speed.
func TestEnclaveClockOffset(t *testing.T) {
	b := testbroker.Start(t, testbroker.Options{Now: func() time.Time { return time.Now().Add(5 * time.Second) }})

	r := do(t, "GET", b.URL+"/readyz", nil, nil)
	st := r.json(t)
	if r.status != 200 || st["status"] != "ready" {
		t.Fatalf("readyz with a shifted enclave clock: %d %s", r.status, r.body)
	}
	s, _ := st["enclave_clock_offset_ms"].(string)
	ms, err := strconv.ParseInt(s, 10, 64)
	if err != nil || ms < 4000 || ms > 6000 {
		t.Fatalf("enclave_clock_offset_ms = %q, want 5000 ± 1000: %s", s, r.body)
	}

	r = do(t, "GET", b.URL+"/metrics", nil, nil)
	var found bool
	sc := bufio.NewScanner(bytes.NewReader(r.body))
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "agentkeys_enclave_clock_offset_seconds ")
		if !ok {
			continue
		}
		found = true
		sec, err := strconv.ParseFloat(v, 64)
		if err != nil || sec < 4 || sec > 6 {
			t.Fatalf("agentkeys_enclave_clock_offset_seconds = %q, want 5 ± 1", v)
		}
	}
	if r.status != 200 || !found {
		t.Fatalf("no agentkeys_enclave_clock_offset_seconds in /metrics: %d %s", r.status, r.body)
	}
}
