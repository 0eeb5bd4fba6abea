package attest

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/agentkeys/broker/shared/auditlog"
)

// FuzzSplitBundle: entry bundles come from the untrusted host. splitBundle
// must never panic, never return more entries than asked, and succeed only
// on a bundle that is exactly that many length-prefixed entries.
func FuzzSplitBundle(f *testing.F) {
	f.Add([]byte{0, 1, 'a', 0, 0}, 2)
	f.Add([]byte{0, 5, 'a'}, 1)
	f.Add([]byte{}, 0)
	f.Fuzz(func(t *testing.T, b []byte, max int) {
		if max < 0 || max > 256 {
			return
		}
		es, err := splitBundle(b, max)
		if len(es) > max {
			t.Fatalf("%d entries, max %d", len(es), max)
		}
		if err != nil {
			return
		}
		var re []byte
		for _, e := range es {
			re = binary.BigEndian.AppendUint16(re, uint16(len(e)))
			re = append(re, e...)
		}
		if len(es) != max || string(re) != string(b) {
			t.Fatalf("accepted a bundle that is not %d entries", max)
		}
	})
}

// FuzzJWTEntryID: the token is whatever the auditor was handed.
func FuzzJWTEntryID(f *testing.F) {
	f.Add("eyJhbGciOiJFUzI1NiJ9.eyJqdGkiOiIyNTcifQ.c2ln")
	f.Add("a.b.c")
	f.Add("eyJhbGciOiJFUzI1NiJ9.eyJqdGkiOiJob3N0LWEvMjU3In0.c2ln") // jti host-a/257
	f.Fuzz(func(t *testing.T, s string) {
		if name, i, err := JWTEntryID(s); err == nil && (i < 0 || auditlog.CheckLogName(name) != nil) {
			t.Fatalf("accepted log %q, index %d", name, i)
		}
	})
}

// FuzzParseCloudTrail: CloudTrail files are whatever is in the bucket the
// auditor synced. ParseCloudTrail must never panic, and every session it
// returns has a time and, if it has an index tag, says so.
func FuzzParseCloudTrail(f *testing.F) {
	for _, name := range []string{"match.json", "findings.json", "malformed/bad-time.json", "malformed/bad-tag.json", "malformed/no-records.json"} {
		b, err := os.ReadFile(filepath.Join("testdata", "cloudtrail", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"Records":[null,1,"x",{}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ss, skipped, err := ParseCloudTrail(b, "https://broker.example.com")
		if err != nil {
			if ss != nil || skipped != 0 {
				t.Fatalf("error %v with %d sessions, %d skipped", err, len(ss), skipped)
			}
			return
		}
		for _, s := range ss {
			if s.EventTime.IsZero() {
				t.Fatalf("session %q without a time", s.EventID)
			}
			if !s.HasIndex && s.Index != "" {
				t.Fatalf("index %q without HasIndex", s.Index)
			}
		}
	})
}
