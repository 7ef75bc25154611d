package ingest

import (
	"bytes"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/productstream/productstream/config"
)

// providerTests is, for every provider, its run of the shared conformance
// suite and its fuzz targets. Adding a provider without them fails
// TestEveryProviderIsTested.
var providerTests = map[string]struct {
	conformance func(*testing.T)
	fuzz        []func(*testing.F)
}{
	"lisa":             {TestLiSAConformance, []func(*testing.F){FuzzLiSAVerify, FuzzLiSANormalize}},
	"datasembly":       {TestDatasemblyConformance, []func(*testing.F){FuzzDatasemblyVerify, FuzzDatasemblyNormalize}},
	"iimmpact":         {TestIIMMPACTConformance, []func(*testing.F){FuzzIIMMPACTVerify, FuzzIIMMPACTNormalize}},
	"aicommerce":       {TestAICommerceConformance, []func(*testing.F){FuzzAICommerceVerify, FuzzAICommerceNormalize}},
	"tipser":           {TestTipserConformance, []func(*testing.F){FuzzSNSEnvelope, FuzzSNSCertURL, FuzzTipserMessage}},
	"hmac":             {TestGenericHMACConformance, []func(*testing.F){FuzzGenericHMACVerify, FuzzConfigurableNormalize}},
	"standardwebhooks": {TestStandardWebhooksConformance, []func(*testing.F){FuzzStandardWebhooksVerify, FuzzConfigurableNormalize}},
	"acme":             {TestAcmeConformance, []func(*testing.F){FuzzAcmeVerify, FuzzAcmeNormalize}},
}

// Every registered provider, the test fixtures' included, runs the
// conformance suite and has fuzz targets; nothing is listed that is not
// registered.
func TestEveryProviderIsTested(t *testing.T) {
	registered := testProviders().names()
	for _, name := range registered {
		if pt, ok := providerTests[name]; !ok || pt.conformance == nil || len(pt.fuzz) == 0 {
			t.Errorf("provider %s has no conformance case or no fuzz target in providerTests", name)
		}
	}
	for name := range providerTests {
		if !slices.Contains(registered, name) {
			t.Errorf("providerTests lists %s, which is not registered", name)
		}
	}
	if !slices.Contains(ProviderNames(), "lisa") || slices.Contains(ProviderNames(), "acme") {
		t.Errorf("built-in providers %v: want lisa, and never the test fixture", ProviderNames())
	}
}

// A registry refuses two providers of one name or one route: the server
// would serve only one of them.
func TestRegistryRefusesClashes(t *testing.T) {
	for _, tc := range []struct {
		name string
		reg  Registration
	}{
		{"same name", Registration{Name: "lisa", New: newAcme}},
		{"same route", Registration{Name: "other", Routes: []string{"/plugin-notifications/:id/updates"}, New: newAcme}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("no panic")
				}
			}()
			providers().with(tc.reg)
		})
	}
}

// optionsOf decodes text as a source's options block.
func optionsOf(t testing.TB, text string) config.Source {
	t.Helper()
	return config.Source{Options: acmeOptionsNode(t, text)}
}

// The options block configures tipser, hmac and standardwebhooks as their
// deprecated blocks do, with the same defaults, and the sources it builds
// are the same.
func TestOptionsEqualDeprecatedBlocks(t *testing.T) {
	yml := func(key string, block string) string {
		return "sources:\n  - name: s\n    provider: PROVIDER\n    namespace: ns\n    secrets: [" + cfgWhsec("s1") + "]\n    " + key + ":\n" + block
	}
	for _, tc := range []struct{ provider, deprecated, options string }{
		{"tipser",
			yml("sns", "      topic_arns: [\""+tipserTopic+"\"]\n"),
			yml("options", "      topic_arns: [\""+tipserTopic+"\"]\n")},
		{"tipser",
			yml("sns", "      topic_arns: [\""+tipserTopic+"\"]\n      strict: false\n      max_age: 2h\n      signature_versions: [\"2\"]\n"),
			yml("options", "      topic_arns: [\""+tipserTopic+"\"]\n      strict: false\n      max_age: 2h\n      signature_versions: [\"2\"]\n")},
		{"hmac",
			yml("hmac", "      header: X-Shopify-Hmac-Sha256\n      encoding: base64\n      event_id_header: X-Shopify-Webhook-Id\n") +
				"    payload:\n      id_pointer: /id\n      type_header: X-Shopify-Topic\n      delete_types: [products/delete]\n",
			yml("options", "      header: X-Shopify-Hmac-Sha256\n      encoding: base64\n      event_id_header: X-Shopify-Webhook-Id\n"+
				"      payload:\n        id_pointer: /id\n        type_header: X-Shopify-Topic\n        delete_types: [products/delete]\n")},
		{"hmac",
			yml("hmac", "      header: X-Signature\n      prefix: \"v1=\"\n      signed: \"{timestamp}.{body}\"\n      timestamp_header: X-Timestamp\n") +
				"    payload:\n      id_pointer: /data/id\n",
			yml("options", "      header: X-Signature\n      prefix: \"v1=\"\n      signed: \"{timestamp}.{body}\"\n      timestamp_header: X-Timestamp\n"+
				"      payload:\n        id_pointer: /data/id\n")},
		{"standardwebhooks",
			yml("payload", "      id_pointer: /data/id\n      type_pointer: /type\n"),
			yml("options", "      payload:\n        id_pointer: /data/id\n        type_pointer: /type\n")},
	} {
		t.Run(tc.provider, func(t *testing.T) {
			var built []Adapter
			for _, text := range []string{tc.deprecated, tc.options} {
				cfg, err := config.Parse([]byte(strings.Replace(text, "PROVIDER", tc.provider, 1)), func(string) (string, bool) { return "", false })
				if err != nil {
					t.Fatal(err)
				}
				srcs, err := NewSources(cfg.Sources, Deps{Log: slog.New(slog.DiscardHandler)})
				if err != nil {
					t.Fatalf("%v in\n%s", err, text)
				}
				built = append(built, srcs[0].Adapter)
			}
			if tp, ok := built[0].(*tipser); ok { // the outbound resources are each call's own
				other := built[1].(*tipser)
				if !reflect.DeepEqual(tp.policy, other.policy) {
					t.Fatalf("policies differ: %+v and %+v", tp.policy, other.policy)
				}
				return
			}
			if !reflect.DeepEqual(built[0], built[1]) {
				t.Fatalf("deprecated blocks and options build different sources:\n%+v\n%+v", built[0], built[1])
			}
		})
	}
	// The defaults of an options block are config's.
	src := oneSource(t, config.Source{Name: "t", Provider: "tipser", Options: optionsOf(t, `topic_arns: ["`+tipserTopic+`"]`).Options})
	if p := src.Adapter.(*tipser).policy; p.strict != config.DefaultSNSStrict || p.maxAge != config.DefaultSNSMaxAge || !slices.Equal(p.versions, []string{"1", "2"}) {
		t.Fatalf("options defaults: strict %v, max age %s, versions %v", p.strict, p.maxAge, p.versions)
	}
}

// An options block is decoded strictly; its errors name the key under
// sources[i].options, and a deprecated block beside it is refused.
func TestOptionsErrors(t *testing.T) {
	secrets := []string{"s1"}
	sw := []string{cfgWhsec("s1")}
	for _, tc := range []struct {
		name     string
		provider string
		secrets  []string
		options  string
		edit     func(*config.Source)
		field    string
	}{
		{"tipser without topics", "tipser", nil, `strict: true`, nil, "sources[0].options.topic_arns"},
		{"tipser topic not an ARN", "tipser", nil, `topic_arns: [nope]`, nil, "sources[0].options.topic_arns[0]"},
		{"tipser unknown key", "tipser", nil, `{topic_arns: ["` + tipserTopic + `"], topic_arn: x}`, nil, "sources[0].options.topic_arn"},
		{"tipser max_age not a duration", "tipser", nil, `{topic_arns: ["` + tipserTopic + `"], max_age: soon}`, nil, "sources[0].options.max_age"},
		{"tipser negative max_age", "tipser", nil, `{topic_arns: ["` + tipserTopic + `"], max_age: -1s}`, nil, "sources[0].options.max_age"},
		{"tipser key set twice", "tipser", nil, "topic_arns: [\"" + tipserTopic + "\"]\ntopic_arns: [\"" + tipserTopic + "\"]", nil, "sources[0].options.topic_arns"},
		{"tipser sns beside options", "tipser", nil, `topic_arns: ["` + tipserTopic + `"]`,
			func(s *config.Source) { s.SNS = &config.SNS{TopicARNs: []string{tipserTopic}} }, "sources[0].sns"},
		{"options not a mapping", "tipser", nil, `[1, 2]`, nil, "sources[0].options"},
		{"hmac without header", "hmac", secrets, `{payload: {id_pointer: /id}}`, nil, "sources[0].options.header"},
		{"hmac bad encoding", "hmac", secrets, `{header: X-Sig, encoding: base32, payload: {id_pointer: /id}}`, nil, "sources[0].options.encoding"},
		{"hmac tolerance without timestamp", "hmac", secrets, `{header: X-Sig, tolerance: 1m, payload: {id_pointer: /id}}`, nil, "sources[0].options.tolerance"},
		{"hmac without payload", "hmac", secrets, `{header: X-Sig}`, nil, "sources[0].options.payload"},
		{"hmac without id pointer", "hmac", secrets, `{header: X-Sig, payload: {type_pointer: /type}}`, nil, "sources[0].options.payload.id_pointer"},
		{"hmac unknown payload key", "hmac", secrets, `{header: X-Sig, payload: {id_pointer: /id, id_ptr: /x}}`, nil, "sources[0].options.payload.id_ptr"},
		{"hmac empty delete type", "hmac", secrets, `{header: X-Sig, payload: {id_pointer: /id, delete_types: [d, ""]}}`, nil, "sources[0].options.payload.delete_types[1]"},
		{"hmac payload beside options", "hmac", secrets, `{header: X-Sig, payload: {id_pointer: /id}}`,
			func(s *config.Source) { s.Payload = &config.Payload{IDPointer: "/id"} }, "sources[0].payload"},
		{"standardwebhooks hmac in options", "standardwebhooks", sw, `{header: X-Sig, payload: {id_pointer: /id}}`, nil, "sources[0].options.header"},
		{"standardwebhooks without payload", "standardwebhooks", sw, `{}`, nil, "sources[0].options.payload"},
		{"lisa takes no options", "lisa", secrets, `{key: value}`, func(s *config.Source) { s.APIKeys = []string{"k"} }, "sources[0].options"},
		{"datasembly takes no options", "datasembly", secrets, `{key: value}`, nil, "sources[0].options"},
		{"null options are none", "datasembly", secrets, `null`, nil, ""},
		{"empty options are none", "datasembly", secrets, `{}`, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := optionsOf(t, tc.options)
			src.Name, src.Provider, src.Secrets = "s", tc.provider, tc.secrets
			if tc.edit != nil {
				tc.edit(&src)
			}
			_, err := NewSources([]config.Source{src}, Deps{})
			wantFieldError(t, err, tc.field)
		})
	}
}

// A deprecated block still starts its source, with a warning at start that
// names the key and where its keys go now; an options block gives none.
func TestDeprecatedBlocksWarn(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	deprecated := []config.Source{
		{Name: "lisa", Provider: "lisa", Secrets: []string{"s"}, APIKeys: []string{"k"}},
		{Name: "shop", Provider: "hmac", Secrets: []string{"s"}, HMAC: cfgShopifyHMAC, Payload: cfgShopifyPayload},
		{Name: "tip", Provider: "tipser", SNS: &config.SNS{TopicARNs: []string{tipserTopic}}},
	}
	if _, err := NewSources(deprecated, Deps{Log: log}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"key=sources[1].hmac new_place=sources[1].options",
		"key=sources[1].payload new_place=sources[1].options.payload",
		"key=sources[2].sns new_place=sources[2].options",
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("no warning %q in\n%s", want, logs.String())
		}
	}
	if n := strings.Count(logs.String(), "level=WARN"); n != 3 {
		t.Errorf("%d warnings, want 3:\n%s", n, logs.String())
	}
	logs.Reset()
	current := optionsOf(t, `topic_arns: ["`+tipserTopic+`"]`)
	current.Name, current.Provider, current.DedupeWindow = "tip", "tipser", time.Minute
	if _, err := NewSources([]config.Source{current}, Deps{Log: log}); err != nil || logs.Len() != 0 {
		t.Fatalf("options block: %v, logged %q", err, logs.String())
	}
}
