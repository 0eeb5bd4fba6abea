package cliflag

import (
	"errors"
	"flag"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		args []string
		want string // "" for no error
	}{
		{[]string{"--port", "8080"}, ""},
		{[]string{"-h"}, flag.ErrHelp.Error()},
		{[]string{"--help"}, flag.ErrHelp.Error()},
		{[]string{"--nope"}, "--nope: no such flag"},
		{[]string{"-nope=1"}, "--nope: no such flag"},
		{[]string{"--port"}, "--port: needs a value"},
		{[]string{"--port", "http"}, `--port: invalid value "http": parse error`},
		{[]string{"--port", `a"b: c`}, `--port: invalid value "a\"b: c": parse error`},
		{[]string{"--verbose=maybe"}, `--verbose: invalid value "maybe": want true or false`},
		{[]string{"---x"}, "bad flag syntax: ---x"},
	}
	for _, tt := range tests {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.Int("port", 0, "")
		fs.Bool("verbose", false, "")
		err := Parse(fs, tt.args)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tt.want {
			t.Errorf("%q: %q, want %q", tt.args, got, tt.want)
		}
		if tt.want == flag.ErrHelp.Error() && !errors.Is(err, flag.ErrHelp) {
			t.Errorf("%q: %v is not flag.ErrHelp", tt.args, err)
		}
	}
}

func TestPrintDefaults(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.String("listen", "vsock:5005", "where to serve: `ADDR`")
	fs.Bool("simulated", false, "run simulated")
	var b strings.Builder
	PrintDefaults(&b, fs)
	want := "  --listen ADDR\n    \twhere to serve: ADDR (default \"vsock:5005\")\n  --simulated\n    \trun simulated\n"
	if b.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", b.String(), want)
	}
}
