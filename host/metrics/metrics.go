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
	// Mints counts credential mints by kind (oidc_jwt, aws_creds) and outcome.
	Mints *prometheus.CounterVec
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
