package testbroker_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"

	"github.com/agentkeys/broker/host/audit"
	"github.com/agentkeys/broker/host/client"
	"github.com/agentkeys/broker/internal/testbroker"
)

// BenchmarkMintParallel mints JWTs over HTTP from 8×GOMAXPROCS goroutines
// through the whole broker (HTTP API, enclave over a unix socket, SQLite audit
// store on the temporary directory's file system): what one mint costs a busy
// host, audit log included. ns/op is per mint.
func BenchmarkMintParallel(b *testing.B) {
	store, err := audit.OpenSQLite(filepath.Join(b.TempDir(), "audit.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	br := testbroker.Start(b, testbroker.Options{Audit: store})
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
	}
}
