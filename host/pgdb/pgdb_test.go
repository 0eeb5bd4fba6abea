package pgdb

import (
	"context"
	"errors"
	"strings"
	"testing"
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
