package attest

import (
	"fmt"
	"io"
)

// Status is the outcome of one check.
type Status string

// The four outcomes. Only StatusFail makes a report fail; StatusWarn is shown
// but does not, and StatusSkip names a check that was not made (and why).
const (
	StatusPass Status = "pass"
	StatusFail Status = "fail"
	StatusWarn Status = "warn"
	StatusSkip Status = "skip"
)

// Check is one verified statement: its name, its outcome and the values it
// compared, in words.
type Check struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
}

// Report is the ordered list of checks a verification made.
type Report struct {
	Checks []Check `json:"checks"`
}

func (r *Report) add(name string, s Status, format string, args ...any) {
	r.Checks = append(r.Checks, Check{Name: name, Status: s, Detail: fmt.Sprintf(format, args...)})
}

func (r *Report) pass(name, format string, args ...any) { r.add(name, StatusPass, format, args...) }
func (r *Report) fail(name, format string, args ...any) { r.add(name, StatusFail, format, args...) }
func (r *Report) warn(name, format string, args ...any) { r.add(name, StatusWarn, format, args...) }
func (r *Report) skip(name, format string, args ...any) { r.add(name, StatusSkip, format, args...) }

// Merge appends the checks of o.
func (r *Report) Merge(o Report) { r.Checks = append(r.Checks, o.Checks...) }

// OK reports whether the report has at least one check and none failed.
func (r *Report) OK() bool { return len(r.Checks) > 0 && r.FirstFailure() == nil }

// FirstFailure returns the first failed check, or nil.
func (r *Report) FirstFailure() *Check {
	for i := range r.Checks {
		if r.Checks[i].Status == StatusFail {
			return &r.Checks[i]
		}
	}
	return nil
}

// Find returns the first check with the given name, or nil.
func (r *Report) Find(name string) *Check {
	for i := range r.Checks {
		if r.Checks[i].Name == name {
			return &r.Checks[i]
		}
	}
	return nil
}

var marks = map[Status]string{StatusPass: "✓", StatusFail: "✗", StatusWarn: "!", StatusSkip: "-"}

// WriteText writes the report for a person: one line per check, then a last
// line that says PASS or names the first failing check.
func (r *Report) WriteText(w io.Writer) error {
	for _, c := range r.Checks {
		if _, err := fmt.Fprintf(w, "%s %s: %s\n", marks[c.Status], c.Name, c.Detail); err != nil {
			return err
		}
	}
	var err error
	switch f := r.FirstFailure(); {
	case f != nil:
		_, err = fmt.Fprintf(w, "FAIL: %s: %s\n", f.Name, f.Detail)
	case len(r.Checks) == 0:
		_, err = fmt.Fprintln(w, "FAIL: nothing was checked")
	default:
		n := 0
		for _, c := range r.Checks {
			if c.Status == StatusPass {
				n++
			}
		}
		_, err = fmt.Fprintf(w, "PASS: %d checks passed\n", n)
	}
	return err
}
