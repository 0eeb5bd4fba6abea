package audit

import (
	"context"
	"errors"
	"fmt"
	"regexp"
)

// ErrUnknownLog is wrapped by the errors of a LogReader whose log is not in
// the store: no host ever opened a store for that log name.
var ErrUnknownLog = errors.New("no audit log of that name in the store")

// Logs is implemented by a store that holds the logs of several hosts (one
// log per host and enclave pair, told apart by name), such as [Postgres]: any
// host can serve the tiles and proofs of every log in it.
type Logs interface {
	// OwnLog is the name of the log this store writes ("" is the default
	// log).
	OwnLog() string
	// LogReader reads the log called name, "" for the default log. It fails
	// only for an invalid name; a log that is not in the store is reported
	// by the reader's Checkpoint, with an error wrapping ErrUnknownLog.
	LogReader(name string) (LogReader, error)
	// LogNames lists the logs in the store, in name order.
	LogNames(ctx context.Context) ([]string, error)
}

// logNamePattern is what a named log's name looks like; "" is the default log.
var logNamePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// CheckLogName returns an error unless name is "" (the default log) or a log
// name: 1 to 63 lowercase letters, digits and hyphens, not starting with a
// hyphen.
func CheckLogName(name string) error {
	if name == "" || logNamePattern.MatchString(name) {
		return nil
	}
	return fmt.Errorf("audit: invalid log name %q: want 1 to 63 lowercase letters, digits and '-', starting with a letter or digit", name)
}
