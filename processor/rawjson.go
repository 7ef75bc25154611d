package processor

import "github.com/productstream/productstream/rawjson"

// rawMember is one top-level member of a JSON object: its key unescaped
// (name), as written, and its value's text. A member a state holds also
// keeps its key in the state's field times ("raw.<name>"; "" until one is
// needed).
type rawMember struct {
	name string
	member
	timeKey string
}

// rawObject is a change's raw JSON split into its top-level members, once,
// where the change is decoded: merging then parses nothing. object is
// false when the raw JSON is no valid JSON object, which replaces the
// state's raw JSON whole.
type rawObject struct {
	members []rawMember
	object  bool
}

// splitRaw validates text, splits it into its top-level members if it is
// an object (appending them to dst), and reports whether it nests deeper
// than limit, in one pass (rawjson.Split). Members slice text without
// copying it.
func splitRaw(text string, dst []rawMember, limit int) (raw rawObject, tooDeep bool) {
	raw.members, raw.object, tooDeep = rawjson.Split(text, dst, limit, newRawMember)
	return raw, tooDeep
}

// newRawMember is rawjson's member as the processor keeps it.
func newRawMember(m rawjson.Member) rawMember {
	return rawMember{name: m.Name, member: member{key: m.Key, value: m.Value}}
}
