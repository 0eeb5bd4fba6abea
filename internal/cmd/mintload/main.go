// Command mintload is a load generator for a broker on this machine: it signs
// in a few sessions, then mints OIDC JWTs from N concurrent clients for a
// fixed time and prints the throughput and latency percentiles, one line per
// client count.
//
//	go run ./internal/cmd/mintload --broker http://127.0.0.1:8091 --clients 1,16,64 --duration 10s
//
// It refuses any broker that is not on a loopback address: load is only ever
// sent to this machine.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"

	"github.com/agentkeys/broker/host/client"
)

func main() {
	broker := flag.String("broker", "http://127.0.0.1:8091", "broker base URL (loopback only)")
	clients := flag.String("clients", "1,16,64", "comma-separated concurrent client counts, one run each")
	duration := flag.Duration("duration", 10*time.Second, "length of each run (at most 2m)")
	sessions := flag.Int("sessions", 8, "sessions (wallets) the clients share")
	flag.Parse()
	if err := run(*broker, *clients, *duration, *sessions); err != nil {
		fmt.Fprintln(os.Stderr, "mintload:", err)
		os.Exit(1)
	}
}

func run(broker, clientList string, duration time.Duration, nSessions int) error {
	u, err := url.Parse(broker)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(u.Hostname()); u.Hostname() != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return errors.New("the broker must be on a loopback address")
	}
	if duration <= 0 || duration > 2*time.Minute || nSessions < 1 || nSessions > 1000 {
		return errors.New("--duration must be in (0, 2m] and --sessions in [1, 1000]")
	}
	var counts []int
	for _, s := range strings.Split(clientList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 1024 {
			return fmt.Errorf("--clients: %q is not a count in [1, 1024]", s)
		}
		counts = append(counts, n)
	}
	c, err := client.New(broker)
	if err != nil {
		return err
	}
	c.HTTP = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1024}}
	ctx := context.Background()
	var tokens []string
	for range nSessions {
		key, err := secp256k1.GeneratePrivateKey()
		if err != nil {
			return err
		}
		s, err := c.SignIn(ctx, key, client.SignInOptions{})
		if err != nil {
			return fmt.Errorf("sign-in: %w", err)
		}
		tokens = append(tokens, s.Token)
	}
	fmt.Printf("%-8s %10s %10s %10s %10s %8s\n", "clients", "mints", "mints/s", "p50", "p99", "errors")
	for _, n := range counts {
		var (
			mu        sync.Mutex
			latencies []time.Duration
			errs      int
			wg        sync.WaitGroup
		)
		deadline := time.Now().Add(duration)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				tok := tokens[i%len(tokens)]
				var mine []time.Duration
				bad := 0
				for time.Now().Before(deadline) {
					start := time.Now()
					if _, err := c.MintJWT(ctx, tok, "", 0); err != nil {
						bad++
						continue
					}
					mine = append(mine, time.Since(start))
				}
				mu.Lock()
				latencies, errs = append(latencies, mine...), errs+bad
				mu.Unlock()
			}()
		}
		wg.Wait()
		slices.Sort(latencies)
		pct := func(p float64) time.Duration {
			if len(latencies) == 0 {
				return 0
			}
			return latencies[int(p*float64(len(latencies)-1))]
		}
		fmt.Printf("%-8d %10d %10.0f %10s %10s %8d\n", n, len(latencies), float64(len(latencies))/duration.Seconds(),
			pct(0.50).Round(10*time.Microsecond), pct(0.99).Round(10*time.Microsecond), errs)
	}
	return nil
}
