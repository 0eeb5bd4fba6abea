package service

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The enclave reports its own time and clock source, so the host can compare
// clocks; it never takes time from the host.
func TestInfoClock(t *testing.T) {
	e := newEnv(t, nil)
	e.clock.Add(5 * time.Second) // the enclave's clock, not the test's
	info := e.info(t)
	if want := e.clock.Now().UnixMilli(); info.Time != want {
		t.Fatalf("time_ms = %d, want %d (the enclave clock)", info.Time, want)
	}
	if info.ClockSource == "" {
		t.Fatal("clock_source is empty")
	}
	// The name comes from the file the service reads.
	path := filepath.Join(t.TempDir(), "current_clocksource")
	if err := os.WriteFile(path, []byte("kvm-clock\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.svc.clockSourceFile = path
	if got := e.svc.Info().ClockSource; got != "kvm-clock" {
		t.Fatalf("clock_source = %q, want kvm-clock", got)
	}
}

func TestClockSource(t *testing.T) {
	dir := t.TempDir()
	long := strings.Repeat("a", maxClockSource)
	tests := []struct {
		name    string
		content string
		absent  bool
		want    string
	}{
		{name: "kvm-clock", content: "kvm-clock\n", want: "kvm-clock"},
		{name: "ptp", content: "ptp_kvm", want: "ptp_kvm"},
		{name: "tsc", content: "tsc\n", want: "tsc"},
		{name: "absent", absent: true, want: "unknown"},
		{name: "empty", content: "", want: "unknown"},
		{name: "blank", content: " \n", want: "unknown"},
		{name: "longest", content: long, want: long},
		{name: "too long", content: long + "a", want: "unknown"},
		{name: "two words", content: "kvm clock\n", want: "unknown"},
		{name: "control bytes", content: "kvm\x1b[31m", want: "unknown"},
		{name: "not ascii", content: "kvm-\u00e9", want: "unknown"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprint(i))
			if !tt.absent {
				if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if got := clockSource(path); got != tt.want {
				t.Fatalf("clockSource = %q, want %q", got, tt.want)
			}
		})
	}
}
