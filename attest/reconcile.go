package attest

// Reconciling CloudTrail with the audit log.
//
// Every JWT the enclave mints carries its log entry id as jti
// (auditlog.EntryID: the index, "NAME/INDEX" in the log named NAME) and, in
// the transitive principal tags of https://aws.amazon.com/tags, the tags
// agentkeys_log_index (the same id) and agentkeys_user_wallet. STS copies a web identity
// token's principal tags into the session, and CloudTrail records each
// AssumeRoleWithWebIdentity call with them. A session whose tags name no
// entry of the verified log, or an entry of another wallet or another time,
// was opened with a token the enclave did not log: the trace a forged token
// (a stolen signing key, a second issuer under the same URL) would leave.
//
// Fields relied on, from AWS's documented CloudTrail record format (not
// checked against a real record here): Records[].eventSource,
// .eventName, .eventTime (RFC 3339), .eventID, .errorCode,
// .userIdentity.identityProvider, .responseElements.provider,
// .requestParameters.principalTags.

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/agentkeys/broker/shared/auditlog"
)

// Principal tag keys the enclave puts in every JWT.
const (
	TagLogIndex   = "agentkeys_log_index"
	TagUserWallet = "agentkeys_user_wallet"
)

// Defaults of the reconcile limits.
const (
	DefaultCloudTrailMaxFile  = 256 << 20 // bytes of one (decompressed) CloudTrail file
	DefaultCloudTrailMaxFiles = 100000    // files under the --cloudtrail paths
	DefaultReconcileSkew      = 5 * time.Minute
)

// Kinds of reconcile finding.
const (
	FindingMissingTag     = "missing_tag"       // no agentkeys_log_index tag
	FindingOtherLog       = "other_log"         // the tag names an entry of another log of the issuer
	FindingUnknownIndex   = "unknown_index"     // no such oidc_jwt entry in the log
	FindingWrongWallet    = "wrong_wallet"      // the entry is another wallet's
	FindingTimeOutOfRange = "time_out_of_range" // the STS call is outside the entry's [time, exp] ± skew
)

// FindingKinds lists the kinds of finding, in report order.
var FindingKinds = []string{FindingMissingTag, FindingOtherLog, FindingUnknownIndex, FindingWrongWallet, FindingTimeOutOfRange}

// STSSession is one successful AssumeRoleWithWebIdentity call for the issuer,
// as CloudTrail recorded it.
type STSSession struct {
	File      string    `json:"file"`
	EventID   string    `json:"event_id"`
	EventTime time.Time `json:"event_time"`
	// Index and Wallet are the agentkeys_log_index and agentkeys_user_wallet
	// principal tags as recorded ("" when absent); HasIndex says whether
	// the index tag was there at all.
	Index    string `json:"log_index,omitempty"`
	HasIndex bool   `json:"-"`
	Wallet   string `json:"wallet,omitempty"`
}

// ctRecord holds the fields of a CloudTrail record reconcile reads.
type ctRecord struct {
	EventSource  string `json:"eventSource"`
	EventName    string `json:"eventName"`
	EventTime    string `json:"eventTime"`
	EventID      string `json:"eventID"`
	ErrorCode    string `json:"errorCode"`
	UserIdentity *struct {
		IdentityProvider string `json:"identityProvider"`
	} `json:"userIdentity"`
	RequestParameters *struct {
		PrincipalTags map[string]json.RawMessage `json:"principalTags"`
	} `json:"requestParameters"`
	ResponseElements *struct {
		Provider string `json:"provider"`
	} `json:"responseElements"`
}

// ParseCloudTrail decodes one CloudTrail log file ({"Records":[…]}) and
// returns the successful AssumeRoleWithWebIdentity sessions of issuer (its
// URL, https://broker.example.com) and how many records it skipped (other
// events, other issuers, failed calls). A file that is not a CloudTrail log,
// or a record for the issuer whose time or tags cannot be read, is an error.
func ParseCloudTrail(b []byte, issuer string) (sessions []STSSession, skipped int, err error) {
	var file struct {
		Records *[]json.RawMessage `json:"Records"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&file); err != nil {
		return nil, 0, fmt.Errorf("not a CloudTrail log file (a JSON object with Records): %w", err)
	}
	if dec.More() {
		return nil, 0, errors.New("not a CloudTrail log file: data after the JSON object")
	}
	if file.Records == nil {
		return nil, 0, errors.New("not a CloudTrail log file: no Records array")
	}
	for i, raw := range *file.Records {
		var r ctRecord
		if err := json.Unmarshal(raw, &r); err != nil {
			return nil, 0, fmt.Errorf("record %d is not a CloudTrail record: %w", i, err)
		}
		if r.EventSource != "sts.amazonaws.com" || r.EventName != "AssumeRoleWithWebIdentity" || r.ErrorCode != "" || !forIssuer(r, issuer) {
			skipped++
			continue
		}
		t, err := time.Parse(time.RFC3339, r.EventTime)
		if err != nil {
			return nil, 0, fmt.Errorf("record %d (event %s): eventTime %q is not RFC 3339", i, r.EventID, r.EventTime)
		}
		s := STSSession{EventID: r.EventID, EventTime: t}
		if r.RequestParameters != nil {
			for k, v := range r.RequestParameters.PrincipalTags {
				var val string
				if err := json.Unmarshal(v, &val); err != nil {
					return nil, 0, fmt.Errorf("record %d (event %s): principal tag %q is not a string", i, r.EventID, k)
				}
				switch k {
				case TagLogIndex:
					s.Index, s.HasIndex = val, true
				case TagUserWallet:
					s.Wallet = val
				}
			}
		}
		sessions = append(sessions, s)
	}
	return sessions, skipped, nil
}

// forIssuer reports whether a record names issuer as its identity provider:
// userIdentity.identityProvider or responseElements.provider is the issuer
// URL, the URL without its scheme, or the ARN of an IAM OIDC provider for it
// (arn:aws:iam::ACCOUNT:oidc-provider/HOST[/PATH]).
func forIssuer(r ctRecord, issuer string) bool {
	bare := strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(issuer, "https://"), "http://"), "/")
	match := func(v string) bool {
		v = strings.TrimSuffix(v, "/")
		if v == "" {
			return false
		}
		if v == strings.TrimSuffix(issuer, "/") || v == bare {
			return true
		}
		_, after, ok := strings.Cut(v, ":oidc-provider/")
		return ok && strings.HasPrefix(v, "arn:") && after == bare
	}
	return (r.UserIdentity != nil && match(r.UserIdentity.IdentityProvider)) ||
		(r.ResponseElements != nil && match(r.ResponseElements.Provider))
}

// CloudTrailLimits bound ReadCloudTrail.
type CloudTrailLimits struct {
	MaxFile  int64 // bytes of one file, after decompression (default DefaultCloudTrailMaxFile)
	MaxFiles int   // files read in all (default DefaultCloudTrailMaxFiles)
}

// ReadCloudTrail reads CloudTrail log files: each path is a file (.json, or
// .json.gz as CloudTrail delivers them) or a directory, walked for its
// .json and .json.gz files (as `aws s3 sync` of a trail bucket leaves them),
// skipping CloudTrail-Digest directories.
// It returns the issuer's sessions, in file order, and the records skipped.
func ReadCloudTrail(paths []string, issuer string, lim CloudTrailLimits) ([]STSSession, int, error) {
	if lim.MaxFile <= 0 {
		lim.MaxFile = DefaultCloudTrailMaxFile
	}
	if lim.MaxFiles <= 0 {
		lim.MaxFiles = DefaultCloudTrailMaxFiles
	}
	var files []string
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, 0, fmt.Errorf("failed to read CloudTrail logs: %w", err)
		}
		if !st.IsDir() {
			files = append(files, p)
			continue
		}
		err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && d.Name() == "CloudTrail-Digest" {
				return filepath.SkipDir // digest files sign the logs; they hold no records
			}
			if !d.IsDir() && (strings.HasSuffix(path, ".json.gz") || strings.HasSuffix(path, ".json")) {
				files = append(files, path)
				if len(files) > lim.MaxFiles {
					return fmt.Errorf("more than %d files", lim.MaxFiles)
				}
			}
			return nil
		})
		if err != nil {
			return nil, 0, fmt.Errorf("failed to list CloudTrail logs under %s: %w", p, err)
		}
	}
	if len(files) > lim.MaxFiles {
		return nil, 0, fmt.Errorf("more than %d CloudTrail files: name fewer, or raise the limit", lim.MaxFiles)
	}
	sort.Strings(files)
	var all []STSSession
	skipped := 0
	for _, f := range files {
		b, err := readCloudTrailFile(f, lim.MaxFile)
		if err != nil {
			return nil, 0, err
		}
		ss, sk, err := ParseCloudTrail(b, issuer)
		if err != nil {
			return nil, 0, fmt.Errorf("%s: %w", f, err)
		}
		for i := range ss {
			ss[i].File = f
		}
		all = append(all, ss...)
		skipped += sk
	}
	return all, skipped, nil
}

func readCloudTrailFile(path string, max int64) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("failed to read CloudTrail log: %w", err)
	}
	defer fh.Close()
	var r io.Reader = fh
	if strings.HasSuffix(path, ".gz") {
		zr, err := gzip.NewReader(fh)
		if err != nil {
			return nil, fmt.Errorf("%s is not gzip: %w", path, err)
		}
		defer zr.Close()
		r = zr
	}
	b, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, fmt.Errorf("failed to read %s: %w", path, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes (decompressed): raise --max-file", path, max)
	}
	return b, nil
}

// Finding is one session that does not match the log.
type Finding struct {
	Kind    string     `json:"kind"`
	Session STSSession `json:"session"`
	Detail  string     `json:"detail"`
}

// Reconciliation is the result of Reconcile.
type Reconciliation struct {
	Sessions int            `json:"sessions"`
	Matched  int            `json:"matched"`
	Skipped  int            `json:"skipped_records"`
	Findings []Finding      `json:"findings"`
	ByKind   map[string]int `json:"findings_by_kind"`
}

// OK reports whether every session matched.
func (r Reconciliation) OK() bool { return len(r.Findings) == 0 }

// WantedIndexes returns the log indexes the sessions name (in any log: the
// log's name is known once its checkpoint is verified), for collecting only
// those entries while the log is verified.
func WantedIndexes(sessions []STSSession) map[int64]bool {
	want := map[int64]bool{}
	for _, s := range sessions {
		if _, i, err := auditlog.ParseEntryID(s.Index); err == nil {
			want[i] = true
		}
	}
	return want
}

// Reconcile checks every session against the log its tag names, among
// logs: by log name ("" for the default log: CheckpointLogName), the
// entries of each verified log at the indexes the sessions name (raw bytes
// by index; an index not in a log's map is not in that log). A session
// whose tag names a log of the issuer not in logs is an other_log finding:
// reconcile it with that log too. skew widens each entry's [time, exp]
// window on both sides.
func Reconcile(sessions []STSSession, logs map[string]map[int64][]byte, skew time.Duration) Reconciliation {
	r := Reconciliation{Sessions: len(sessions), ByKind: map[string]int{}, Findings: []Finding{}}
	for _, k := range FindingKinds {
		r.ByKind[k] = 0
	}
	add := func(kind string, s STSSession, format string, args ...any) {
		r.Findings = append(r.Findings, Finding{Kind: kind, Session: s, Detail: fmt.Sprintf(format, args...)})
		r.ByKind[kind]++
	}
	var given []string
	for name := range logs {
		given = append(given, LogLabel(name))
	}
	sort.Strings(given)
	for _, s := range sessions {
		if !s.HasIndex {
			add(FindingMissingTag, s, "the session has no %s principal tag: its token was not minted by this issuer's enclave", TagLogIndex)
			continue
		}
		name, i, err := auditlog.ParseEntryID(s.Index)
		if err != nil {
			add(FindingUnknownIndex, s, "%s %.100q is not an audit log entry id (INDEX, or LOGNAME/INDEX for a named log)", TagLogIndex, s.Index)
			continue
		}
		entries, ok := logs[name]
		if !ok {
			add(FindingOtherLog, s, "%s %q names entry %d of %s, not of the logs reconciled (%s): reconcile it with that log too (another --log)",
				TagLogIndex, s.Index, i, LogLabel(name), strings.Join(given, ", "))
			continue
		}
		b, ok := entries[i]
		if !ok {
			add(FindingUnknownIndex, s, "%s has no entry %d", LogLabel(name), i)
			continue
		}
		e, err := auditlog.Parse(b)
		switch {
		case err != nil:
			add(FindingUnknownIndex, s, "entry %d is not an audit log entry: %v", i, err)
			continue
		case e.Kind != auditlog.KindOIDCJWT || e.JTI != s.Index:
			add(FindingUnknownIndex, s, "entry %d is not the oidc_jwt entry of a minted JWT (kind %s, jti %q)", i, e.Kind, e.JTI)
			continue
		}
		if s.Wallet != e.Wallet {
			add(FindingWrongWallet, s, "entry %d is wallet %s, the session's %s is %q", i, e.Wallet, TagUserWallet, s.Wallet)
			continue
		}
		from := time.Unix(e.Time, 0).Add(-skew)
		end := e.ExpiresAt
		if end < e.Time {
			end = e.Time
		}
		to := time.Unix(end, 0).Add(skew)
		if s.EventTime.Before(from) || s.EventTime.After(to) {
			add(FindingTimeOutOfRange, s, "the STS call at %s is outside entry %d's [%s, %s] (time, exp ± %s)", s.EventTime.UTC().Format(time.RFC3339),
				i, time.Unix(e.Time, 0).UTC().Format(time.RFC3339), time.Unix(end, 0).UTC().Format(time.RFC3339), skew)
			continue
		}
		r.Matched++
	}
	return r
}

// WriteText writes one line per finding and a summary line.
func (r Reconciliation) WriteText(w io.Writer) {
	for _, f := range r.Findings {
		fmt.Fprintf(w, "%s: event %s at %s (%s): %s\n", f.Kind, f.Session.EventID, f.Session.EventTime.UTC().Format(time.RFC3339), f.Session.File, f.Detail)
	}
	var kinds []string
	for _, k := range FindingKinds {
		kinds = append(kinds, fmt.Sprintf("%s %d", k, r.ByKind[k]))
	}
	verdict := "PASS"
	if !r.OK() {
		verdict = "FAIL"
	}
	fmt.Fprintf(w, "%s: %d sessions read, %d matched, %d findings (%s); %d other records skipped\n",
		verdict, r.Sessions, r.Matched, len(r.Findings), strings.Join(kinds, ", "), r.Skipped)
}
