package ingest

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/productstream/productstream/config"
)

// A provider's own settings are its options: the source's `options:` block,
// which its factory decodes strictly into its own options type. Before
// options existed they were top-level blocks of the source (sns, hmac,
// payload); those keep working, with a warning at start, so that a
// configuration file written for an older release still starts.
//
// The options types of tipser, hmac and standardwebhooks are built on
// config.SNS, config.HMAC and config.Payload: config decodes the
// deprecated blocks into them and applies SNS's defaults there, and it
// cannot import this package. Their docs and defaults (config.DefaultSNS*)
// stay in one place.

// optionsKey is the source's key for its provider's options.
const optionsKey = "options"

// hasOptions reports whether the source has an options block (null is none).
func hasOptions(cfg config.Source) bool {
	n := cfg.Options
	return n.Kind != 0 && !(n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}

// deprecatedBlocks are the provider blocks that were top-level keys of a
// source before options, and where their keys belong now.
var deprecatedBlocks = []struct {
	key, now string
	set      func(config.Source) bool
}{
	{"sns", optionsKey, func(c config.Source) bool { return c.SNS != nil }},
	{"hmac", optionsKey, func(c config.Source) bool { return c.HMAC != nil }},
	{"payload", optionsKey + ".payload", func(c config.Source) bool { return c.Payload != nil }},
}

// checkDeprecated logs a warning for each deprecated block cfg sets (the
// factory still reads it), and refuses one set beside an options block:
// the two would have to be merged, and one would silently lose. i is the
// source's index, for the warning.
func checkDeprecated(cfg config.Source, log *slog.Logger, i int) error {
	for _, b := range deprecatedBlocks {
		if !b.set(cfg) {
			continue
		}
		if hasOptions(cfg) {
			return badField(b.key, "is deprecated and cannot be combined with %s: move its keys to %s", optionsKey, b.now)
		}
		at := fmt.Sprintf("sources[%d].", i)
		log.Warn("deprecated configuration key; it still works, but move its keys to the new place",
			"source", cfg.Name, "key", at+b.key, "new_place", at+b.now)
	}
	return nil
}

// decodeOptions decodes the source's options block into dst strictly: a
// key dst does not name, or a value of the wrong type, is a
// *config.FieldError on the key's path ("options.max_age"). A missing or
// null block leaves dst as it is.
func decodeOptions(cfg config.Source, dst any) error {
	if !hasOptions(cfg) {
		return nil
	}
	return decodeStrict(&cfg.Options, reflect.ValueOf(dst).Elem(), optionsKey)
}

// noOptions refuses options for a provider that has none (an empty
// mapping is none).
func noOptions(cfg config.Source) error {
	if n := cfg.Options; hasOptions(cfg) && (n.Kind != yaml.MappingNode || len(n.Content) > 0) {
		return badField(optionsKey, "provider %s takes no options", cfg.Provider)
	}
	return nil
}

// decodeStrict decodes n into v, refusing keys v's struct types do not
// name, at any depth. Errors name the path below at.
func decodeStrict(n *yaml.Node, v reflect.Value, at string) error {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	t := v.Type()
	elem := t
	if elem.Kind() == reflect.Pointer {
		elem = elem.Elem()
	}
	if elem.Kind() != reflect.Struct || reflect.PointerTo(elem).Implements(reflect.TypeFor[yaml.Unmarshaler]()) {
		if err := n.Decode(v.Addr().Interface()); err != nil {
			return badField(at, "%s", yamlMessage(err))
		}
		return nil
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return badField(at, "must be a mapping")
	}
	if t.Kind() == reflect.Pointer {
		if v.IsNil() {
			v.Set(reflect.New(elem))
		}
		v = v.Elem()
	}
	fields := yamlFieldsOf(elem)
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		key := n.Content[i].Value
		path := at + "." + key
		index, ok := fields[key]
		if !ok {
			return badField(path, "unknown key (known: %s)", strings.Join(slices.Sorted(maps.Keys(fields)), ", "))
		}
		if seen[key] {
			return badField(path, "is set twice")
		}
		seen[key] = true
		if err := decodeStrict(n.Content[i+1], v.FieldByIndex(index), path); err != nil {
			return err
		}
	}
	return nil
}

// yamlFieldsOf maps each key of options type t to its field: every field
// of an options type names its key in a yaml tag, or is ",inline" (its
// keys are the inlined struct's).
func yamlFieldsOf(t reflect.Type) map[string][]int {
	out := map[string][]int{}
	for i := range t.NumField() {
		tag := t.Field(i).Tag.Get("yaml")
		if tag == ",inline" {
			for key, index := range yamlFieldsOf(t.Field(i).Type) {
				out[key] = append([]int{i}, index...)
			}
		} else if key, _, _ := strings.Cut(tag, ","); key != "" && key != "-" {
			out[key] = []int{i}
		}
	}
	return out
}

// yamlMessage is a decoding error's text without yaml's prefix and line
// numbers, which point into the expanded document, not the user's file.
func yamlMessage(err error) string {
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg := te.Errors[0]
		if _, rest, found := strings.Cut(msg, ": "); found && strings.HasPrefix(msg, "line ") {
			msg = rest
		}
		return msg
	}
	return strings.TrimPrefix(err.Error(), "yaml: ")
}
