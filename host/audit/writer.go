package audit

import (
	"cmp"
	"slices"
	"time"

	"github.com/agentkeys/broker/shared/protocol"
)

// groupWriter is the writer loop of both durable stores, the only goroutine
// that writes a store: it takes one request, then everything else already
// queued (up to maxBatch), commits them in one transaction (the store's
// commit, which answers each), and repeats until reqs is closed and drained.
//
// A request whose log batch starts past the stored log is parked: it joins
// every later transaction until the batches before it are stored with it,
// or its deadline passes (ErrLogGap).
type groupWriter struct {
	reqs     chan *appendRequest
	maxBatch int
	gapGrace time.Duration
	size     func() int64 // the stored log's size
	// commit stores a group in one transaction, answers its requests and
	// returns those it parked. The group comes in order of its log
	// batches' starts, so that one which fills a gap is stored before those
	// behind it; records without a batch come first, in their order.
	commit func(batch []*appendRequest) (parked []*appendRequest)
	// retryNow, if set, says that the parked requests should be tried at
	// once rather than at their deadline (PostgreSQL: another writer moved
	// the tip).
	retryNow func() bool
	stall    func() // testing only
}

// run is the loop; it closes done when it returns.
func (w groupWriter) run(done chan struct{}) {
	defer close(done)
	batch := make([]*appendRequest, 0, w.maxBatch)
	var parked []*appendRequest
	for {
		var wake <-chan time.Time
		var timer *time.Timer
		if len(parked) > 0 {
			first := parked[0].deadline
			for _, p := range parked {
				if p.deadline.Before(first) {
					first = p.deadline
				}
			}
			if w.retryNow != nil && w.retryNow() {
				first = time.Now()
			}
			timer = time.NewTimer(time.Until(first))
			wake = timer.C
		}
		var req *appendRequest
		ok := true
		select {
		case req, ok = <-w.reqs:
		case <-wake:
		}
		if timer != nil {
			timer.Stop()
		}
		if !ok {
			// Closed: answer what is parked, then return.
			for _, p := range parked {
				p.done <- appendResult{err: ErrClosed}
			}
			return
		}
		batch = append(batch[:0], parked...)
		parked = parked[:0]
		limit := len(batch) + w.maxBatch
		if req != nil {
			batch = append(batch, req)
			if w.stall != nil {
				w.stall()
			}
		}
		closed := false
	gather:
		for len(batch) < limit {
			select {
			case req, ok := <-w.reqs:
				if !ok {
					closed = true
					break gather // closed: commit this batch, then return above
				}
				batch = append(batch, req)
			default:
				break gather
			}
		}
		if !closed && w.gapGrace > 0 && len(batch) < limit && w.hasGap(batch) {
			batch = w.fillGap(batch, limit)
		}
		slices.SortStableFunc(batch, func(a, b *appendRequest) int { return cmp.Compare(batchStart(a), batchStart(b)) })
		parked = append(parked, w.commit(batch)...)
		clear(batch)
	}
}

// hasGap reports whether a log batch among reqs starts past the stored log
// and the batches before it in reqs: committed now, it would be parked.
func (w groupWriter) hasGap(reqs []*appendRequest) bool {
	var starts []*protocol.AuditBatch
	for _, r := range reqs {
		if r.batch != nil {
			starts = append(starts, r.batch)
		}
	}
	if len(starts) == 0 {
		return false
	}
	slices.SortFunc(starts, func(a, b *protocol.AuditBatch) int { return cmp.Compare(a.Start, b.Start) })
	size := w.size()
	for _, b := range starts {
		if b.Start > size {
			return true
		}
		size = max(size, b.Start+int64(len(b.Entries)))
	}
	return false
}

// fillGap waits up to gapGrace for the requests that fill the gaps in batch
// (see hasGap), taking every request that arrives meanwhile, and returns
// batch with them. The batches ahead of a parked one are nearly always on
// their way (the enclave answered them first; their callers raced), and
// waiting for them here costs microseconds, where parking costs the parked
// callers a whole transaction more.
func (w groupWriter) fillGap(batch []*appendRequest, limit int) []*appendRequest {
	t := time.NewTimer(w.gapGrace)
	defer t.Stop()
	for len(batch) < limit {
		select {
		case req, ok := <-w.reqs:
			if !ok {
				return batch // closed: the writer finds out at its next receive
			}
			batch = append(batch, req)
			if !w.hasGap(batch) {
				return batch
			}
		case <-t.C:
			return batch
		}
	}
	return batch
}

// batchStart orders a group: records without a log batch first.
func batchStart(r *appendRequest) int64 {
	if r.batch == nil {
		return -1
	}
	return r.batch.Start
}
