package audit

import (
	"context"
	"testing"
)

// The benchmarks write to a real file in the temporary directory, so they
// measure that file system's fsync. ns/op is per record; records/commit shows
// how many records shared each fsync.

func BenchmarkAppendSerial(b *testing.B) {
	benchmarkAppend(b, false)
}

// BenchmarkAppendParallel appends from 8×GOMAXPROCS goroutines, like a busy
// host, so group commit can share each fsync among many records.
func BenchmarkAppendParallel(b *testing.B) {
	benchmarkAppend(b, true)
}

// BenchmarkAppendParallelNoGroupCommit is BenchmarkAppendParallel with one
// record per transaction, for comparison.
func BenchmarkAppendParallelNoGroupCommit(b *testing.B) {
	benchmarkAppend(b, true, WithMaxBatch(1))
}

func benchmarkAppend(b *testing.B, parallel bool, opts ...Option) {
	s := openTestSQLite(b, opts...)
	ctx := context.Background()
	r := validRecord()
	b.ReportAllocs()
	b.ResetTimer()
	if parallel {
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := s.Append(ctx, r); err != nil {
					b.Error(err)
					return
				}
			}
		})
	} else {
		for b.Loop() {
			if _, err := s.Append(ctx, r); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	if st := s.Stats(); st.Commits > 0 {
		b.ReportMetric(float64(st.Records)/float64(st.Commits), "records/commit")
	}
}
