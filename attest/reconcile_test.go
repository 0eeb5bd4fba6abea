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
// 01:00:00Z, each valid 15 minutes; the others are filler.
func ctLog(t *testing.T) *tilestest.Log {
	t.Helper()
	mint := func(i int64, wallet string, at int64) []byte {
		b, err := auditlog.Entry{Version: auditlog.Version, Time: at, Kind: auditlog.KindOIDCJWT, Outcome: auditlog.OutcomeOK,
			Wallet: wallet, SessionID: "s", Audience: "sts.amazonaws.com", ExpiresAt: at + 900,
			JTI: auditlog.IndexString(i), JWTSHA256: auditlog.JWTHash("jwt " + auditlog.IndexString(i))}.Marshal()
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
	l := tilestest.New(nil)
	l.AppendN(1)
	l.Append(creds)
	l.AppendN(1)
	l.Append(mint(3, ctWallet1, 1767225600))
	l.AppendN(1)
	l.Append(mint(5, ctWallet2, 1767229200))
	l.AppendN(4)
	return l
}

// reconcile verifies log and reconciles the CloudTrail paths with it.
func reconcile(t *testing.T, log attest.AuditLog, paths ...string) attest.Reconciliation {
	t.Helper()
	sessions, skipped, err := attest.ReadCloudTrail(paths, ctIssuer, attest.CloudTrailLimits{})
	if err != nil {
		t.Fatal(err)
	}
	want := attest.WantedIndexes(sessions)
	entries := map[int64][]byte{}
	res := verifyLog(t, log, attest.AuditOptions{Entry: func(i int64, e []byte) {
		if want[i] {
			entries[i] = append([]byte(nil), e...)
		}
	}})
	mustPass(t, res.Report)
	r := attest.Reconcile(sessions, entries, attest.DefaultReconcileSkew)
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
		{"1a1b2c3d-0000-4000-8000-000000000003", attest.FindingUnknownIndex, "the log has no entry 99"},
		{"1a1b2c3d-0000-4000-8000-000000000004", attest.FindingUnknownIndex, "entry 1 is not the oidc_jwt entry of a minted JWT (kind aws_creds"},
		{"1a1b2c3d-0000-4000-8000-000000000005", attest.FindingUnknownIndex, `"x3" is not a decimal log index`},
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
	if !strings.Contains(b.String(), "FAIL: 8 sessions read, 1 matched, 7 findings (missing_tag 2, unknown_index 3, wrong_wallet 1, time_out_of_range 1)") {
		t.Errorf("summary:\n%s", b.String())
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
		if r := attest.Reconcile([]attest.STSSession{s}, map[int64][]byte{0: entry}, time.Minute); r.OK() != tc.ok {
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
