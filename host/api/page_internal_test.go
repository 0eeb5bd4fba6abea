package api

import "testing"

// TestShellWord: a value the host put in a command on the page is one shell
// word when pasted, whatever it holds.
func TestShellWord(t *testing.T) {
	tests := []struct{ in, want string }{
		{"https://broker.example.com", "https://broker.example.com"},
		{"broker.example.com/audit+0e1bdb4b+AVSe/x=", "broker.example.com/audit+0e1bdb4b+AVSe/x="},
		{"", "''"},
		{"a b", "'a b'"},
		{"$(id)", "'$(id)'"},
		{"x'; rm -rf ~; '", `'x'\''; rm -rf ~; '\'''`},
		{"a\nb", "'a\nb'"},
	}
	for _, tt := range tests {
		if got := shellWord(tt.in); got != tt.want {
			t.Errorf("shellWord(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
