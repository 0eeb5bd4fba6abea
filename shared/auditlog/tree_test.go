package auditlog

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

// recorder is a HashMap that notes which indexes were read.
type recorder struct {
	HashMap
	read []int64
}

func (r *recorder) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	r.read = append(r.read, idx...)
	return r.HashMap.ReadHashes(idx)
}

// TestRightEdge: for random sizes, the right edge is exactly what
// tlog.TreeHash reads, and a HashMap holding only it suffices both for the
// root and to append the next entry.
func TestRightEdge(t *testing.T) {
	all := HashMap{}
	sizes := []int64{0, 1, 2, 3, 4, 5, 7, 8, 9, 255, 256, 257}
	for range 20 {
		sizes = append(sizes, rand.Int64N(3000))
	}
	max := slices.Max(sizes) + 1
	for i := range max {
		sh, err := tlog.StoredHashes(i, fmt.Appendf(nil, "e%d", i), all)
		if err != nil {
			t.Fatal(err)
		}
		for j, h := range sh {
			all[tlog.StoredHashIndex(0, i)+int64(j)] = h
		}
	}
	for _, n := range sizes {
		want, _ := tlog.TreeHash(n, all)
		r := &recorder{HashMap: all}
		tlog.TreeHash(n, r)
		edge := RightEdge(n)
		if !slices.Equal(r.read, edge) && !(n == 0 && len(edge) == 0) {
			t.Fatalf("size %d: TreeHash reads %v, RightEdge is %v", n, r.read, edge)
		}
		only := HashMap{}
		for _, x := range edge {
			only[x] = all[x]
		}
		if got, err := tlog.TreeHash(n, only); err != nil || got != want {
			t.Fatalf("size %d: root from the right edge alone: %v", n, err)
		}
		sh, err := tlog.StoredHashes(n, fmt.Appendf(nil, "e%d", n), only)
		if err != nil || sh[0] != all[tlog.StoredHashIndex(0, n)] {
			t.Fatalf("size %d: appending from the right edge alone: %v", n, err)
		}
	}
}

func TestSplitHashes(t *testing.T) {
	hs := []tlog.Hash{tlog.RecordHash([]byte("a")), tlog.RecordHash([]byte("b"))}
	back, err := SplitHashes(JoinHashes(hs), 2)
	if err != nil || !slices.Equal(back, hs) {
		t.Fatal(err)
	}
	if _, err := SplitHashes(JoinHashes(hs), 1); err == nil {
		t.Fatal("more than max")
	}
	if _, err := SplitHashes(make([]byte, 33), 9); err == nil {
		t.Fatal("ragged")
	}
}
