// Package ingest is productstream's HTTP edge. For every configured source it
// reads the body under the source's limit, verifies the provider's signature
// on the exact raw bytes, normalizes the payload into ProductChange events
// and produces them to Kafka keyed by "<namespace>:<productId>". It answers
// 2xx only after Kafka acknowledged every event; a refused request writes
// nothing.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Server routes webhook requests to their sources. Build it with New.
type Server struct {
	byName     map[string]*Source
	byProvider map[string]map[string]*Source // provider -> id -> source
	producer   Producer
	encoder    Encoder
	log        *slog.Logger
	timeout    time.Duration
	retryAfter string
	now        func() time.Time
	engine     *gin.Engine
}

// Option configures a Server.
type Option func(*Server)

// WithLogger sets the logger (default: slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(s *Server) { s.log = l } }

// WithProduceTimeout bounds the wait for Kafka's acknowledgement before the
// request is answered 503 (default 10s).
func WithProduceTimeout(d time.Duration) Option { return func(s *Server) { s.timeout = d } }

// WithRetryAfter sets the Retry-After seconds sent with 503 (default 5).
func WithRetryAfter(seconds int) Option {
	return func(s *Server) { s.retryAfter = strconv.Itoa(seconds) }
}

// New builds the edge for sources, producing changes encoded by enc through p.
func New(sources []*Source, p Producer, enc Encoder, opts ...Option) *Server {
	s := &Server{
		byName:     map[string]*Source{},
		byProvider: map[string]map[string]*Source{},
		producer:   p,
		encoder:    enc,
		log:        slog.Default(),
		timeout:    10 * time.Second,
		retryAfter: "5",
		now:        time.Now,
	}
	for _, o := range opts {
		o(s)
	}
	for _, src := range sources {
		s.byName[src.Name] = src
		name := src.Provider.Name()
		if s.byProvider[name] == nil {
			s.byProvider[name] = map[string]*Source{}
		}
		s.byProvider[name][src.ID] = src
	}
	s.engine = s.routes()
	return s
}

// Handler returns the HTTP handler.
func (s *Server) Handler() http.Handler { return s.engine }

func (s *Server) routes() *gin.Engine {
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.HandleMethodNotAllowed = true
	r.Use(gin.CustomRecoveryWithWriter(io.Discard, func(c *gin.Context, rec any) {
		s.log.Error("handler panic", "path", c.FullPath(), "panic", fmt.Sprint(rec))
		c.AbortWithStatusJSON(http.StatusInternalServerError, gin.H{"error": "internal error"})
	}))
	r.NoRoute(func(c *gin.Context) { c.JSON(http.StatusNotFound, gin.H{"error": "no such route"}) })
	r.NoMethod(func(c *gin.Context) { c.JSON(http.StatusMethodNotAllowed, gin.H{"error": "method not allowed"}) })
	r.GET("/healthz", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"status": "ok"}) })

	r.POST("/webhooks/:name", func(c *gin.Context) { s.serve(c, s.byName[c.Param("name")]) })
	seen := map[string]bool{}
	for _, p := range providers {
		for _, route := range p.Routes() {
			if seen[route] {
				panic("ingest: two providers claim route " + route)
			}
			seen[route] = true
			name := p.Name()
			r.POST(route, func(c *gin.Context) { s.serve(c, s.byProvider[name][c.Param("id")]) })
		}
	}
	return r
}

// serve is the whole request pipeline: raw bytes -> verify -> normalize ->
// produce. src is nil when the route named no configured source.
func (s *Server) serve(c *gin.Context, src *Source) {
	received := s.now().UTC()
	n, err := s.accept(c.Request, src, received)
	if err != nil {
		s.refuse(c, src, err)
		return
	}
	c.JSON(http.StatusAccepted, gin.H{"accepted": n})
}

func (s *Server) accept(req *http.Request, src *Source, received time.Time) (int, error) {
	if src == nil {
		return 0, ErrUnknownSource
	}
	body, err := readBody(req, src.MaxBody)
	if err != nil {
		return 0, err
	}
	if err := src.Provider.Verify(src, req.Header, body); err != nil {
		return 0, err
	}
	changes, err := src.Provider.Normalize(src, req.Header, body, received)
	if err != nil {
		return 0, err
	}
	records := make([]*kgo.Record, len(changes))
	for i := range changes {
		v, err := s.encoder.EncodeChange(&changes[i])
		if err != nil {
			return 0, fmt.Errorf("encode change: %w", err)
		}
		records[i] = &kgo.Record{
			Key:   []byte(changes[i].Key()),
			Value: v,
			Headers: []kgo.RecordHeader{
				{Key: "event-id", Value: []byte(changes[i].EventID)},
				{Key: "source", Value: []byte(src.Name)},
			},
		}
	}
	ctx, cancel := context.WithTimeout(req.Context(), s.timeout)
	defer cancel()
	if err := s.producer.Produce(ctx, records...); err != nil {
		return 0, err
	}
	return len(records), nil
}

// readBody reads the whole body, refusing more than limit bytes: at once
// when Content-Length says so, otherwise (chunked) as soon as it is exceeded.
func readBody(req *http.Request, limit int64) ([]byte, error) {
	if req.ContentLength > limit {
		return nil, fmt.Errorf("%w: limit is %d bytes", ErrBodyTooLarge, limit)
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, req.Body, limit))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return nil, fmt.Errorf("%w: limit is %d bytes", ErrBodyTooLarge, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: reading body: %w", ErrInvalidPayload, err)
	}
	return body, nil
}

func (s *Server) refuse(c *gin.Context, src *Source, err error) {
	status := statusOf(err)
	attrs := []any{"status", status, "path", c.Request.URL.Path, "reason", err.Error()}
	if src != nil {
		attrs = append(attrs, "source", src.Name)
	}
	switch {
	case status >= 500:
		s.log.Warn("request not accepted", attrs...)
	default:
		s.log.Info("request refused", attrs...)
	}
	if status == http.StatusServiceUnavailable {
		c.Header("Retry-After", s.retryAfter)
	}
	if status == http.StatusRequestEntityTooLarge {
		// The rest of an oversized body is not read: close the connection
		// rather than drain it.
		c.Header("Connection", "close")
	}
	msg := err.Error()
	if status == http.StatusInternalServerError {
		msg = "internal error"
	}
	c.JSON(status, gin.H{"error": msg})
}
