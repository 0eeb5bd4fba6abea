package tlogproof

import (
	"bytes"
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

// benchProof is the size of a mint's proof of logging in a log of about a
// million entries: 20 hashes and a checkpoint with one signature.
var benchProof = Proof{Index: 987654, Hashes: make([]tlog.Hash, 20),
	Checkpoint: append([]byte("broker.example.com/audit\n1000000\nQUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVowMTIzNDU=\n\n— broker.example.com/audit "), append(bytes.Repeat([]byte("A"), 92), '\n')...)}

// BenchmarkMarshal formats a mint's proof, as the host does for every JWT.
func BenchmarkMarshal(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		benchProof.Marshal()
	}
}

// BenchmarkParse parses it, as the client does for every JWT.
func BenchmarkParse(b *testing.B) {
	data := benchProof.Marshal()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(data); err != nil {
			b.Fatal(err)
		}
	}
}
