package logtree

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/agentkeys/broker/shared/protocol"
)

// benchEntry is about the size of a minted JWT's entry.
var benchEntry = fmt.Appendf(nil, `{"v":1,"time":1767225600,"kind":"oidc_jwt","outcome":"ok","wallet":"0x%040x","session_id":"%032x","aud":"sts.amazonaws.com","exp":1767226500,"kid":"%043x","jti":"1234567","jwt_sha256":"%064x"}`, 1, 2, 3, 4)

func benchBuild(int64) ([]byte, error) { return benchEntry, nil }

func resumedLog(b *testing.B) *Log {
	l := newLog(b, 1)
	if _, err := l.Resume(protocol.AuditResumeRequest{}); err != nil {
		b.Fatal(err)
	}
	return l
}

// BenchmarkAppend appends from one goroutine: one entry per batch, so one
// checkpoint signature, tree hash and inclusion proof per entry, as at one
// client. ns/op is per entry.
func BenchmarkAppend(b *testing.B) {
	l := resumedLog(b)
	b.ReportAllocs()
	for b.Loop() {
		res, err := l.Append(benchBuild)
		if err != nil {
			b.Fatal(err)
		}
		l.Ack(res.Batch.Start + int64(len(res.Batch.Entries)))
	}
}

// BenchmarkAppendParallel appends from 8×GOMAXPROCS goroutines at once.
// entries/batch is how many entries shared each checkpoint signature.
func BenchmarkAppendParallel(b *testing.B) {
	benchmarkAppendParallel(b, func(l *Log) (protocol.AuditLogged, error) { return l.Append(benchBuild) })
}

func benchmarkAppendParallel(b *testing.B, add func(*Log) (protocol.AuditLogged, error)) {
	l := resumedLog(b)
	var entries, batches atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			res, err := add(l)
			if err != nil {
				b.Error(err)
				return
			}
			entries.Add(1)
			if res.Index == res.Batch.Start {
				batches.Add(1)
			}
			l.Ack(res.Batch.Start + int64(len(res.Batch.Entries)))
		}
	})
	b.StopTimer()
	if n := batches.Load(); n > 0 {
		b.ReportMetric(float64(entries.Load())/float64(n), "entries/batch")
	}
}
