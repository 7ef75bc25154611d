package config

import (
	"errors"
	"strings"
	"testing"
)

// A sinks section is validated with errors naming each bad field, and its
// defaults are applied.
func TestSinksValidation(t *testing.T) {
	good := `
sinks:
  - name: search
    type: opensearch
    opensearch: {urls: ["http://127.0.0.1:9200"]}
  - name: catalog-db
    type: postgres
    batch: {max_bytes: 512KiB}
    postgres: {dsn: "postgres://postgres@127.0.0.1:5432/postgres"}
  - name: cache
    type: redis
    namespaces: [shop-eu]
    redis: {addr: "127.0.0.1:6379"}
  - name: feed
    type: webhook
    from: updates
    webhook: {url: "https://partner.example/hooks", secrets: ["whsec_c2VjcmV0LXNlY3JldA=="]}
`
	cfg, err := Parse([]byte(good), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(Needs{}); err != nil {
		t.Fatalf("valid sinks refused: %v", err)
	}
	s := cfg.Sinks
	switch {
	case s[0].From != "products" || s[0].OpenSearch.Index != "search" || s[0].Batch.MaxRecords != 1000 || s[0].Batch.MaxBytes != 5<<20:
		t.Errorf("opensearch defaults: %+v", s[0])
	case s[1].Postgres.Table != "catalog_db" || s[1].Batch.MaxBytes != 512<<10:
		t.Errorf("postgres defaults: %+v %+v", s[1], s[1].Postgres)
	case s[2].Redis.KeyPrefix != "product:":
		t.Errorf("redis key prefix %q", s[2].Redis.KeyPrefix)
	case s[3].Webhook.Timeout != DefaultWebhookTimeout || s[3].Webhook.Concurrency != DefaultWebhookParallel:
		t.Errorf("webhook defaults: %+v", s[3].Webhook)
	}

	cases := []struct {
		name, yaml, field string
	}{
		{"duplicate name", `[{name: a, type: redis, redis: {addr: "h:1"}}, {name: a, type: redis, redis: {addr: "h:1"}}]`, "sinks[1].name"},
		{"unknown type", `[{name: a, type: kafka}]`, "sinks[0].type"},
		{"missing block", `[{name: a, type: redis}]`, "sinks[0].redis"},
		{"block of another type", `[{name: a, type: redis, redis: {addr: "h:1"}, postgres: {dsn: x}}]`, "sinks[0].postgres"},
		{"unknown from", `[{name: a, from: products2, type: redis, redis: {addr: "h:1"}}]`, "sinks[0].from"},
		{"bad index", `[{name: a, type: opensearch, opensearch: {urls: ["http://h:9200"], index: "Upper"}}]`, "sinks[0].opensearch.index"},
		{"refresh too short", `[{name: a, type: opensearch, opensearch: {urls: ["http://h:9200"], refresh_interval: 10ms}}]`, "sinks[0].opensearch.refresh_interval"},
		{"bad table", `[{name: a, type: postgres, postgres: {dsn: x, table: "drop table;"}}]`, "sinks[0].postgres.table"},
		{"url with credentials", `[{name: a, type: opensearch, opensearch: {urls: ["http://u:p@h:9200"]}}]`, "sinks[0].opensearch.urls[0]"},
		{"webhook not http", `[{name: a, type: webhook, webhook: {url: "file:///etc/passwd", secrets: ["whsec_abcd"]}}]`, "sinks[0].webhook.url"},
		{"webhook secret", `[{name: a, type: webhook, webhook: {url: "https://h/x", secrets: ["plain"]}}]`, "sinks[0].webhook.secrets[0]"},
		{"retry bounds", `[{name: a, type: redis, retry: {initial: 1s, max: 10ms}, redis: {addr: "h:1"}}]`, "sinks[0].retry"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse([]byte("sinks: "+tc.yaml), env(nil))
			if err != nil {
				t.Fatal(err)
			}
			err = cfg.Validate(Needs{})
			var fe *FieldError
			if !errors.As(err, &fe) || !strings.Contains(err.Error(), tc.field+":") {
				t.Fatalf("error %v does not name %s", err, tc.field)
			}
			if strings.Contains(err.Error(), "u:p@") || strings.Contains(err.Error(), "plain") {
				t.Fatalf("error %v repeats a credential", err)
			}
		})
	}
	if cfg, err := Parse([]byte(`sinks: [{name: a, type: redis, batch: {linger: 0s}, redis: {addr: "h:1"}}]`), env(nil)); err != nil || *cfg.Sinks[0].Batch.Linger != 0 {
		t.Errorf("linger: 0s must mean no wait, not the default: %v", err)
	}
	if *s[0].Batch.Linger != DefaultSinkLinger {
		t.Errorf("linger defaults to %v", *s[0].Batch.Linger)
	}
	if _, err := Parse([]byte(`sinks: [{name: a, type: redis, batch: {max_bytes: 5XB}, redis: {addr: "h:1"}}]`), env(nil)); err == nil {
		t.Fatal("a size of 5XB was accepted")
	}
}
