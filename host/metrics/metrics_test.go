package metrics

import (
	"testing"
	"time"
)

type fakeEnclave struct {
	up       bool
	offset   time.Duration
	measured bool
}

func (f *fakeEnclave) Connected() bool                    { return f.up }
func (f *fakeEnclave) ClockOffset() (time.Duration, bool) { return f.offset, f.measured }

// gauge returns the value of the gauge name, and false if it is absent.
func gauge(t *testing.T, m *Metrics, name string) (float64, bool) {
	t.Helper()
	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name {
			if f.GetType().String() != "GAUGE" || len(f.Metric) != 1 {
				t.Fatalf("%s: %v", name, f)
			}
			return f.Metric[0].GetGauge().GetValue(), true
		}
	}
	return 0, false
}

func TestEnclaveClockOffset(t *testing.T) {
	tests := []struct {
		name    string
		enc     fakeEnclave
		want    float64
		present bool
	}{
		{"not measured yet", fakeEnclave{}, 0, false},
		{"on time", fakeEnclave{true, 0, true}, 0, true},
		{"ahead", fakeEnclave{true, 5 * time.Second, true}, 5, true},
		{"behind", fakeEnclave{true, -2500 * time.Millisecond, true}, -2.5, true},
		{"disconnected, last measurement kept", fakeEnclave{false, 3 * time.Second, true}, 3, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New(&tt.enc)
			got, ok := gauge(t, m, "agentkeys_enclave_clock_offset_seconds")
			if ok != tt.present || got != tt.want {
				t.Fatalf("gauge = %v, %v; want %v, %v", got, ok, tt.want, tt.present)
			}
			up, _ := gauge(t, m, "agentkeys_enclave_up")
			if want := map[bool]float64{true: 1, false: 0}[tt.enc.up]; up != want {
				t.Fatalf("agentkeys_enclave_up = %v, want %v", up, want)
			}
		})
	}
}

// TestWindow: events count for 60 seconds, then drop out; a bucket reused a
// minute later starts from zero.
func TestWindow(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	w := NewWindow(func() time.Time { return now })
	steps := []struct {
		advance time.Duration
		add     uint64
		want    uint64
	}{
		{0, 0, 0},
		{0, 3, 3},
		{500 * time.Millisecond, 1, 4}, // the same second
		{time.Second, 2, 6},
		{58 * time.Second, 0, 6},  // 59 s after the first: still in
		{time.Second, 0, 2},       // 60 s after the first four: out
		{time.Second, 5, 5},       // the second's bucket reused: the old 2 are gone
		{10 * time.Minute, 0, 0},  // idle: everything out
		{-30 * time.Second, 0, 0}, // a clock stepped back counts nothing from the future
	}
	for i, s := range steps {
		now = now.Add(s.advance)
		w.Add(s.add)
		if got := w.Count(); got != s.want {
			t.Fatalf("step %d (at +%v): Count %d, want %d", i, s.advance, got, s.want)
		}
	}
}

func TestMintedCountsBoth(t *testing.T) {
	m := New(nil)
	m.Minted("oidc_jwt")
	m.Minted("aws_creds")
	if got := m.MintedLastMinute.Count(); got != 2 {
		t.Fatalf("MintedLastMinute %d, want 2", got)
	}
	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var total float64
	for _, f := range fams {
		if f.GetName() == "agentkeys_mints_total" {
			for _, c := range f.Metric {
				total += c.GetCounter().GetValue()
			}
		}
	}
	if total != 2 {
		t.Fatalf("agentkeys_mints_total %v, want 2", total)
	}
}
