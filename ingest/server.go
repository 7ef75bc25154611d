// Package ingest is productstream's HTTP edge. For every configured source it
// reads the body under the source's limit, verifies the provider's signature
// on the exact raw bytes, normalizes the payload into ProductChange events
// and produces them to Kafka keyed by "<namespace>:<productId>". It answers
// 2xx only after Kafka acknowledged every event; a refused request writes
// nothing.
package ingest

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/twmb/franz-go/pkg/kgo"
)

// openAPI is the OpenAPI 3 document of every route, served at /openapi.json.
//
//go:embed openapi.json
var openAPI []byte

// Server routes webhook requests to their sources. Build it with New.
type Server struct {
	// sources are served now; each request loads them once (SetSources).
	sources    atomic.Pointer[sourceSet]
	swap       sync.Mutex     // serializes SetSources
	refusals   *refusalBudget // nil: refusals are not charged to clients
	proxies    []netip.Prefix
	observers  []Observer
	out        Output
	log        *slog.Logger
	timeout    time.Duration
	retryAfter string
	now        func() time.Time
	engine     *gin.Engine
	// pool holds *headedRecord whose writes Kafka acknowledged, for the
	// next deliveries to reuse with their buffers.
	pool sync.Pool
}

// Output is where accepted deliveries go.
type Output struct {
	Producer     Producer
	Encoder      Encoder
	ChangesTopic string
	EventsTopic  string
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

// WithRefusalBudget charges every request refused before its signature is
// verified to the client's address (IPv6: its /64): past burst such
// refusals, refilled at perSecond, the address is answered 429 before its
// body is read. Verified deliveries are never charged, and forgeries
// never spend a source's rate_limit, which is charged only after
// verification. Default: no budget.
func WithRefusalBudget(perSecond float64, burst int) Option {
	return func(s *Server) {
		if perSecond > 0 {
			s.refusals = newRefusalBudget(perSecond, burst)
		}
	}
}

// WithTrustedProxies names the proxies whose X-Forwarded-For (or
// X-Real-IP) says who the client is, for the refusal budget. Default:
// none; the client is the connection's peer.
func WithTrustedProxies(prefixes []netip.Prefix) Option {
	return func(s *Server) { s.proxies = prefixes }
}

// WithObserver adds o to the observers told of every request to a webhook
// route (default: none).
func WithObserver(o Observer) Option {
	return func(s *Server) { s.observers = append(s.observers, o) }
}

// withClock replaces the clock, for tests.
func withClock(now func() time.Time) Option { return func(s *Server) { s.now = now } }

// dedupeCapacity bounds each source's memory of accepted delivery ids.
const dedupeCapacity = 100_000

// New builds the edge for sources, writing what they accept to out.
func New(sources []*Source, out Output, opts ...Option) *Server {
	s := &Server{
		out:        out,
		log:        slog.Default(),
		timeout:    10 * time.Second,
		retryAfter: "5",
		now:        time.Now,
	}
	for _, o := range opts {
		o(s)
	}
	s.sources.Store(newSourceSet(sources, nil))
	s.engine = s.routes()
	return s
}

// Handler returns the HTTP handler.
func (s *Server) Handler() http.Handler { return s.engine }

func (s *Server) routes() *gin.Engine {
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	proxies := make([]string, len(s.proxies))
	for i, p := range s.proxies {
		proxies[i] = p.String()
	}
	if err := r.SetTrustedProxies(proxies); err != nil {
		panic("ingest: a netip.Prefix gin cannot parse: " + err.Error())
	}
	r.HandleMethodNotAllowed = true
	r.Use(gin.CustomRecoveryWithWriter(io.Discard, func(c *gin.Context, rec any) {
		s.log.Error("handler panic", "path", c.FullPath(), "panic", fmt.Sprint(rec))
		c.AbortWithStatusJSON(http.StatusInternalServerError, gin.H{"error": "internal error"})
	}))
	// The public listener serves the webhook routes and their OpenAPI
	// document, nothing else: metrics, health and profiles are on the
	// operations listener.
	unrouted := func(status int, msg string) gin.HandlerFunc {
		return func(c *gin.Context) {
			start := time.Now()
			c.JSON(status, gin.H{"error": msg})
			s.observe(Delivery{Route: "unmatched", Status: status, Outcome: Refused, Reason: ReasonNoRoute, Elapsed: time.Since(start),
				At: start, Bytes: max(c.Request.ContentLength, 0)})
		}
	}
	r.NoRoute(unrouted(http.StatusNotFound, "no such route"))
	r.NoMethod(unrouted(http.StatusMethodNotAllowed, "method not allowed"))
	r.GET("/openapi.json", func(c *gin.Context) { c.Data(http.StatusOK, "application/json", openAPI) })

	r.POST("/webhooks/:name", func(c *gin.Context) {
		set := s.sources.Load()
		s.serve(c, set, set.byName[c.Param("name")])
	})
	// The built-in providers' own routes, served whatever the
	// configuration (the OpenAPI document lists them); the registry has
	// made sure no two claim one route.
	for _, p := range providers() {
		for _, route := range p.Routes {
			r.POST(route, func(c *gin.Context) {
				set := s.sources.Load()
				s.serve(c, set, set.byProvider[p.Name][c.Param("id")])
			})
		}
	}
	return r
}

// serve is the whole request pipeline: refusal budget -> raw bytes ->
// verify -> rate limit -> replay and dedupe -> normalize -> produce, all
// with the sources of set, loaded when the request arrived. src is nil
// when the route named no configured source.
func (s *Server) serve(c *gin.Context, set *sourceSet, src *Source) {
	start := time.Now()
	// The client is only worked out for a refusal budget.
	var client netip.Prefix
	budgeted := s.refusals != nil
	if budgeted {
		client, budgeted = clientPrefix(c.ClientIP())
	}
	var a acceptance
	var err error
	if budgeted && s.refusals.exhausted(client, s.now()) {
		err = errTooManyRefusals
	} else {
		a, err = s.accept(c.Request, set, src)
		if err != nil && !a.verified && budgeted {
			s.refusals.charge(client, s.now())
		}
	}
	n := a.records
	status := http.StatusAccepted
	defer func() {
		d := Delivery{Route: c.FullPath(), Status: c.Writer.Status(), Outcome: Accepted, Records: n, Elapsed: time.Since(start),
			At: start, Bytes: max(c.Request.ContentLength, 0), DeliveryID: a.deliveryID, Written: a.written}
		if a.read {
			d.Bytes = a.bytes
		}
		if src != nil {
			d.Source = src.Name
		}
		switch {
		case err != nil:
			d.Outcome, d.Reason = Refused, reasonOf(err)
		case a.duplicate:
			d.Outcome = Duplicate
		}
		s.observe(d)
	}()
	if err != nil {
		status = statusOf(err)
		s.logRefusal(c, src, a.deliveryID, status, err)
		switch status {
		case http.StatusServiceUnavailable, http.StatusTooManyRequests:
			c.Header("Retry-After", s.retryAfter)
		case http.StatusRequestEntityTooLarge:
			// The rest of an oversized body is not read: close the
			// connection rather than drain it.
			c.Header("Connection", "close")
		}
		if errors.Is(err, errTooManyRefusals) {
			c.Header("Connection", "close") // its body was not read either
		}
	}
	if src != nil {
		if r, ok := src.Adapter.(Responder); ok {
			if err == nil {
				status = http.StatusOK
			}
			c.JSON(status, r.Respond(status, n, err))
			return
		}
	}
	if err != nil {
		msg := err.Error()
		if status == http.StatusInternalServerError {
			msg = "internal error"
		}
		c.JSON(status, gin.H{"error": msg})
		return
	}
	// {"accepted":n}, written without reflection and without gin's
	// rendering: the answer to nearly every request.
	body := make([]byte, 0, 24)
	body = strconv.AppendInt(append(body, `{"accepted":`...), int64(n), 10)
	if h := c.Writer.Header(); len(h["Content-Type"]) == 0 {
		h["Content-Type"] = jsonContentType
	}
	c.Status(status)
	_, _ = c.Writer.Write(append(body, '}')) // a failed write is the client's loss: it has gone
}

// jsonContentType is the Content-Type of the JSON answers written without
// gin's rendering; it is shared, and never written to.
var jsonContentType = []string{"application/json; charset=utf-8"}

// observe tells every observer of d.
func (s *Server) observe(d Delivery) {
	for _, o := range s.observers {
		o.Observe(d)
	}
}

// errTooManyRefusals is the refusal budget's answer (429).
var errTooManyRefusals = fmt.Errorf("%w: too many refused requests from this address; fix the credentials or signature and retry later", ErrRateLimited)

// acceptance is what accept made of a delivery.
type acceptance struct {
	// records is how many records the delivery wrote, or stands for.
	records int
	// verified says the delivery passed authentication: a refusal after
	// that is not the client's to be charged for.
	verified bool
	// duplicate says it was a retry or a replay, answered without writing.
	duplicate bool
	// read says the body was read, and bytes is its length.
	read  bool
	bytes int64
	// deliveryID is the verified delivery's id, bounded; "" until verified.
	deliveryID string
	// written lists the records written, once Kafka acknowledged them.
	written []Written
}

// accept reads, verifies and writes one delivery of src, one of set.
func (s *Server) accept(req *http.Request, set *sourceSet, src *Source) (acceptance, error) {
	if src == nil {
		return acceptance{}, ErrUnknownSource
	}
	body, err := readBody(req, src.MaxBody)
	if err != nil {
		return acceptance{}, err
	}
	a := acceptance{read: true, bytes: int64(len(body))}
	if err := checkBasicAuth(src, req); err != nil {
		return a, err
	}
	r := &Request{Header: req.Header, Body: body, Received: s.now().UTC()}
	v, err := src.Adapter.Verify(req.Context(), r)
	if err != nil {
		return a, err
	}
	a.verified, a.deliveryID = true, truncate(v.Identity.ID, maxDeliveryID)
	if lim := set.limits[src.Name]; lim != nil && !lim.Allow() {
		return a, fmt.Errorf("%w for source %s", ErrRateLimited, src.Name)
	}
	var replayKey, dedupeKey string
	replays, seen := set.replays[src.Name], set.seen[src.Name]
	if replays != nil {
		if replayKey = v.ReplayKey; replayKey != "" {
			if n, dup := replays.Get(replayKey); dup {
				s.log.Info("replayed delivery answered without writing", "source", src.Name)
				a.records, a.duplicate = n, true
				return a, nil
			}
		}
	}
	if seen != nil {
		id := v.Identity
		if dedupeKey = id.key(body); dedupeKey != "" {
			if n, dup := seen.Get(dedupeKey); dup {
				s.log.Info("duplicate delivery answered without writing", "source", src.Name, "delivery_id", id.ID)
				a.records, a.duplicate = n, true
				return a, nil
			}
		}
	}
	batch, err := src.Adapter.Normalize(req.Context(), v)
	if err != nil {
		return a, err
	}
	held, records, written, err := s.records(src, batch)
	if err != nil {
		s.recycle(held)
		return a, err
	}
	if len(records) > 0 {
		// The wait is bounded by the produce timeout alone, not cut short
		// when the sender hangs up: its records are on their way either
		// way, and the delivery log can then say where they were written.
		// (Nor does the request's context pay for a child to cancel.)
		ctx, cancel := context.WithTimeout(context.WithoutCancel(req.Context()), s.timeout)
		defer cancel()
		if err := s.out.Producer.Produce(ctx, records...); err != nil {
			return a, err // some records may still be in flight: not reused
		}
		// The producer has set each record's partition and offset by now.
		for i, r := range records {
			written[i].Partition, written[i].Offset = r.Partition, r.Offset
		}
		a.written = written
		s.recycle(held)
	}
	if replayKey != "" {
		replays.Add(replayKey, len(records))
	}
	if dedupeKey != "" {
		seen.Add(dedupeKey, len(records))
	}
	a.records = len(records)
	return a, nil
}

// key is what the dedupe memory remembers the delivery by: its id alone
// when the signature covers the id, else the id and a hash of the body,
// so that an id put on another body is never taken for a retry. "" when
// the delivery has no id.
func (id Identity) key(body []byte) string {
	if id.ID == "" || id.Signed {
		return id.ID
	}
	sum := sha256.Sum256(body)
	return id.ID + "\x00" + hex.EncodeToString(sum[:16])
}

// records encodes a batch as Kafka records, changes first, and lists
// what each one is: the delivery's Written, once Kafka has acknowledged
// them and their partitions and offsets are known. held are the records
// with their buffers, each taken from the pool: the caller hands them to
// recycle once nothing refers to them any longer.
func (s *Server) records(src *Source, b Batch) (held []*headedRecord, records []*kgo.Record, written []Written, err error) {
	held = make([]*headedRecord, 0, b.Len())
	records = make([]*kgo.Record, 0, b.Len())
	written = make([]Written, 0, b.Len())
	add := func(topic, key, eventID string, encode func([]byte) ([]byte, error)) error {
		r := s.record()
		held = append(held, r)
		v, err := encode(r.value[:0])
		if err != nil {
			return err
		}
		r.value = v
		r.ids = append(append(r.ids[:0], key...), eventID...)
		r.Record = kgo.Record{Topic: topic, Key: r.ids[:len(key):len(key)], Value: v}
		r.headers = [2]kgo.RecordHeader{{Key: "event-id", Value: r.ids[len(key):]}, {Key: "source", Value: src.nameHeader()}}
		r.Headers = r.headers[:]
		records = append(records, &r.Record)
		written = append(written, Written{Topic: topic, Key: key, EventID: eventID})
		return nil
	}
	for i := range b.Changes {
		c := &b.Changes[i]
		if err := add(s.out.ChangesTopic, c.Key(), c.EventID, func(dst []byte) ([]byte, error) { return s.out.Encoder.AppendChange(dst, c) }); err != nil {
			return held, nil, nil, fmt.Errorf("encode change: %w", err)
		}
	}
	for i := range b.Events {
		e := &b.Events[i]
		if err := add(s.out.EventsTopic, e.Key(), e.EventID, func(dst []byte) ([]byte, error) { return s.out.Encoder.AppendEvent(dst, e) }); err != nil {
			return held, nil, nil, fmt.Errorf("encode event: %w", err)
		}
	}
	return held, records, written, nil
}

// headedRecord is a record, the two headers every record of the edge
// carries, and the buffers its value and its key and event id are
// written to: allocated together, and reused once Kafka acknowledged
// the record.
type headedRecord struct {
	kgo.Record
	headers [2]kgo.RecordHeader
	value   []byte
	ids     []byte // the key, then the event id
}

// maxPooledValue bounds the value buffer a record keeps for reuse: the
// rare large body's buffer goes to the garbage collector instead of
// pinning its size in the pool.
const maxPooledValue = 64 << 10

// record returns a record from the pool, or a new one.
func (s *Server) record() *headedRecord {
	if r, ok := s.pool.Get().(*headedRecord); ok {
		return r
	}
	return &headedRecord{}
}

// recycle returns records to the pool. Only records nothing refers to
// any longer may be: never written, or acknowledged by Kafka (the
// Producer keeps no reference to a record once it returned nil).
func (s *Server) recycle(held []*headedRecord) {
	for _, r := range held {
		if cap(r.value) > maxPooledValue {
			continue
		}
		r.Record, r.headers = kgo.Record{}, [2]kgo.RecordHeader{}
		s.pool.Put(r)
	}
}

// checkBasicAuth enforces the source's basic auth, when it has one.
func checkBasicAuth(src *Source, req *http.Request) error {
	if src.BasicAuth == nil {
		return nil
	}
	user, pass, ok := req.BasicAuth()
	match := 0
	for _, p := range src.BasicAuth.Passwords {
		match |= subtle.ConstantTimeCompare([]byte(pass), []byte(p))
	}
	if !ok || subtle.ConstantTimeCompare([]byte(user), []byte(src.BasicAuth.Username)) != 1 || match != 1 {
		return fmt.Errorf("%w: missing or invalid basic auth", ErrUnauthorized)
	}
	return nil
}

// readBody reads the whole body, refusing more than limit bytes: at once
// when Content-Length says so, otherwise (chunked) as soon as it is exceeded.
func readBody(req *http.Request, limit int64) ([]byte, error) {
	if req.ContentLength > limit {
		return nil, fmt.Errorf("%w: limit is %d bytes", ErrBodyTooLarge, limit)
	}
	body, err := readAll(http.MaxBytesReader(nil, req.Body, limit), req.ContentLength)
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return nil, fmt.Errorf("%w: limit is %d bytes", ErrBodyTooLarge, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: reading body: %w", ErrInvalidPayload, err)
	}
	return body, nil
}

// readAll reads r to its end into a buffer sized for size bytes (the
// request's Content-Length; -1 when unknown), not grown from 512 bytes as
// io.ReadAll's is. size is the sender's word: it is never allocated beyond
// what is read past maxPresize.
func readAll(r io.Reader, size int64) ([]byte, error) {
	if size < 0 {
		return io.ReadAll(r)
	}
	// One byte more than size, so that the read that meets the end needs
	// no room of its own.
	b := make([]byte, 0, min(size, maxPresize)+1)
	for {
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)] // room to read on: a larger array
		}
	}
}

// maxPresize bounds the buffer readAll allocates up front on the sender's
// word, before any byte of the body came: small, so that connections that
// announce large bodies and send nothing hold little memory. Most
// deliveries fit; a larger body grows as io.ReadAll's does.
const maxPresize = 16 << 10

// logRefusal logs a refused request with its source and, once the
// delivery was verified, its delivery id (an unverified one is the
// sender's word only, and is not logged).
func (s *Server) logRefusal(c *gin.Context, src *Source, deliveryID string, status int, err error) {
	attrs := []any{"status", status, "path", c.Request.URL.Path, "reason", err.Error()}
	if src != nil {
		attrs = append(attrs, "source", src.Name)
	}
	if deliveryID != "" {
		attrs = append(attrs, "delivery_id", deliveryID)
	}
	if status >= 500 {
		s.log.Warn("request not accepted", attrs...)
	} else {
		s.log.Info("request refused", attrs...)
	}
}
