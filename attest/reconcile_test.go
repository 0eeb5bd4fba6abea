package attest_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentkeys/broker/attest"
	"github.com/agentkeys/broker/host/tiles"
	"github.com/agentkeys/broker/host/tiles/tilestest"
	"github.com/agentkeys/broker/shared/auditlog"
)

const (
	ctIssuer  = "https://broker.example.com"
	ctWallet1 = "0x2c7ea6d19df0dcf1c91b351f975fb2827ff80e5f"
	ctWallet2 = "0x00000000000000000000000000000000000000aa"
)

// ctLog is the log the CloudTrail fixtures were written against: entry 1 is
// a host-asserted aws_creds entry, entry 3 the oidc_jwt entry of a JWT
// minted for ctWallet1 at 2026-01-01T00:00:00Z, entry 5 one for ctWallet2 at
// 01:00:00Z, each valid 15 minutes; the others are filler. It is the
// default log of the issuer ctIssuer.
func ctLog(t *testing.T) *tilestest.Log { return ctNamedLog(t, "") }

// ctNamedLog is ctLog as the log named name of the same issuer: its entries'
// jti name the log (name/INDEX), its checkpoints are signed under the origin
// broker.example.com/audit/name, and the key is returned.
func ctNamedLog(t *testing.T, name string) *tilestest.Log {
	t.Helper()
	l, _ := ctLogKey(t, name)
	return l
}

func ctLogKey(t *testing.T, name string) (*tilestest.Log, string) {
	t.Helper()
	mint := func(i int64, wallet string, at int64) []byte {
		b, err := auditlog.Entry{Version: auditlog.Version, Time: at, Kind: auditlog.KindOIDCJWT, Outcome: auditlog.OutcomeOK,
			Wallet: wallet, SessionID: "s", Audience: "sts.amazonaws.com", ExpiresAt: at + 900,
			JTI: auditlog.EntryID(name, i), JWTSHA256: auditlog.JWTHash("jwt " + auditlog.EntryID(name, i))}.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	creds, err := auditlog.Entry{Version: auditlog.Version, Time: 1767225601, Kind: auditlog.KindAWSCreds, Outcome: auditlog.OutcomeOK,
		Wallet: ctWallet1, JTI: "0", AccessKeyID: "ASIAEXAMPLE", HostAsserted: true}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	signer, key := tilestest.NewKey(auditlog.LogOrigin(tilestest.Origin, name), "tilestest")
	l := tilestest.New(signer)
	l.AppendN(1)
	l.Append(creds)
	l.AppendN(1)
	l.Append(mint(3, ctWallet1, 1767225600))
	l.AppendN(1)
	l.Append(mint(5, ctWallet2, 1767229200))
	l.AppendN(4)
	return l, key
}

// reconcile verifies log (the default log of ctIssuer) and reconciles the
// CloudTrail paths with it.
func reconcile(t *testing.T, log attest.AuditLog, paths ...string) attest.Reconciliation {
	t.Helper()
	return reconcileKey(t, log, "", paths...)
}

// reconcileKey is reconcile for the log of key (tilestest's default log's
// when ""), whose name its checkpoint's origin gives.
func reconcileKey(t *testing.T, log attest.AuditLog, key string, paths ...string) attest.Reconciliation {
	t.Helper()
	return reconcileLogs(t, []attest.AuditLog{log}, []string{key}, paths...)
}

// reconcileLogs verifies each log with its key and reconciles the
// CloudTrail paths with all of them, each session with the log it names.
func reconcileLogs(t *testing.T, logs []attest.AuditLog, keys []string, paths ...string) attest.Reconciliation {
	t.Helper()
	sessions, skipped, err := attest.ReadCloudTrail(paths, ctIssuer, attest.CloudTrailLimits{})
	if err != nil {
		t.Fatal(err)
	}
	want := attest.WantedIndexes(sessions)
	byLog := map[string]map[int64][]byte{}
	for k, log := range logs {
		entries := map[int64][]byte{}
		res := verifyLog(t, log, attest.AuditOptions{Key: keys[k], Entry: func(i int64, e []byte) {
			if want[i] {
				entries[i] = append([]byte(nil), e...)
			}
		}})
		mustPass(t, res.Report)
		name, known, err := attest.CheckpointLogName(res.Checkpoint, "", ctIssuer)
		if err != nil || !known {
			t.Fatalf("CheckpointLogName: %v (known %v)", err, known)
		}
		byLog[name] = entries
	}
	r := attest.Reconcile(sessions, byLog, attest.DefaultReconcileSkew)
	r.Skipped = skipped
	return r
}

func ct(name string) string { return filepath.Join("testdata", "cloudtrail", name) }

func TestReconcileMatch(t *testing.T) {
	log := serveLog(t, ctLog(t), tiles.Options{})
	for _, tc := range []struct {
		name          string
		paths         []string
		skipped, want int
	}{
		{"file", []string{ct("match.json")}, 5, 2},
		{"gzip directory", []string{ct("gz")}, 1, 2},
		{"both", []string{ct("match.json"), ct("gz")}, 6, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := reconcile(t, log, tc.paths...)
			if !r.OK() || r.Sessions != tc.want || r.Matched != tc.want || r.Skipped != tc.skipped {
				var b strings.Builder
				r.WriteText(&b)
				t.Fatalf("sessions %d, matched %d, skipped %d, want %d, %d, %d:\n%s", r.Sessions, r.Matched, r.Skipped, tc.want, tc.want, tc.skipped, b.String())
			}
		})
	}
}

func TestReconcileFindings(t *testing.T) {
	r := reconcile(t, serveLog(t, ctLog(t), tiles.Options{}), ct("findings.json"))
	want := []struct{ event, kind, detail string }{
		{"1a1b2c3d-0000-4000-8000-000000000001", attest.FindingMissingTag, "no agentkeys_log_index principal tag"},
		{"1a1b2c3d-0000-4000-8000-000000000002", attest.FindingMissingTag, "no agentkeys_log_index principal tag"},
		{"1a1b2c3d-0000-4000-8000-000000000003", attest.FindingUnknownIndex, "the default log has no entry 99"},
		{"1a1b2c3d-0000-4000-8000-000000000004", attest.FindingUnknownIndex, "entry 1 is not the oidc_jwt entry of a minted JWT (kind aws_creds"},
		{"1a1b2c3d-0000-4000-8000-000000000005", attest.FindingUnknownIndex, `"x3" is not an audit log entry id`},
		{"1a1b2c3d-0000-4000-8000-000000000006", attest.FindingWrongWallet, "entry 3 is wallet " + ctWallet1},
		{"1a1b2c3d-0000-4000-8000-000000000007", attest.FindingTimeOutOfRange, "the STS call at 2026-01-01T02:00:00Z is outside entry 5's"},
	}
	if r.OK() || len(r.Findings) != len(want) || r.Sessions != 8 || r.Matched != 1 {
		t.Fatalf("%d findings of %d sessions, %d matched; want %d of 8, 1 matched: %+v", len(r.Findings), r.Sessions, r.Matched, len(want), r.Findings)
	}
	for i, w := range want {
		f := r.Findings[i]
		if f.Session.EventID != w.event || f.Kind != w.kind || !strings.Contains(f.Detail, w.detail) {
			t.Errorf("finding %d: %s %s %q, want %s %s containing %q", i, f.Session.EventID, f.Kind, f.Detail, w.event, w.kind, w.detail)
		}
	}
	if r.ByKind[attest.FindingMissingTag] != 2 || r.ByKind[attest.FindingUnknownIndex] != 3 || r.ByKind[attest.FindingWrongWallet] != 1 || r.ByKind[attest.FindingTimeOutOfRange] != 1 {
		t.Errorf("by kind %v", r.ByKind)
	}
	var b strings.Builder
	r.WriteText(&b)
	if !strings.Contains(b.String(), "FAIL: 8 sessions read, 1 matched, 7 findings (missing_tag 2, other_log 0, unknown_index 3, wrong_wallet 1, time_out_of_range 1)") {
		t.Errorf("summary:\n%s", b.String())
	}
}

// TestReconcileNamedLog: named.json's sessions name entries of the logs
// host-a, host-b and the default log of one issuer. Reconciled with the log
// host-a, those of host-a match (or are unknown there) and every other log's
// is an other_log finding naming that log; reconciled with the default log,
// the same holds the other way round. Without log names in the tag, "3" of
// host-a and "3" of the default log would be the same session.
func TestReconcileNamedLog(t *testing.T) {
	named, key := ctLogKey(t, "host-a")
	type finding struct{ event, kind, detail string }
	for _, tc := range []struct {
		name    string
		log     attest.AuditLog
		key     string
		matched int
		want    []finding
		summary string
	}{
		{"host-a", serveLog(t, named, tiles.Options{}), key, 2, []finding{
			{"2b000000-0000-4000-8000-000000000003", attest.FindingOtherLog, `"host-b/3" names entry 3 of the log "host-b", not of the logs reconciled (the log "host-a")`},
			{"2b000000-0000-4000-8000-000000000004", attest.FindingOtherLog, `"3" names entry 3 of the default log, not of the logs reconciled (the log "host-a")`},
			{"2b000000-0000-4000-8000-000000000005", attest.FindingUnknownIndex, `the log "host-a" has no entry 99`},
			{"2b000000-0000-4000-8000-000000000006", attest.FindingUnknownIndex, `"host-a/03" is not an audit log entry id`},
		}, "FAIL: 6 sessions read, 2 matched, 4 findings (missing_tag 0, other_log 2, unknown_index 2, wrong_wallet 0, time_out_of_range 0)"},
		{"default", serveLog(t, ctLog(t), tiles.Options{}), "", 1, []finding{
			{"2b000000-0000-4000-8000-000000000001", attest.FindingOtherLog, `"host-a/3" names entry 3 of the log "host-a", not of the logs reconciled (the default log)`},
			{"2b000000-0000-4000-8000-000000000002", attest.FindingOtherLog, `"host-a/5" names entry 5 of the log "host-a"`},
			{"2b000000-0000-4000-8000-000000000003", attest.FindingOtherLog, `"host-b/3" names entry 3 of the log "host-b"`},
			{"2b000000-0000-4000-8000-000000000005", attest.FindingOtherLog, `"host-a/99" names entry 99 of the log "host-a"`},
			{"2b000000-0000-4000-8000-000000000006", attest.FindingUnknownIndex, `"host-a/03" is not an audit log entry id`},
		}, "FAIL: 6 sessions read, 1 matched, 5 findings (missing_tag 0, other_log 4, unknown_index 1, wrong_wallet 0, time_out_of_range 0)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := reconcileKey(t, tc.log, tc.key, ct("named.json"))
			if r.Sessions != 6 || r.Matched != tc.matched || len(r.Findings) != len(tc.want) {
				t.Fatalf("%d sessions, %d matched, %d findings; want 6, %d, %d: %+v", r.Sessions, r.Matched, len(r.Findings), tc.matched, len(tc.want), r.Findings)
			}
			for i, w := range tc.want {
				f := r.Findings[i]
				if f.Session.EventID != w.event || f.Kind != w.kind || !strings.Contains(f.Detail, w.detail) {
					t.Errorf("finding %d: %s %s %q, want %s %s containing %q", i, f.Session.EventID, f.Kind, f.Detail, w.event, w.kind, w.detail)
				}
			}
			var b strings.Builder
			r.WriteText(&b)
			if !strings.Contains(b.String(), tc.summary) {
				t.Errorf("summary:\n%s\nwant %q", b.String(), tc.summary)
			}
		})
	}
}

// TestReconcileTwoLogs: reconciled with the logs host-a and the default log
// together, each session of named.json is checked against the log its tag
// names: "host-a/3", "host-a/5" and "3" match, entry 3 of host-a and of the
// default log being different entries; host-b, not given, is other_log.
func TestReconcileTwoLogs(t *testing.T) {
	named, key := ctLogKey(t, "host-a")
	logs := []attest.AuditLog{serveLog(t, named, tiles.Options{}), serveLog(t, ctLog(t), tiles.Options{})}
	r := reconcileLogs(t, logs, []string{key, ""}, ct("named.json"))
	want := []struct{ event, kind, detail string }{
		{"2b000000-0000-4000-8000-000000000003", attest.FindingOtherLog, `"host-b/3" names entry 3 of the log "host-b", not of the logs reconciled (the default log, the log "host-a")`},
		{"2b000000-0000-4000-8000-000000000005", attest.FindingUnknownIndex, `the log "host-a" has no entry 99`},
		{"2b000000-0000-4000-8000-000000000006", attest.FindingUnknownIndex, `"host-a/03" is not an audit log entry id`},
	}
	if r.Sessions != 6 || r.Matched != 3 || len(r.Findings) != len(want) {
		t.Fatalf("%d sessions, %d matched, %d findings; want 6, 3, %d: %+v", r.Sessions, r.Matched, len(r.Findings), len(want), r.Findings)
	}
	for i, w := range want {
		f := r.Findings[i]
		if f.Session.EventID != w.event || f.Kind != w.kind || !strings.Contains(f.Detail, w.detail) {
			t.Errorf("finding %d: %s %s %q, want %s %s containing %q", i, f.Session.EventID, f.Kind, f.Detail, w.event, w.kind, w.detail)
		}
	}
}

// TestCheckpointLogName: the log's name is its origin relative to the
// default log's, which the manifest's key or the issuer gives.
func TestCheckpointLogName(t *testing.T) {
	_, manifestKey := tilestest.NewKey(tilestest.Origin, "tilestest")
	for _, tc := range []struct {
		origin, manifestKey, issuer string
		name                        string
		known, ok                   bool
	}{
		{"broker.example.com/audit", "", ctIssuer, "", true, true},
		{"broker.example.com/audit/host-a", "", ctIssuer, "host-a", true, true},
		{"broker.example.com/audit/host-a", "", ctIssuer + "/", "host-a", true, true},
		{"broker.example.com/audit/host-a", manifestKey, "", "host-a", true, true},
		{"broker.example.com/audit/host-a", manifestKey, "https://other.example", "host-a", true, true},
		{"broker.example.com/x/audit/host-a", "", "https://broker.example.com/x", "host-a", true, true},
		{"broker.example.com/audit/host-a", "", "", "", false, true},
		{"other.example/audit/host-a", "", ctIssuer, "", false, false},
		{"broker.example.com/audit/Host-A", "", ctIssuer, "", false, false},
		{"broker.example.com/audit/a/b", manifestKey, "", "", false, false},
		{"broker.example.com/audit", "", "not a url", "", false, false},
	} {
		name, known, err := attest.CheckpointLogName([]byte(tc.origin+"\n5\nAAAA\n"), tc.manifestKey, tc.issuer)
		if name != tc.name || known != tc.known || (err == nil) != tc.ok {
			t.Errorf("CheckpointLogName(%q, %q, %q) = %q, %v, %v; want %q, %v, ok %v", tc.origin, tc.manifestKey, tc.issuer, name, known, err, tc.name, tc.known, tc.ok)
		}
	}
}

// TestReconcileSkew: the window is the entry's [time, exp] widened by skew
// on both sides, no more.
func TestReconcileSkew(t *testing.T) {
	entry, err := auditlog.Entry{Version: auditlog.Version, Time: 1000, Kind: auditlog.KindOIDCJWT, Outcome: auditlog.OutcomeOK,
		Wallet: ctWallet1, JTI: "0", ExpiresAt: 1900}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		at int64
		ok bool
	}{{939, false}, {940, true}, {1500, true}, {1960, true}, {1961, false}} {
		s := attest.STSSession{EventID: "e", EventTime: time.Unix(tc.at, 0), Index: "0", HasIndex: true, Wallet: ctWallet1}
		if r := attest.Reconcile([]attest.STSSession{s}, map[string]map[int64][]byte{"": {0: entry}}, time.Minute); r.OK() != tc.ok {
			t.Errorf("call at %d: ok %v, want %v (%+v)", tc.at, r.OK(), tc.ok, r.Findings)
		}
	}
}

func TestReadCloudTrailMalformed(t *testing.T) {
	for _, tc := range []struct{ file, want string }{
		{"not-json.json", "not a CloudTrail log file"},
		{"no-records.json", "no Records array"},
		{"bad-time.json", `eventTime "yesterday" is not RFC 3339`},
		{"bad-tag.json", `principal tag "agentkeys_log_index" is not a string`},
		{"not-gzip.json.gz", "is not gzip"},
	} {
		_, _, err := attest.ReadCloudTrail([]string{ct("malformed/" + tc.file)}, ctIssuer, attest.CloudTrailLimits{})
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.file) {
			t.Errorf("%s: error %v, want one naming the file and %q", tc.file, err, tc.want)
		}
	}
	if _, _, err := attest.ReadCloudTrail([]string{ct("match.json")}, ctIssuer, attest.CloudTrailLimits{MaxFile: 100}); err == nil || !strings.Contains(err.Error(), "larger than 100 bytes") {
		t.Errorf("over --max-file: %v", err)
	}
	if _, _, err := attest.ReadCloudTrail([]string{ct("gz")}, ctIssuer, attest.CloudTrailLimits{MaxFiles: 1}); err == nil || !strings.Contains(err.Error(), "more than 1 files") {
		t.Errorf("over --max-files: %v", err)
	}
	if _, _, err := attest.ReadCloudTrail([]string{ct("missing.json")}, ctIssuer, attest.CloudTrailLimits{}); err == nil || !os.IsNotExist(errorsUnwrapAll(err)) {
		t.Errorf("missing file: %v", err)
	}
}

func errorsUnwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok || u.Unwrap() == nil {
			return err
		}
		err = u.Unwrap()
	}
}

// TestReconcileEntriesOnlyFromVerifiedRead: AuditOptions.Entry sees every
// entry of the verified log once, in index order.
func TestReconcileEntriesOnlyFromVerifiedRead(t *testing.T) {
	l := ctLog(t)
	var got []int64
	res := verifyLog(t, serveLog(t, l, tiles.Options{}), attest.AuditOptions{Entry: func(i int64, _ []byte) { got = append(got, i) }})
	mustPass(t, res.Report)
	if int64(len(got)) != res.Tree.N {
		t.Fatalf("Entry called %d times, log size %d", len(got), res.Tree.N)
	}
	for i, g := range got {
		if g != int64(i) {
			t.Fatalf("Entry call %d had index %d", i, g)
		}
	}
}
