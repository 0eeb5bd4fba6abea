package audit

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/agentkeys/broker/shared/auditlog"
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

// BenchmarkAppendLogged appends records that carry enclave log batches, from
// 8×GOMAXPROCS goroutines, as mints do: each batch has entries entries and
// is carried by that many records, one per entry, like the enclave's answers
// to the mints that share it. The batches are built before the timer starts;
// ns/op is per record.
func BenchmarkAppendLogged(b *testing.B) {
	for _, n := range []int{1, 4} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			s := openTestSQLite(b)
			tl := newTestLog(b)
			recs := make([]Record, 0, b.N+n)
			for len(recs) < b.N {
				batch := tl.batch(b, n)
				for i := range n {
					recs = append(recs, loggedRecord(batch, batch.Start+int64(i)))
				}
			}
			ctx := context.Background()
			var next atomic.Int64
			b.ReportAllocs()
			b.ResetTimer()
			b.SetParallelism(8)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := s.Append(ctx, recs[next.Add(1)-1]); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			if st := s.Stats(); st.Commits > 0 {
				b.ReportMetric(float64(st.Records)/float64(st.Commits), "records/commit")
				reportTxTime(b, st)
			}
		})
	}
}

// BenchmarkExtend checks a one-entry batch against a stored tip of 1000003
// entries (12 right-edge hashes): the host's check that a batch extends its
// tree, per batch.
func BenchmarkExtend(b *testing.B) {
	tl := newTestLog(b)
	tl.n = 1000003
	for _, x := range auditlog.RightEdge(tl.n) {
		tl.hashes[x] = tlog.Hash{byte(x), byte(x >> 8), byte(x >> 16)}
	}
	tip := logState{size: tl.n, edge: auditlog.HashMap{}}
	for _, x := range auditlog.RightEdge(tl.n) {
		tip.edge[x] = tl.hashes[x]
	}
	batch := tl.batch(b, 1)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tip.extend(batch); err != nil {
			b.Fatal(err)
		}
	}
}

// reportTxTime reports the writer's serial section: µs per transaction, and
// the share of the benchmark's time the writer spent in transactions.
func reportTxTime(b *testing.B, st Stats) {
	b.ReportMetric(float64(st.TxTime.Microseconds())/float64(st.Commits), "tx-µs/commit")
	b.ReportMetric(float64(st.TxTime)/float64(b.Elapsed()), "tx-busy")
}
