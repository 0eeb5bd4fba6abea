// Package cliflag parses the command lines of the AgentKeys binaries
// (agentkeys, agentkeys-host, agentkeys-enclave) with the standard flag
// package, with the two conventions they share:
//
//   - -h and --help are a request, not an error: [Parse] returns
//     [flag.ErrHelp] and prints nothing, and the caller prints its help to
//     standard output and exits 0;
//   - an error names the flag as the documentation does, with two dashes:
//     "--port: invalid value "http": parse error", not the flag package's
//     "invalid value "http" for flag -port: parse error".
//
// [PrintDefaults] prints the flags for -h the same way, with two dashes.
package cliflag

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"regexp"
	"strings"
)

// Parse parses args into fs, which must not print: its output and Usage are
// replaced. It returns nil, flag.ErrHelp, or an error naming the flag with --.
func Parse(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err := fs.Parse(args)
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return err
	}
	return errors.New(Rewrite(err.Error()))
}

// The flag package's messages (Go 1.26 flag.go, failf calls), and their
// rewrites. Anything else is returned unchanged.
var rewrites = []struct {
	re   *regexp.Regexp
	repl string
}{
	{regexp.MustCompile(`^flag provided but not defined: -+(.*)$`), `--$1: no such flag`},
	{regexp.MustCompile(`^flag needs an argument: -+(.*)$`), `--$1: needs a value`},
	{regexp.MustCompile(`^invalid value ("(?:[^"\\]|\\.)*") for flag -+([^:]*): (.*)$`), `--$2: invalid value $1: $3`},
	{regexp.MustCompile(`^invalid boolean value ("(?:[^"\\]|\\.)*") for -+([^:]*): (.*)$`), `--$2: invalid value $1: want true or false`},
	{regexp.MustCompile(`^invalid boolean flag ([^:]*): (.*)$`), `--$1: $2`},
}

// Rewrite turns one of the flag package's error messages into the form that
// names the flag with --.
func Rewrite(msg string) string {
	for _, r := range rewrites {
		if r.re.MatchString(msg) {
			return r.re.ReplaceAllString(msg, r.repl)
		}
	}
	return msg
}

// PrintDefaults writes fs's flags to w as flag.PrintDefaults does, but named
// with two dashes, as the documentation and the error messages name them.
func PrintDefaults(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		var b strings.Builder
		fmt.Fprintf(&b, "  --%s", f.Name)
		if name != "" {
			b.WriteString(" " + name)
		}
		b.WriteString("\n    \t" + strings.ReplaceAll(usage, "\n", "\n    \t"))
		switch f.DefValue {
		case "", "false", "0":
		default:
			fmt.Fprintf(&b, " (default %q)", f.DefValue)
		}
		fmt.Fprintln(w, b.String())
	})
}
