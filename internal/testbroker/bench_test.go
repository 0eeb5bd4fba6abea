package testbroker_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"

	"github.com/agentkeys/broker/enclave/logtree"
	"github.com/agentkeys/broker/host/audit"
	"github.com/agentkeys/broker/host/client"
	"github.com/agentkeys/broker/internal/testbroker"
)

// BenchmarkMintParallel mints JWTs over HTTP from 8×GOMAXPROCS goroutines
// through the whole broker (HTTP API, enclave over a unix socket, SQLite audit
// store on the temporary directory's file system): what one mint costs a busy
// host, audit log included. ns/op is per mint.
func BenchmarkMintParallel(b *testing.B) { benchmarkMint(b, testbroker.Options{}) }

// BenchmarkMintParallelLinger is BenchmarkMintParallel with the enclave
// holding each log batch open for a while, so batches (and their checkpoint
// signatures) are shared by more mints.
func BenchmarkMintParallelLinger(b *testing.B) {
	for _, d := range []time.Duration{200 * time.Microsecond, time.Millisecond, 2 * time.Millisecond} {
		b.Run(d.String(), func(b *testing.B) {
			benchmarkMint(b, testbroker.Options{EnclaveAudit: logtree.Config{Linger: d}})
		})
	}
}

func benchmarkMint(b *testing.B, opts testbroker.Options) {
	store, err := audit.OpenSQLite(filepath.Join(b.TempDir(), "audit.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	opts.Audit = store
	br := testbroker.Start(b, opts)
	c, err := client.New(br.URL)
	if err != nil {
		b.Fatal(err)
	}
	key, _ := secp256k1.GeneratePrivateKey()
	sess, err := c.SignIn(context.Background(), key, client.SignInOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.MintJWT(context.Background(), sess.Token, "", 0); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	if st := store.Stats(); st.Commits > 0 {
		b.ReportMetric(float64(st.Records)/float64(st.Commits), "records/commit")
		// The writer's serial section: µs per transaction (BEGIN to fsync)
		// and the share of the time the writer spent in transactions.
		b.ReportMetric(float64(st.TxTime.Microseconds())/float64(st.Commits), "tx-µs/commit")
		b.ReportMetric(float64(st.TxTime)/float64(b.Elapsed()), "tx-busy")
	}
	if st := store.Stats(); st.LogBatches > 0 {
		b.ReportMetric(float64(st.LogEntries)/float64(st.LogBatches), "entries/batch")
	}

}
