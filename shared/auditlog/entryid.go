package auditlog

import (
	"fmt"
	"strconv"
	"strings"
)

// MaxEntryIDLen bounds an entry id: a log name, '/' and a decimal int64.
const MaxEntryIDLen = MaxLogNameLen + 1 + 19

// EntryID is the id of the entry at index of the log named name ("" for the
// default log): the jti of the JWT it records, the value of its
// agentkeys_log_index session tag and the entry's own JTI. For the default
// log it is the index in decimal ("5"), as before logs had names; for the log
// named N it is N + "/" + the index ("host-a/5"), so that the JWTs of one
// issuer's several logs never share a jti (RFC 7519 §4.1.7). Both forms are
// valid AWS session tag values. name must pass CheckLogName and index must
// not be negative.
func EntryID(name string, index int64) string {
	i := strconv.FormatInt(index, 10)
	if name == "" {
		return i
	}
	return name + "/" + i
}

// ParseEntryID is the strict inverse of EntryID: s must be a canonical
// non-negative decimal index (no sign, no leading zero), optionally after a
// valid log name and '/', and nothing else. It parses ids from JWTs and
// CloudTrail records, so it trusts nothing.
func ParseEntryID(s string) (name string, index int64, err error) {
	if len(s) > MaxEntryIDLen {
		return "", 0, fmt.Errorf("%w: entry id %.32q… is longer than %d bytes", ErrInvalid, s, MaxEntryIDLen)
	}
	num := s
	if i := strings.IndexByte(s, '/'); i >= 0 {
		name, num = s[:i], s[i+1:]
		if name == "" {
			return "", 0, fmt.Errorf("%w: entry id %q has an empty log name before '/'; the default log's ids are the bare index", ErrInvalid, s)
		}
		if err := CheckLogName(name); err != nil {
			return "", 0, fmt.Errorf("%w: entry id %q: %v", ErrInvalid, s, err)
		}
	}
	index, perr := strconv.ParseInt(num, 10, 64)
	if perr != nil || index < 0 || strconv.FormatInt(index, 10) != num {
		return "", 0, fmt.Errorf("%w: entry id %q is not INDEX or NAME/INDEX with INDEX a log index in canonical decimal", ErrInvalid, s)
	}
	return name, index, nil
}
