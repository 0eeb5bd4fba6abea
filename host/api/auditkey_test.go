package api_test

import (
	"strings"
	"testing"

	"github.com/agentkeys/broker/host/api"
	"github.com/agentkeys/broker/internal/testbroker"
	"github.com/agentkeys/broker/shared/auditlog"
	"github.com/agentkeys/broker/shared/httpapi"
	"github.com/agentkeys/broker/shared/manifest"
)

// TestAuditVerifierKey: /v1/audit/verifier-key serves the key of the log the
// host keeps, derived from the manifest's, and 503 when the enclave reports
// the key of another log than the host's name says.
func TestAuditVerifierKey(t *testing.T) {
	for _, tc := range []struct {
		name, log, apiLog string
		status            int
	}{
		{"default log", "", "", 200},
		{"named log", "host-a", "host-a", 200},
		{"the enclave keeps another log", "host-a", "host-b", 503},
		{"the enclave keeps the default log", "", "host-b", 503},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := testbroker.Start(t, testbroker.Options{AuditLogName: tc.log, Configure: func(c *api.Config) { c.AuditLogName = tc.apiLog }})
			r := do(t, "GET", b.URL+httpapi.PathAuditVerifierKey, nil, nil)
			if r.status != tc.status {
				t.Fatalf("status %d %s, want %d", r.status, r.body, tc.status)
			}
			if tc.status != 200 {
				if !strings.Contains(string(r.body), "not known") {
					t.Fatalf("body %s", r.body)
				}
				return
			}
			info, _ := b.Enclave.Info()
			m, err := manifest.Parse(info.Manifest)
			if err != nil {
				t.Fatal(err)
			}
			want, err := auditlog.LogVerifierKey(m.CheckpointVerifierKey, tc.log)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.TrimSpace(string(r.body)); got != want || got != info.CheckpointVerifierKey {
				t.Fatalf("served %s, want %s (Info %s)", got, want, info.CheckpointVerifierKey)
			}
		})
	}
}

// TestBadAuditLogName: the API refuses a name that is not a log name.
func TestBadAuditLogName(t *testing.T) {
	b := testbroker.Start(t, testbroker.Options{})
	for _, name := range []string{"Host-A", "a/b", "-a"} {
		_, err := api.New(api.Config{Issuer: b.URL, Enclave: b.Enclave, Audit: b.Audit, Revocations: b.Revocations, AuditLogName: name})
		if err == nil || !strings.Contains(err.Error(), "invalid audit log name") {
			t.Errorf("AuditLogName %q: %v", name, err)
		}
	}
}
