package processor

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// setMembers keeps what a map from name to member would hold, later
// members winning, sorted by name: over random batches of new, repeated
// and duplicated names, from empty and from held members.
func TestSetMembersMatchesAMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 500 {
		want := map[string]member{}
		var held []rawMember
		for batch := range 1 + rng.IntN(6) {
			members := make([]rawMember, rng.IntN(40))
			for i := range members {
				name := fmt.Sprintf("k%02d", rng.IntN(30))
				members[i] = rawMember{name, member{key: `"` + name + `"`, value: fmt.Sprint(round, batch, i)}}
				want[name] = members[i].member
			}
			held = setMembers(held, members)
			names := make([]string, 0, len(want))
			for name := range want {
				names = append(names, name)
			}
			slices.Sort(names)
			if len(held) != len(names) {
				t.Fatalf("round %d batch %d: %d members held, want %d", round, batch, len(held), len(names))
			}
			for i, name := range names {
				if held[i].name != name || held[i].member != want[name] {
					t.Fatalf("round %d batch %d: member %d is %v, want %s %v", round, batch, i, held[i], name, want[name])
				}
			}
		}
	}
}
