package config

import (
	"errors"
	"testing"
)

// processor.dedupe_event_ids defaults to 16, keeps an explicit 0 (off),
// and refuses a value out of range, naming the field.
func TestDedupeEventIDs(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		want int
		bad  bool
	}{
		{"{}", DefaultDedupeEventIDs, false},
		{"processor: {dedupe_event_ids: 0}", 0, false},
		{"processor: {dedupe_event_ids: 256}", 256, false},
		{"processor: {dedupe_event_ids: 257}", 0, true},
		{"processor: {dedupe_event_ids: -1}", 0, true},
	} {
		cfg, err := Parse([]byte(tc.yaml), env(nil))
		if err != nil {
			t.Fatalf("%s: %v", tc.yaml, err)
		}
		err = cfg.Validate(Needs{})
		var fe *FieldError
		switch {
		case tc.bad && (!errors.As(err, &fe) || fe.Field != "processor.dedupe_event_ids"):
			t.Errorf("%s: %v, want an error naming processor.dedupe_event_ids", tc.yaml, err)
		case !tc.bad && err != nil:
			t.Errorf("%s: %v", tc.yaml, err)
		case !tc.bad && *cfg.Processor.DedupeEventIDs != tc.want:
			t.Errorf("%s: dedupe_event_ids %d, want %d", tc.yaml, *cfg.Processor.DedupeEventIDs, tc.want)
		}
	}
	if d := Demo(); *d.Processor.DedupeEventIDs != DefaultDedupeEventIDs {
		t.Errorf("demo dedupe_event_ids %d, want %d", *d.Processor.DedupeEventIDs, DefaultDedupeEventIDs)
	}
}
