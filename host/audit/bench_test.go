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

// BenchmarkCount counts refusals from GOMAXPROCS goroutines and a few
// clients, as a flood would: it must cost far less than an Append.
func BenchmarkCount(b *testing.B) {
	s := openTestSQLite(b)
	r := Record{Kind: KindOIDCJWT, Outcome: OutcomeUnauthorized, Wallet: WalletUnknown, Client: "192.0.2.1",
		Detail: "missing Authorization: Bearer header; sign in first (POST /v1/session)"}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.Count(r); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
