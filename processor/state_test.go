package processor

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/productstream/productstream/schemas"
)

// Merged raw members come out as a map from name to member would hold
// them, later members winning, in name order: over random objects of new,
// repeated and duplicated names, untimed and timed, onto a key without
// raw and onto one restored with raw of its own.
func TestMergeRawMatchesAMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 400 {
		want := map[string]string{}
		e := &entry{}
		if round%2 == 1 { // restored: raw rendered before, not yet split
			e.state.Raw = `{"k00":"held","k29":"held"}`
			want[`"k00"`], want[`"k29"`] = `"held"`, `"held"`
		}
		for batch := range 1 + rng.IntN(6) {
			var members []string
			for i := range rng.IntN(40) {
				key, value := fmt.Sprintf(`"k%02d"`, rng.IntN(30)), fmt.Sprintf(`"%d.%d.%d"`, round, batch, i)
				members = append(members, key+":"+value)
				want[key] = value
			}
			var ts int64
			if round%3 == 0 {
				ts = int64(1000 + batch) // every batch newer than the last
			}
			mergeRaw(e, "{"+strings.Join(members, ",")+"}", nil, ts)
			e.render()
			keys := make([]string, 0, len(want))
			for k := range want {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			var b strings.Builder
			for i, k := range keys {
				if i > 0 {
					b.WriteByte(',')
				}
				b.WriteString(k + ":" + want[k])
			}
			if got := e.state.Raw; got != "{"+b.String()+"}" {
				t.Fatalf("round %d batch %d: raw %s, want {%s}", round, batch, got, b.String())
			}
			if ts != 0 {
				for _, k := range keys {
					if k != `"k00"` && k != `"k29"` && e.state.FieldTimes["raw."+k[1:len(k)-1]] == 0 {
						t.Fatalf("round %d batch %d: no field time for %s: %v", round, batch, k, e.state.FieldTimes)
					}
				}
			}
		}
	}
}

// A typed field's key in the field times is "fields." and its Avro name.
func TestFieldTimeKeys(t *testing.T) {
	var f schemas.Fields
	var keys []string
	f.OverlayIf(schemas.Fields{Title: new("t"), GTIN: new("g"), SalePrice: new("1")}, func(timeKey string) bool {
		keys = append(keys, timeKey)
		return true
	})
	if want := []string{"fields.title", "fields.sale_price", "fields.gtin"}; !slices.Equal(keys, want) {
		t.Errorf("time keys %v, want %v", keys, want)
	}
}
