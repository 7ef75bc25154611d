package config

import (
	"errors"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// The console section: loopback needs no credentials, any other address
// does, and every user and token is checked, each error naming its field.
func TestConsoleValidation(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("correct horse battery"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	token := strings.Repeat("t", MinConsoleTokenLength)
	for _, tc := range []struct {
		name, yaml string
		fields     []string // the fields the errors must name; none: valid
	}{
		{"loopback without credentials", `console: {listen: "127.0.0.1:9465"}`, nil},
		{"ipv6 loopback", `console: {listen: "[::1]:9465"}`, nil},
		{"localhost", `console: {listen: "localhost:9465"}`, nil},
		{"every interface without credentials", `console: {listen: ":9465"}`, []string{"console.listen"}},
		{"a public address without credentials", `console: {listen: "10.0.0.5:9465"}`, []string{"console.listen"}},
		{"a public address with a token", `console: {listen: "0.0.0.0:9465", tokens: [{name: ci, token: "` + token + `", scopes: [view]}]}`, nil},
		{"a public address with a user", `console: {listen: "0.0.0.0:9465", users: [{name: ops, password_hash: "` + string(hash) + `", scopes: [view, payloads]}]}`, nil},
		{"not host:port", `console: {listen: "9465"}`, []string{"console.listen"}},
		{"a password instead of a hash", `console: {users: [{name: ops, password_hash: "hunter2", scopes: [view]}]}`, []string{"console.users[0].password_hash"}},
		{"a short token", `console: {tokens: [{name: ci, token: "short", scopes: [view]}]}`, []string{"console.tokens[0].token"}},
		{"an unknown scope", `console: {tokens: [{name: ci, token: "` + token + `", scopes: [admin]}]}`, []string{"console.tokens[0].scopes"}},
		{"no scope", `console: {tokens: [{name: ci, token: "` + token + `"}]}`, []string{"console.tokens[0].scopes"}},
		{"a name twice", `console: {users: [{name: ci, password_hash: "` + string(hash) + `", scopes: [view]}], tokens: [{name: ci, token: "` + token + `", scopes: [view]}]}`, []string{"console.tokens[0].name"}},
		{"a scrape URL that is not http", `console: {scrape: ["file:///etc/passwd"]}`, []string{"console.scrape[0]"}},
		{"a negative window", `console: {timeline_window: -1h}`, []string{"console.timeline_window"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tc.yaml), env(nil))
			if err != nil {
				t.Fatal(err)
			}
			err = cfg.Validate(Needs{})
			if len(tc.fields) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			for _, f := range tc.fields {
				var fe *FieldError
				found := false
				for _, e := range unjoin(err) {
					if errors.As(e, &fe) && fe.Field == f {
						found = true
					}
				}
				if !found {
					t.Errorf("want an error naming %s, got %v", f, err)
				}
			}
			if err != nil && strings.Contains(err.Error(), "hunter2") {
				t.Error("the error shows the configured secret")
			}
		})
	}
	if cfg, _ := Parse(nil, env(nil)); cfg.Console.TimelineWindow != DefaultTimelineWindow || cfg.Console.Listen != "" || cfg.Console.Actions {
		t.Errorf("defaults: %+v", cfg.Console)
	}
}

// unjoin splits a joined error.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	if err == nil {
		return nil
	}
	return []error{err}
}

// The log section: its defaults, and an unknown format or level refused
// naming the field.
func TestLogValidation(t *testing.T) {
	cfg, err := Parse(nil, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Log.Format != "text" || cfg.Log.Level != "info" {
		t.Fatalf("defaults %+v", cfg.Log)
	}
	cfg, err = Parse([]byte("log: {format: xml, level: loud}"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	err = cfg.Validate(Needs{})
	for _, f := range []string{"log.format", "log.level"} {
		if err == nil || !strings.Contains(err.Error(), f+":") {
			t.Errorf("want an error naming %s, got %v", f, err)
		}
	}
	if cfg, _ := Parse([]byte("log: {format: json, level: debug}"), env(nil)); cfg.Validate(Needs{}) != nil {
		t.Errorf("json and debug refused: %v", cfg.Validate(Needs{}))
	}
}
