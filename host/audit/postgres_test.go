package audit

import (
	"context"
	"testing"
	"time"

	"github.com/agentkeys/broker/host/pgdb/pgtest"
)

// The contract tests of store_test.go and log_test.go run against
// PostgreSQL too, each in a schema of its own (see pgtest).
func init() {
	stores = append(stores, struct {
		name string
		open func(t *testing.T) Store
	}{"Postgres", func(t *testing.T) Store { return openTestPostgres(t, pgtest.New(t).DSN, "") }})
	logStores = append(logStores, struct {
		name string
		open func(t *testing.T) Store
	}{"postgres", func(t *testing.T) Store {
		return openTestPostgres(t, pgtest.New(t).DSN, "", WithLogGapWait(200*time.Millisecond))
	}})
}

// openTestPostgres opens the log called name in the database at dsn, closed
// when t ends.
func openTestPostgres(t testing.TB, dsn, name string, opts ...Option) *Postgres {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := OpenPostgres(ctx, dsn, name, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
