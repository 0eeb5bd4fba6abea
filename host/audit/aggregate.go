package audit

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Defaults for aggregating refusals (Store.Count).
const (
	// DefaultAggregateInterval is how often SQLite writes its aggregates.
	DefaultAggregateInterval = time.Minute
	// DefaultAggregateClients is how many clients get aggregates of their
	// own in one interval; the refusals of any further client are folded
	// into the aggregates of OtherClients.
	DefaultAggregateClients = 1000
)

// OtherClients is the Client of an aggregate that stands for the refusals of
// every client past the per-interval bound (DefaultAggregateClients, see
// WithAggregateClients), so that a flood from ever-changing addresses still
// writes a bounded number of records.
const OtherClients = "other"

type aggKey struct{ client, kind, outcome, wallet string }

type aggregate struct {
	first, last time.Time
	n           int64
	detail      string // the first refusal's
}

// aggregator keeps the running aggregates of one interval. It is shared by
// the stores: each calls add from Count and take when the interval ends.
type aggregator struct {
	maxClients int

	mu      sync.Mutex
	closed  bool
	pending map[aggKey]*aggregate
	clients map[string]bool
}

func newAggregator(maxClients int) *aggregator {
	return &aggregator{maxClients: maxClients, pending: map[aggKey]*aggregate{}, clients: map[string]bool{}}
}

// add counts r, which prepare has already checked.
func (a *aggregator) add(r Record) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return ErrClosed
	}
	if !a.clients[r.Client] {
		if len(a.clients) >= a.maxClients {
			r.Client = OtherClients
		}
		a.clients[r.Client] = true
	}
	k := aggKey{r.Client, r.Kind, r.Outcome, r.Wallet}
	if _, ok := a.pending[k]; !ok && len(a.pending) >= 4*a.maxClients {
		// Bound the aggregates too, not only the clients: many wallets
		// or outcomes per client fold into one.
		k = aggKey{OtherClients, r.Kind, r.Outcome, WalletUnknown}
	}
	g := a.pending[k]
	if g == nil {
		g = &aggregate{first: r.Time, detail: r.Detail}
		a.pending[k] = g
	}
	g.n += r.Count
	g.last = r.Time
	return nil
}

// take returns the interval's aggregates as records and starts a new
// interval. With final, every later add fails with ErrClosed.
func (a *aggregator) take(final bool) []Record {
	a.mu.Lock()
	pending := a.pending
	a.pending, a.clients = map[aggKey]*aggregate{}, map[string]bool{}
	a.closed = a.closed || final
	a.mu.Unlock()
	out := make([]Record, 0, len(pending))
	for k, g := range pending {
		out = append(out, Record{
			Time:    g.first,
			Kind:    k.kind,
			Outcome: k.outcome,
			Wallet:  k.wallet,
			Client:  k.client,
			Count:   g.n,
			Detail: fmt.Sprintf("%d refusals from %s to %s; the first: %s", g.n,
				g.first.Format(aggTimeFormat), g.last.Format(aggTimeFormat), g.detail),
		})
	}
	slices.SortFunc(out, func(x, y Record) int {
		return cmp.Or(cmp.Compare(x.Client, y.Client), cmp.Compare(x.Kind, y.Kind),
			cmp.Compare(x.Outcome, y.Outcome), cmp.Compare(x.Wallet, y.Wallet))
	})
	return out
}

const aggTimeFormat = "2006-01-02T15:04:05.000Z07:00"

// counted is Count for the durable stores: the aggregates of the current
// interval, appended (with the store's Append, at once, so its writer commits
// them together) at the end of every interval and once more by stop.
type counted struct {
	agg    *aggregator
	every  time.Duration
	append func(context.Context, Record) (Record, error)
	quit   chan struct{}
	done   chan struct{}
}

// startCounted starts the interval loop of a store whose Append is append.
func startCounted(clients int, every time.Duration, append func(context.Context, Record) (Record, error)) *counted {
	c := &counted{agg: newAggregator(clients), every: every, append: append, quit: make(chan struct{}), done: make(chan struct{})}
	go c.run()
	return c
}

// count adds r to its aggregate.
func (c *counted) count(r Record) error {
	r, err := prepare(r, time.Now())
	if err != nil {
		return err
	}
	return c.agg.add(r)
}

// flush appends the aggregates counted so far, as the end of an interval
// does, and starts a new interval.
func (c *counted) flush(ctx context.Context) error { return c.appendAll(ctx, c.agg.take(false)) }

func (c *counted) appendAll(ctx context.Context, recs []Record) error {
	errs := make([]error, len(recs))
	var wg sync.WaitGroup
	for i, r := range recs {
		wg.Go(func() { _, errs[i] = c.append(ctx, r) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (c *counted) run() {
	defer close(c.done)
	t := time.NewTicker(c.every)
	defer t.Stop()
	for {
		final := false
		select {
		case <-t.C:
		case <-c.quit:
			final = true
		}
		// Bounded: a writer stuck on a locked file must not hold Close.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		// A failure is in the stats (FailedRecords) and, for a broken
		// store, in Ping; the refusals counted were refused regardless.
		c.appendAll(ctx, c.agg.take(final))
		cancel()
		if final {
			return
		}
	}
}

// stop appends the last aggregates and ends the loop; the store's writer
// must still be taking appends.
func (c *counted) stop() {
	close(c.quit)
	<-c.done
}
