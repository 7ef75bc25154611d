package config

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// The processor settings whose zero is a value of its own take their
// default when unset, keep an explicit 0, and refuse a value out of range,
// naming the field.
func TestProcessorSettingsWithAZero(t *testing.T) {
	for _, s := range []struct {
		field string
		get   func(*Config) any
		def   any
		cases []settingCase
	}{
		{"processor.dedupe_event_ids", func(c *Config) any { return *c.Processor.DedupeEventIDs }, DefaultDedupeEventIDs, []settingCase{
			{"processor: {dedupe_event_ids: 0}", 0},
			{"processor: {dedupe_event_ids: 256}", 256},
			{"processor: {dedupe_event_ids: 257}", nil},
			{"processor: {dedupe_event_ids: -1}", nil},
		}},
		{"processor.commit_interval", func(c *Config) any { return *c.Processor.CommitInterval }, DefaultCommitInterval, []settingCase{
			{"processor: {commit_interval: 0s}", time.Duration(0)},
			{"processor: {commit_interval: 200ms}", 200 * time.Millisecond},
			{"processor: {commit_interval: 1s}", time.Second},
			{"processor: {commit_interval: 1001ms}", nil},
			{"processor: {commit_interval: -1ms}", nil},
		}},
	} {
		cases := append(s.cases, settingCase{"{}", s.def})
		for _, tc := range cases {
			cfg, err := Parse([]byte(tc.yaml), env(nil))
			if err != nil {
				t.Fatalf("%s: %v", tc.yaml, err)
			}
			err = cfg.Validate(Needs{})
			var fe *FieldError
			switch {
			case tc.want == nil && (!errors.As(err, &fe) || fe.Field != s.field):
				t.Errorf("%s: %v, want an error naming %s", tc.yaml, err, s.field)
			case tc.want != nil && err != nil:
				t.Errorf("%s: %v", tc.yaml, err)
			case tc.want != nil && fmt.Sprint(s.get(cfg)) != fmt.Sprint(tc.want):
				t.Errorf("%s: %s %v, want %v", tc.yaml, s.field, s.get(cfg), tc.want)
			}
		}
		if got := s.get(Demo()); fmt.Sprint(got) != fmt.Sprint(s.def) {
			t.Errorf("demo %s %v, want %v", s.field, got, s.def)
		}
	}
}

// settingCase is a configuration and the value it sets, nil if refused.
type settingCase struct {
	yaml string
	want any
}
