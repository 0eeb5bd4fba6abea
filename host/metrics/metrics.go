// Package metrics defines the host's Prometheus metrics. Every metric the host
// exports is declared here, so their names and labels stay one list that
// dashboards can rely on.
package metrics

import (
	"net/http"

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
}

// New registers the host's metrics. enclaveUp reports the enclave connection.
func New(enclaveUp func() bool) *Metrics {
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
			if enclaveUp != nil && enclaveUp() {
				return 1
			}
			return 0
		}),
	}
	reg.MustRegister(m.Requests, m.RequestSeconds, m.Mints, m.AuditWriteSeconds, m.AuditWriteErrors,
		m.EnclaveRPCSeconds, m.EnclaveUp,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}
