// Package metrics holds the Prometheus registry every productstream role
// exports its metrics to, with the Go runtime and process collectors, and
// the HTTP handler that serves it in the Prometheus text format.
//
// Packages define their collectors with promauto.With(metrics.Registry), so
// a metric exists (at zero) from the start, whichever role runs.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Registry is the registry of every productstream metric.
var Registry = prometheus.NewRegistry()

func init() {
	Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
}

// Handler serves Registry.
func Handler() http.Handler {
	return promhttp.HandlerFor(Registry, promhttp.HandlerOpts{Registry: Registry})
}
