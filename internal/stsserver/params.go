package stsserver

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// STS parameter constraints (from the API reference).
var (
	sessionNamePattern = regexp.MustCompile(`^[\w+=,.@-]*$`)
	tagKeyPattern      = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]+$`)
	tagValuePattern    = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$`)
)

const (
	minDuration = 900
	maxDuration = 43200
	maxTags     = 50
)

func parseInt(s string) (int, error) {
	if s == "" {
		return 0, errors.New("empty")
	}
	n, err := strconv.ParseInt(s, 10, 32)
	return int(n), err
}

func optional(p url.Values, name string) *string {
	if !p.Has(name) {
		return nil
	}
	v := p.Get(name)
	return &v
}

// checkLength adds a violation for a parameter outside [min, max] characters;
// a required parameter must be present.
func checkLength(v *validation, value *string, member string, required bool, min, max int) {
	if value == nil {
		if required {
			v.add(nil, member, "not be null")
		}
		return
	}
	n := utf8.RuneCountInString(*value)
	if n < min {
		v.add(value, member, fmt.Sprintf("have length greater than or equal to %d", min))
	}
	if n > max {
		v.add(value, member, fmt.Sprintf("have length less than or equal to %d", max))
	}
}

// commonParams validates the parameters AssumeRole and
// AssumeRoleWithWebIdentity share and returns the requested duration (0 if
// absent).
func commonParams(v *validation, p url.Values) (duration int) {
	checkLength(v, optional(p, "RoleArn"), "roleArn", true, 20, 2048)
	name := optional(p, "RoleSessionName")
	checkLength(v, name, "roleSessionName", true, 2, 64)
	if name != nil && !sessionNamePattern.MatchString(*name) {
		v.add(name, "roleSessionName", `satisfy regular expression pattern: [\w+=,.@-]*`)
	}
	if d := optional(p, "DurationSeconds"); d != nil {
		n, err := parseInt(*d)
		switch {
		case err != nil:
			v.add(d, "durationSeconds", "be an integer")
		case n < minDuration:
			v.add(d, "durationSeconds", fmt.Sprintf("have value greater than or equal to %d", minDuration))
		case n > maxDuration:
			v.add(d, "durationSeconds", fmt.Sprintf("have value less than or equal to %d", maxDuration))
		default:
			duration = n
		}
	}
	return duration
}

// sessionDuration applies the default and the role's (or the role chain's)
// maximum to a requested duration.
func sessionDuration(requested int, max time.Duration, chained bool) (time.Duration, *stsError) {
	d := time.Duration(requested) * time.Second
	if requested == 0 {
		d = time.Hour
	}
	if chained && d > time.Hour {
		return 0, newError("ValidationError", msgChainedSession)
	}
	if d > max {
		return 0, newError("ValidationError", msgMaxSession)
	}
	return d, nil
}

func checkSourceIdentity(v *validation, value *string) {
	checkLength(v, value, "sourceIdentity", false, 2, 64)
	if value != nil && !sessionNamePattern.MatchString(*value) {
		v.add(value, "sourceIdentity", `satisfy regular expression pattern: [\w+=,.@-]*`)
	}
}

// sessionTags are session tags in the order given, with their transitive keys.
type sessionTags struct {
	keys       []string
	values     map[string]string
	transitive []string
}

// add adds a tag, refusing a key already present in another case.
func (t *sessionTags) add(key, value string) error {
	if t.values == nil {
		t.values = map[string]string{}
	}
	if _, ok := t.lookup(key); ok {
		return errors.New("Duplicate tag keys found. Please note that Tag keys are case insensitive.")
	}
	t.keys = append(t.keys, key)
	t.values[key] = value
	return nil
}

// lookup finds a tag ignoring the key's case, as IAM does.
func (t *sessionTags) lookup(key string) (string, bool) {
	for _, k := range t.keys {
		if strings.EqualFold(k, key) {
			return t.values[k], true
		}
	}
	return "", false
}

// checkTag checks one tag against STS's limits.
func checkTag(key, value string) error {
	if n := utf8.RuneCountInString(key); n < 1 || n > 128 || !tagKeyPattern.MatchString(key) {
		return fmt.Errorf("tag key %q must be 1 to 128 characters of [\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]", key)
	}
	if n := utf8.RuneCountInString(value); n > 256 || !tagValuePattern.MatchString(value) {
		return fmt.Errorf("tag value %q must be 0 to 256 characters of [\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]", value)
	}
	return nil
}

// setTransitive sets the transitive keys, each of which must be a tag.
func (t *sessionTags) setTransitive(keys []string) error {
	if len(keys) > maxTags {
		return fmt.Errorf("at most %d transitive tag keys are allowed", maxTags)
	}
	for _, k := range keys {
		if _, ok := t.lookup(k); !ok {
			return fmt.Errorf("transitive tag key %q is not a session tag", k)
		}
	}
	t.transitive = keys
	return nil
}

// queryTags reads Tags.member.N.Key/Value and TransitiveTagKeys.member.N.
func queryTags(v *validation, p url.Values) (sessionTags, *stsError) {
	var t sessionTags
	for i := 1; ; i++ {
		key, value := optional(p, fmt.Sprintf("Tags.member.%d.Key", i)), optional(p, fmt.Sprintf("Tags.member.%d.Value", i))
		if key == nil && value == nil {
			break
		}
		if i > maxTags {
			s := "Tags"
			v.add(&s, "tags", fmt.Sprintf("have length less than or equal to %d", maxTags))
			return t, v.err()
		}
		keyMember, valueMember := fmt.Sprintf("tags.%d.member.key", i), fmt.Sprintf("tags.%d.member.value", i)
		checkLength(v, key, keyMember, true, 1, 128)
		checkLength(v, value, valueMember, true, 0, 256)
		if key == nil || value == nil {
			continue
		}
		if err := checkTag(*key, *value); err != nil {
			v.add(key, fmt.Sprintf("tags.%d.member", i), "satisfy the tag constraints: "+err.Error())
			continue
		}
		if err := t.add(*key, *value); err != nil {
			return t, newError("InvalidParameterValue", "%v", err)
		}
	}
	var transitive []string
	for i := 1; ; i++ {
		k := optional(p, fmt.Sprintf("TransitiveTagKeys.member.%d", i))
		if k == nil {
			break
		}
		transitive = append(transitive, *k)
	}
	if e := v.err(); e != nil {
		return t, e
	}
	if err := t.setTransitive(transitive); err != nil {
		return t, newError("InvalidParameterValue", "%v", err)
	}
	return t, nil
}
