package config

import (
	"errors"
	"testing"
)

// The runtime settings stay unset unless configured (the role decides
// then), keep what is configured within bounds, and refuse the rest,
// naming the field.
func TestRuntimeSettings(t *testing.T) {
	for _, tc := range []struct {
		yaml     string
		gc       any // nil: unset
		limit    any
		badField string
	}{
		{"{}", nil, nil, ""},
		{"runtime: {gc_percent: 200, memory_limit_bytes: 1073741824}", 200, int64(1 << 30), ""},
		{"runtime: {gc_percent: -1, memory_limit_bytes: 536870912}", -1, int64(512 << 20), ""},
		{"runtime: {gc_percent: -1}", -1, nil, ""},
		{"runtime: {memory_limit_bytes: 0}", nil, int64(0), ""},
		{"runtime: {gc_percent: 24}", nil, nil, "runtime.gc_percent"},
		{"runtime: {gc_percent: 10001}", nil, nil, "runtime.gc_percent"},
		{"runtime: {gc_percent: -2}", nil, nil, "runtime.gc_percent"},
		{"runtime: {memory_limit_bytes: 1048576}", nil, nil, "runtime.memory_limit_bytes"},
		{"runtime: {gc_percent: -1, memory_limit_bytes: 0}", nil, nil, "runtime.gc_percent"},
	} {
		cfg, err := Parse([]byte(tc.yaml), env(nil))
		if err != nil {
			t.Fatalf("%s: %v", tc.yaml, err)
		}
		err = cfg.Validate(Needs{})
		var fe *FieldError
		if tc.badField != "" {
			if !errors.As(err, &fe) || fe.Field != tc.badField {
				t.Errorf("%s: %v, want an error naming %s", tc.yaml, err, tc.badField)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.yaml, err)
		}
		deref := func(p any) any {
			switch p := p.(type) {
			case *int:
				if p != nil {
					return *p
				}
			case *int64:
				if p != nil {
					return *p
				}
			}
			return nil
		}
		if gc, limit := deref(cfg.Runtime.GCPercent), deref(cfg.Runtime.MemoryLimitBytes); gc != tc.gc || limit != tc.limit {
			t.Errorf("%s: gc_percent %v, memory_limit_bytes %v; want %v, %v", tc.yaml, gc, limit, tc.gc, tc.limit)
		}
	}
}
