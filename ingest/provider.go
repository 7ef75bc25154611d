package ingest

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"time"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/schemas"
)

// Request is what a provider sees of one delivery: its headers, the exact
// raw body (read under the source's limit), and when it arrived.
type Request struct {
	Header   http.Header
	Body     []byte
	Received time.Time
}

// Batch is what one delivery carries: catalog changes for the changes topic
// and analytics events for the events topic, in the order they were sent.
// An empty batch is a delivery that writes nothing (an SNS subscription
// confirmation, say) and is still answered as accepted.
type Batch struct {
	Changes []schemas.Change
	Events  []schemas.Event
}

// Len is the number of records the batch writes.
func (b Batch) Len() int { return len(b.Changes) + len(b.Events) }

// Provider is one upstream sender's contract: how it authenticates, what its
// payload means, and where it posts. A Provider is safe for concurrent use;
// per-source data lives in *Source.
type Provider interface {
	// Name is the provider's name in configuration ("lisa").
	Name() string
	// DefaultMaxBody is the body limit in bytes when a source sets none.
	DefaultMaxBody() int64
	// Check validates the provider-specific parts of a source's
	// configuration, returning a *config.FieldError naming the field.
	Check(index int, src config.Source) error
	// Routes lists the provider-compatible POST routes. Each has an ":id"
	// parameter matched against the sources' ID. Every source is also
	// served at /webhooks/{name}.
	Routes() []string
	// Verify authenticates a delivery from its headers and exact raw body.
	// It must not write anywhere; it may fetch what the scheme requires
	// (SNS certificates) within ctx. Errors wrap ErrMissingSignature,
	// ErrMalformedSignature (400), ErrBadSignature, ErrUnauthorized (401),
	// ErrForbidden (403) or ErrStale (401).
	Verify(ctx context.Context, src *Source, req *Request) error
	// Normalize turns a verified delivery into what it carries. It is called
	// only after Verify succeeded. Errors wrap ErrInvalidPayload, or
	// ErrUnavailable when a required outbound step failed for now.
	Normalize(ctx context.Context, src *Source, req *Request) (Batch, error)
	// Sign returns the headers a sender adds to post body to src: what
	// `productstream sign`, the tests and the load harness send.
	Sign(src *Source, body []byte) http.Header
}

// Responder is implemented by providers whose contract fixes the response
// bodies (Datasembly). accepted is the number of records written; err is
// nil on success, else the refusal, whose status is already decided.
type Responder interface {
	Respond(status, accepted int, err error) any
}

// DeliveryIdentifier is implemented by providers whose deliveries can be
// recognised when retried: a sender's delivery id (SNS MessageId,
// webhook-id) or a body that names its own event and time. A zero Identity
// says this delivery has none; it is then never deduplicated, since an
// identical body can be a real, repeated change.
type DeliveryIdentifier interface {
	DeliveryID(src *Source, req *Request) Identity
}

// Identity is what recognises a delivery when it is sent again.
type Identity struct {
	// ID is the delivery's id; "" when it has none.
	ID string
	// Signed says the signature covers ID. An id it does not cover (a
	// delivery-id header beside a signature over the body) could be put
	// on a forged replay of another body, so the edge then recognises a
	// retry by the id and a hash of the body together: a body it has not
	// seen under that id is never dropped.
	Signed bool
}

// ReplayGuard is implemented by providers whose signatures bind a time (a
// signed timestamp with a tolerance, SNS's Timestamp with a maximum age).
// Such a delivery stays acceptable for a while after it was signed, so the
// edge remembers each accepted one for that long and answers an exact
// replay without writing it again, whatever delivery id it carries.
type ReplayGuard interface {
	// ReplayWindow is how long a delivery to src stays acceptable after
	// it was signed, at most; 0 when src's signatures bind no time.
	ReplayWindow(src *Source) time.Duration
	// ReplayKey identifies the signed bytes of a verified delivery: two
	// deliveries share a key only if their signatures vouch for the same
	// bytes. "" says this delivery binds no time.
	ReplayKey(src *Source, req *Request) string
}

// Deps are the outside resources providers may use.
type Deps struct {
	// Outbound is the client for the few outbound requests a scheme needs
	// (SNS certificates and subscription confirmations). Nil: a hardened
	// default (see NewOutboundClient).
	Outbound *http.Client
	// Log receives what providers log (default slog.Default()).
	Log *slog.Logger
}

// newProviders builds the registry of provider contracts by name. Adding a
// provider is its file plus one line here.
func newProviders(deps Deps) map[string]Provider {
	return map[string]Provider{
		"lisa":             lisa{},
		"datasembly":       datasembly{},
		"iimmpact":         iimmpact{},
		"aicommerce":       aicommerce{},
		"tipser":           newTipser(deps),
		"hmac":             genericHMAC{},
		"standardwebhooks": standardWebhooks{},
	}
}

// ProviderNames lists the registered providers, sorted.
func ProviderNames() []string {
	var names []string
	for n := range newProviders(Deps{}) {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Source is a configured source ready to serve: its configuration, its
// provider and its credentials as bytes.
type Source struct {
	config.Source
	Provider Provider
	MaxBody  int64
	secrets  [][]byte
	apiKeys  [][]byte
	// extra holds what a provider prepared from the configuration at
	// start (parsed keys, compiled templates); its own type.
	extra any
}

// Preparer is implemented by providers that derive per-source data from
// the configuration once at start; the result is kept in Source.extra.
type Preparer interface {
	Prepare(src *Source) (any, error)
}

// NewSources resolves each configured source's provider and checks its
// provider-specific configuration. An unknown provider is an error naming
// it. deps are handed to the providers.
func NewSources(cfgs []config.Source, deps Deps) ([]*Source, error) {
	registry := newProviders(deps)
	out := make([]*Source, 0, len(cfgs))
	for i, c := range cfgs {
		p, ok := registry[c.Provider]
		if !ok {
			return nil, &config.FieldError{
				Field: fmt.Sprintf("sources[%d].provider", i),
				Msg:   fmt.Sprintf("unknown provider %q (known: %v)", c.Provider, ProviderNames()),
			}
		}
		if err := p.Check(i, c); err != nil {
			return nil, err
		}
		s := &Source{Source: c, Provider: p, MaxBody: c.MaxBodyBytes}
		if s.MaxBody == 0 {
			s.MaxBody = p.DefaultMaxBody()
		}
		for _, sec := range c.Secrets {
			s.secrets = append(s.secrets, []byte(sec))
		}
		for _, k := range c.APIKeys {
			s.apiKeys = append(s.apiKeys, []byte(k))
		}
		if pr, ok := p.(Preparer); ok {
			extra, err := pr.Prepare(s)
			if err != nil {
				return nil, &config.FieldError{Field: fmt.Sprintf("sources[%d]", i), Msg: err.Error()}
			}
			s.extra = extra
		}
		out = append(out, s)
	}
	return out, nil
}

// needSecrets is the Check shared by providers that sign with a secret.
func needSecrets(i int, src config.Source) error {
	if len(src.Secrets) == 0 {
		return &config.FieldError{Field: fmt.Sprintf("sources[%d].secrets", i), Msg: src.Provider + " needs at least one secret"}
	}
	return nil
}
