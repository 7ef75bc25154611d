package ingest

import (
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/schemas"
)

// Provider is one upstream sender's contract: how it authenticates, what its
// payload means, and where it posts. Implementations are stateless and safe
// for concurrent use; all per-source data lives in *Source.
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
	// Verify authenticates a request from its headers and the exact raw
	// body. It is a pure function. Errors wrap ErrMissingSignature,
	// ErrMalformedSignature (400), or ErrBadSignature, ErrUnauthorized (401).
	Verify(src *Source, h http.Header, body []byte) error
	// Normalize turns a verified body into the changes it carries, in order.
	// It is called only after Verify succeeded. Errors wrap ErrInvalidPayload.
	Normalize(src *Source, h http.Header, body []byte, received time.Time) ([]schemas.Change, error)
	// Sign returns the headers a sender adds to post body to src: what
	// `productstream sign`, the tests and the load harness send.
	Sign(src *Source, body []byte) http.Header
}

// providers is the registry of provider contracts by name. Adding a provider
// is its file plus one line here.
var providers = map[string]Provider{
	"lisa": lisa{},
}

// ProviderNames lists the registered providers, sorted.
func ProviderNames() []string {
	names := make([]string, 0, len(providers))
	for n := range providers {
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
}

// NewSources resolves each configured source's provider and checks its
// provider-specific configuration. An unknown provider is an error naming it.
func NewSources(cfgs []config.Source) ([]*Source, error) {
	out := make([]*Source, 0, len(cfgs))
	for i, c := range cfgs {
		p, ok := providers[c.Provider]
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
		out = append(out, s)
	}
	return out, nil
}
