package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/topics"
)

// Every topic a sink may read (config.SinkSources) has its topic, and
// every sink type (config.SinkTypes) its builder.
func TestEverySinkSourceAndTypeIsWired(t *testing.T) {
	names := topics.For("p.")
	for _, from := range config.SinkSources {
		if got := sinkTopic(names, from); got == "" || !strings.HasPrefix(got, "p.") {
			t.Errorf("from %q reads topic %q", from, got)
		}
	}
	builders := sinkBuilders()
	for _, typ := range config.SinkTypes {
		if builders[typ] == nil {
			t.Errorf("sink type %q has no builder", typ)
		}
	}
	if len(builders) != len(config.SinkTypes) {
		t.Errorf("%d builders for %d sink types", len(builders), len(config.SinkTypes))
	}
}

// The sink command refuses what it cannot run, saying why, before it
// connects to anything.
func TestSinkCommandRefusals(t *testing.T) {
	dir := t.TempDir()
	noSinks := filepath.Join(dir, "none.yaml")
	if err := os.WriteFile(noSinks, []byte("kafka: {brokers: [\"127.0.0.1:1\"]}\nschema_registry: {url: \"http://127.0.0.1:1\"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	badSink := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(badSink, []byte("sinks: [{name: x, type: redis}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args []string
		want string
	}{
		{[]string{}, "--config is required"},
		{[]string{"--config", noSinks}, "the config has no sinks"},
		{[]string{"--config", badSink}, "sinks[0].redis: is required"},
		{[]string{"explain", "x", "--config", noSinks}, "usage:"},
		{[]string{"explain", "x", "ns:1", "--config", noSinks}, `no sink named "x"`},
		{[]string{"rebuild", "x", "--config", badSink}, "sinks[0].redis: is required"},
	}
	for _, tc := range cases {
		err := runSinkCommand(context.Background(), tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("sink %v: %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
}
