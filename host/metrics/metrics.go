// Package metrics defines the host's Prometheus metrics. Every metric the host
// exports is declared here, so their names and labels stay one list that
// dashboards can rely on.
//
// The enclave exports no metrics of its own: it has no HTTP listener, only the
// protocol socket the host dials, so what the host knows about it (connection,
// round trips, clock offset) is exported here.
package metrics

import (
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics holds the host's collectors on their own registry.
type Metrics struct {
	Registry *prometheus.Registry

	// Requests counts HTTP requests by route and outcome (the error kind, or "ok").
	Requests *prometheus.CounterVec
	// RequestSeconds observes HTTP request latency by route.
	RequestSeconds *prometheus.HistogramVec
	// Mints counts credential mints by kind (oidc_jwt, aws_creds) and
	// outcome. Count a credential handed out with [Metrics.Minted], which
	// also counts it in MintedLastMinute.
	Mints *prometheus.CounterVec
	// MintedLastMinute counts the credentials handed out (Mints with outcome
	// ok, every kind) in the last minute, for the transparency page.
	MintedLastMinute *Window
	// AuditWriteSeconds observes how long an audit record takes to become durable.
	AuditWriteSeconds prometheus.Histogram
	// AuditWriteErrors counts audit writes that failed (each one refused a caller).
	AuditWriteErrors prometheus.Counter
	// EnclaveRPCSeconds observes enclave round trips by operation and outcome.
	EnclaveRPCSeconds *prometheus.HistogramVec
	// EnclaveUp is 1 while the host holds a connection to the enclave.
	EnclaveUp prometheus.GaugeFunc
	// EnclaveClockOffset is the enclave's clock minus the host's, in seconds,
	// as last measured; absent before the first measurement.
	EnclaveClockOffset prometheus.Collector
	// RelayConnections counts TCP connections on the relay (host/relay) by
	// route (issuer, api) and outcome (relayed, rejected, bad_hello,
	// hello_timeout, dial_failed).
	RelayConnections *prometheus.CounterVec
	// RelayActive is the number of connections the relay holds now, by route.
	RelayActive *prometheus.GaugeVec
}

// Enclave is what the metrics read from the enclave connection
// (enclaveclient.Client).
type Enclave interface {
	// Connected reports whether the host holds a connection now.
	Connected() bool
	// ClockOffset is the enclave's clock minus the host's, and false before
	// the first measurement.
	ClockOffset() (time.Duration, bool)
}

// New registers the host's metrics, reading the enclave's state from enc.
func New(enc Enclave) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry: reg,
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentkeys_http_requests_total", Help: "HTTP requests by route and outcome.",
		}, []string{"route", "outcome"}),
		RequestSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "agentkeys_http_request_duration_seconds", Help: "HTTP request latency by route.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"route"}),
		Mints: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentkeys_mints_total", Help: "Credential mints by kind and outcome.",
		}, []string{"kind", "outcome"}),
		MintedLastMinute: NewWindow(time.Now),
		AuditWriteSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "agentkeys_audit_write_duration_seconds", Help: "Time for an audit record to become durable.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		AuditWriteErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agentkeys_audit_write_errors_total", Help: "Audit writes that failed; each refused a caller.",
		}),
		EnclaveRPCSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "agentkeys_enclave_rpc_duration_seconds", Help: "Enclave round trips by operation and outcome.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}, []string{"op", "outcome"}),
		EnclaveUp: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "agentkeys_enclave_up", Help: "1 while the host holds a connection to the enclave.",
		}, func() float64 {
			if enc != nil && enc.Connected() {
				return 1
			}
			return 0
		}),
		EnclaveClockOffset: &clockOffset{enc: enc, desc: prometheus.NewDesc("agentkeys_enclave_clock_offset_seconds",
			"The enclave's clock minus the host's, as last measured (on connection and each keep-alive).", nil, nil)},
	}
	m.RelayConnections = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agentkeys_relay_connections_total", Help: "TCP connections on the TLS relay by route (issuer: to the enclave; api) and outcome.",
	}, []string{"route", "outcome"})
	m.RelayActive = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "agentkeys_relay_active_connections", Help: "TCP connections the TLS relay holds now, by route.",
	}, []string{"route"})
	reg.MustRegister(m.RelayConnections, m.RelayActive)
	reg.MustRegister(m.Requests, m.RequestSeconds, m.Mints, m.AuditWriteSeconds, m.AuditWriteErrors,
		m.EnclaveRPCSeconds, m.EnclaveUp, m.EnclaveClockOffset,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Minted counts a credential of kind handed out: agentkeys_mints_total with
// outcome ok, and MintedLastMinute.
func (m *Metrics) Minted(kind string) {
	m.Mints.WithLabelValues(kind, "ok").Inc()
	m.MintedLastMinute.Add(1)
}

// windowSeconds is the span of a Window.
const windowSeconds = 60

// Window counts events over the last minute in a ring of per-second buckets:
// fixed memory, and Count costs 60 additions however many events there were.
// It is safe for concurrent use.
type Window struct {
	now func() time.Time

	mu     sync.Mutex
	second [windowSeconds]int64 // the unix second each bucket counts
	count  [windowSeconds]uint64
}

// NewWindow returns an empty window reading the time from now.
func NewWindow(now func() time.Time) *Window { return &Window{now: now} }

// Add counts n events now.
func (w *Window) Add(n uint64) {
	s := w.now().Unix()
	i := s % windowSeconds // unix seconds since 1970 are not negative
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.second[i] != s {
		w.second[i], w.count[i] = s, 0
	}
	w.count[i] += n
}

// Count is the number of events in the last 60 seconds, this one included.
func (w *Window) Count() uint64 {
	s := w.now().Unix()
	w.mu.Lock()
	defer w.mu.Unlock()
	var sum uint64
	for i := range w.second {
		if age := s - w.second[i]; age >= 0 && age < windowSeconds {
			sum += w.count[i]
		}
	}
	return sum
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}

// clockOffset exports the enclave's clock offset, and nothing until there is a
// measurement: 0 would read as a perfect clock.
type clockOffset struct {
	enc  Enclave
	desc *prometheus.Desc
}

func (c *clockOffset) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *clockOffset) Collect(ch chan<- prometheus.Metric) {
	if c.enc == nil {
		return
	}
	if off, ok := c.enc.ClockOffset(); ok {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, off.Seconds())
	}
}
