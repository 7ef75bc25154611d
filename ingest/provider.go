package ingest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"time"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/jsondepth"
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

// Factory builds the adapter of one configured source. It reads the
// source's provider-specific settings from cfg.Options, decoded strictly
// (decodeOptions), or from the deprecated top-level block that predates
// options (sns, hmac, payload), and compiles them once. A configuration
// problem is a *config.FieldError whose Field is relative to the source
// ("options.header", "secrets"): NewSources prefixes "sources[i].".
// deps are the resources shared by every source.
type Factory func(cfg config.Source, deps Deps) (Adapter, error)

// Registration is one provider as the registry knows it: data that needs no
// source to be read (its name, its routes, its body limit), and the factory
// that builds a source's adapter.
type Registration struct {
	// Name is the provider's name in configuration ("lisa").
	Name string
	// Routes are the provider-compatible POST routes, each with an ":id"
	// parameter matched against the sources' ID. Every source is also
	// served at /webhooks/{name}.
	Routes []string
	// MaxBody is the body limit in bytes of a source that sets none.
	MaxBody int64
	// New builds a source's adapter.
	New Factory
}

// Adapter is one configured source's half of the pipeline raw bytes ->
// verify -> normalize -> produce. It holds the source's compiled settings
// and is safe for concurrent use. Optional abilities are the interfaces
// Signer, Responder and ReplayGuard.
type Adapter interface {
	// Verify authenticates a delivery from its headers and exact raw body
	// and returns what it parsed on the way, so that nothing is parsed
	// twice. It must not write anywhere; it may fetch what the scheme
	// requires (SNS certificates) within ctx. Errors wrap
	// ErrMissingSignature, ErrMalformedSignature (400), ErrBadSignature,
	// ErrUnauthorized (401), ErrForbidden (403), ErrStale (401), or for a
	// body that cannot even be checked ErrInvalidPayload (400) and
	// ErrUnavailable (503).
	Verify(ctx context.Context, req *Request) (Verified, error)
	// Normalize turns a delivery that this adapter's Verify accepted into
	// what it carries. Errors wrap ErrInvalidPayload, or ErrUnavailable
	// when a required outbound step failed for now.
	Normalize(ctx context.Context, v Verified) (Batch, error)
}

// Verified is a delivery an adapter's Verify accepted, with what Verify
// learnt about it.
type Verified struct {
	*Request
	// Identity recognises the delivery when it is sent again; zero when
	// nothing does (an identical body can be a real, repeated change).
	Identity Identity
	// ReplayKey identifies the signed bytes when the signature binds a
	// time (see ReplayGuard): two deliveries share a key only if their
	// signatures vouch for the same bytes. "" when it binds none.
	ReplayKey string
	// envelope is the parsed SNS envelope of a signed SNS delivery (nil
	// for every other scheme, and for SNS raw delivery): Normalize reads
	// the message it carries without parsing the body again.
	envelope *snsEnvelope
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

// Signer is implemented by adapters that can sign a body as their sender
// does: what `productstream sign`, the tests and the load harness send.
// Sign returns every header the sender adds; it uses the source's first
// secret, and the current time where the scheme signs one.
type Signer interface {
	Sign(body []byte) http.Header
}

// Responder is implemented by adapters whose contract fixes the response
// bodies (Datasembly). accepted is the number of records written; err is
// nil on success, else the refusal, whose status is already decided.
type Responder interface {
	Respond(status, accepted int, err error) any
}

// ReplayGuard is implemented by adapters whose signatures bind a time (a
// signed timestamp with a tolerance, SNS's Timestamp with a maximum age).
// Such a delivery stays acceptable for a while after it was signed, so the
// edge remembers each accepted one (by Verified.ReplayKey) for that long
// and answers an exact replay without writing it again, whatever delivery
// id it carries.
type ReplayGuard interface {
	// ReplayWindow is how long a delivery stays acceptable after it was
	// signed, at most; 0 when the source's signatures bind no time.
	ReplayWindow() time.Duration
}

// Deps are the outside resources the factories may use. NewSources hands
// the same Deps to every source's factory.
type Deps struct {
	// Outbound is the client for the few outbound requests a scheme needs
	// (SNS certificates and subscription confirmations). Nil: a hardened
	// default (see NewOutboundClient).
	Outbound *http.Client
	// Log receives what providers log (default slog.Default()).
	Log *slog.Logger

	// shared holds what the sources built by one NewSources call share,
	// made when a factory first asks for it (see Deps.sns). Nil outside
	// NewSources: a factory called on its own gets resources of its own.
	shared *shared
}

// shared is what the sources of one NewSources call share.
type shared struct {
	sns *snsOutbound
}

// log is deps.Log, else slog.Default().
func (d Deps) log() *slog.Logger { return cmp.Or(d.Log, slog.Default()) }

// registry is the provider table: every provider by name.
type registry map[string]Registration

// providers builds the registry of the built-in providers. Adding a
// provider is its file, which declares its Registration, plus one line
// here.
func providers() registry {
	return newRegistry(
		lisaProvider(),
		datasemblyProvider(),
		iimmpactProvider(),
		aicommerceProvider(),
		tipserProvider(),
		hmacProvider(),
		standardWebhooksProvider(),
	)
}

// newRegistry indexes regs by name. Two registrations of one name, or of
// one route, are a programming error.
func newRegistry(regs ...Registration) registry {
	r := registry{}
	routes := map[string]string{}
	for _, reg := range regs {
		if _, dup := r[reg.Name]; dup {
			panic("ingest: two providers named " + reg.Name)
		}
		for _, route := range reg.Routes {
			if other, dup := routes[route]; dup {
				panic("ingest: providers " + other + " and " + reg.Name + " claim route " + route)
			}
			routes[route] = reg.Name
		}
		r[reg.Name] = reg
	}
	return r
}

// with returns a copy of r with regs added (tests register fixtures).
func (r registry) with(regs ...Registration) registry {
	return newRegistry(append(slices.Collect(maps.Values(r)), regs...)...)
}

// names lists the registered providers, sorted.
func (r registry) names() []string { return slices.Sorted(maps.Keys(r)) }

// ProviderNames lists the built-in providers, sorted.
func ProviderNames() []string { return providers().names() }

// Source is a configured source ready to serve: its configuration, its
// adapter and its body limit.
type Source struct {
	config.Source
	// Adapter verifies and normalizes the source's deliveries.
	Adapter Adapter
	// MaxBody is the body limit in bytes: max_body_bytes, else the
	// provider's.
	MaxBody int64
	// name is Name as the bytes of every record's source header, made
	// once by NewSources and shared by the records: never written to.
	name []byte
}

// nameHeader is the value of the source header of the source's records.
func (s *Source) nameHeader() []byte {
	if s.name == nil {
		return []byte(s.Name) // a Source not made by NewSources
	}
	return s.name
}

// NewSources builds every configured source with the built-in providers.
// An unknown provider, or a source its provider refuses, is a
// *config.FieldError naming the field ("sources[1].options.header").
// deps are handed to the providers' factories. A deprecated provider block
// (sns, hmac, payload) is logged as a warning through deps.Log.
func NewSources(cfgs []config.Source, deps Deps) ([]*Source, error) {
	return providers().newSources(cfgs, deps)
}

// newSources is NewSources with the providers of r.
func (r registry) newSources(cfgs []config.Source, deps Deps) ([]*Source, error) {
	if deps.shared == nil {
		deps.shared = &shared{}
	}
	out := make([]*Source, 0, len(cfgs))
	for i, c := range cfgs {
		reg, ok := r[c.Provider]
		if !ok {
			return nil, &config.FieldError{
				Field: fmt.Sprintf("sources[%d].provider", i),
				Msg:   fmt.Sprintf("unknown provider %q (known: %v)", c.Provider, r.names()),
			}
		}
		if err := checkDeprecated(c, deps.log(), i); err != nil {
			return nil, atSource(i, err)
		}
		a, err := reg.New(c, deps)
		if err != nil {
			return nil, atSource(i, err)
		}
		out = append(out, &Source{Source: c, Adapter: a, MaxBody: cmp.Or(c.MaxBodyBytes, reg.MaxBody), name: []byte(c.Name)})
	}
	return out, nil
}

// atSource names a factory's error in full: a *config.FieldError relative
// to the source gets "sources[i]." before its field; any other error
// becomes one on "sources[i]".
func atSource(i int, err error) error {
	var fe *config.FieldError
	if errors.As(err, &fe) {
		return &config.FieldError{Field: fmt.Sprintf("sources[%d].%s", i, fe.Field), Msg: fe.Msg}
	}
	return &config.FieldError{Field: fmt.Sprintf("sources[%d]", i), Msg: err.Error()}
}

// badField is a configuration problem of a source's field, named relative
// to the source ("hmac.header").
func badField(field, format string, args ...any) *config.FieldError {
	return &config.FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// secretKeys returns the source's secrets as keys; at least one is
// required by the providers that sign with a secret.
func secretKeys(cfg config.Source) ([]*macKey, error) {
	if len(cfg.Secrets) == 0 {
		return nil, badField("secrets", "%s needs at least one secret", cfg.Provider)
	}
	keys := make([]*macKey, len(cfg.Secrets))
	for i, s := range cfg.Secrets {
		keys[i] = &macKey{secret: []byte(s)}
	}
	return keys, nil
}

// origin is what every record of a source is stamped with, and how deeply
// its payloads may nest.
type origin struct {
	name, namespace string
	maxDepth        int
}

// originOf compiles cfg's origin: a source built without the
// configuration's defaults gets jsondepth.Default.
func originOf(cfg config.Source) origin {
	depth := cfg.MaxJSONDepth
	if depth <= 0 {
		depth = jsondepth.Default
	}
	return origin{name: cfg.Name, namespace: cfg.Namespace, maxDepth: depth}
}

// bodyID is the identity of a delivery whose body names its own event and
// time, so that an identical body is a retry: the body's hash, which the
// signature over the body covers.
func (o origin) bodyID(body []byte) Identity {
	return Identity{ID: bodyEventID(o.name, body), Signed: true}
}
