package ingest

import (
	"strconv"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/productstream/productstream/metrics"
)

// Request metrics, labelled by route template (never by the raw path, which
// a sender controls) and status code.
var (
	requests = promauto.With(metrics.Registry).NewCounterVec(prometheus.CounterOpts{
		Name: "productstream_ingest_requests_total",
		Help: "HTTP requests answered, by route template and status code.",
	}, []string{"route", "status"})
	requestSeconds = promauto.With(metrics.Registry).NewHistogramVec(prometheus.HistogramOpts{
		Name:    "productstream_ingest_request_duration_seconds",
		Help:    "Time from the request's arrival to its answer (for a 202: Kafka acknowledged), by route template.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	}, []string{"route"})
)

// observe is the middleware that counts and times every request.
func observe(c *gin.Context) {
	start := time.Now()
	c.Next()
	route := c.FullPath()
	if route == "" {
		route = "unmatched"
	}
	requests.WithLabelValues(route, strconv.Itoa(c.Writer.Status())).Inc()
	requestSeconds.WithLabelValues(route).Observe(time.Since(start).Seconds())
}
