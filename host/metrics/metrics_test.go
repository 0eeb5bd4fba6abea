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
