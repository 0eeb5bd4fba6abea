package pgdb

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/agentkeys/broker/host/pgdb/pgtest"
)

func TestRedact(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"postgres://u:pw@db.example:5432/audit", "postgres://u:xxxxx@db.example:5432/audit"},
		{"postgresql://u@db/audit?password=pw&sslmode=require", "postgresql://u@db/audit?password=xxxxx&sslmode=require"},
		{"postgres:///audit?host=/var/run/postgresql", "postgres:///audit?host=%2Fvar%2Frun%2Fpostgresql"},
		{"host=db password=pw", "(a DSN that is not a postgres:// URL)"},
		{"postgres://u:pw@[::1/audit", "(a DSN that is not a postgres:// URL)"},
	} {
		if got := Redact(tt.in); got != tt.want {
			t.Errorf("Redact(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if strings.Contains(Redact(tt.in), "pw") {
			t.Errorf("Redact(%q) shows the password", tt.in)
		}
	}
}

func TestRedactError(t *testing.T) {
	base := errors.New("failed for postgres://u:s3cret%21@h/db and s3cret!")
	err := RedactError(base, "postgres://u:s3cret%21@h/db")
	if strings.Contains(err.Error(), "s3cret") || !errors.Is(err, base) {
		t.Errorf("RedactError = %q", err)
	}
	if RedactError(nil, "postgres://u:p@h/db") != nil {
		t.Error("RedactError(nil) is not nil")
	}
}

// TestOpenRefusesOtherForms: only postgres:// URLs, so a DSN whose password
// Redact could not find is never accepted.
func TestOpenRefusesOtherForms(t *testing.T) {
	for _, dsn := range []string{"host=db password=s3cret", "mysql://u:s3cret@h/db", ""} {
		_, err := Open(context.Background(), dsn, 4)
		if err == nil || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("Open(%q) = %v", dsn, err)
		}
	}
}

// TestMigrate: the steps run once, in order, even when several pools (hosts
// starting together) migrate at once; a schema newer than the steps is
// refused.
func TestMigrate(t *testing.T) {
	db := pgtest.New(t)
	ctx := context.Background()
	steps := []string{
		`CREATE TABLE m (v integer)`,
		`INSERT INTO m VALUES (1); ALTER TABLE m ADD COLUMN w integer`,
	}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			pool, err := Open(ctx, db.DSN, 2)
			if err != nil {
				errs[i] = err
				return
			}
			defer pool.Close()
			errs[i] = Migrate(ctx, pool, "test", steps)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	var n, v int
	db.Scan(t, `SELECT count(*) FROM m`, &n)
	db.Scan(t, `SELECT version FROM agentkeys_schema WHERE component = 'test'`, &v)
	if n != 1 || v != 2 {
		t.Fatalf("%d rows, version %d; want 1 and 2", n, v)
	}
	pool, err := Open(ctx, db.DSN, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := Migrate(ctx, pool, "test", steps[:1]); err == nil || !strings.Contains(err.Error(), "version 2") {
		t.Fatalf("an older broker on a newer schema: %v", err)
	}
	if err := Migrate(ctx, pool, "other", steps[:0]); err != nil {
		t.Fatal(err)
	}
}
