// Package schemas holds productstream's Avro schemas (the .avsc files beside
// this file, embedded) and their codecs: Go types for each record, and a Serde
// that writes the Confluent wire format against a Confluent-API schema
// registry and reads any record whose writer schema the registry knows.
//
// Evolving a schema: edit the .avsc, copy it to published/<name>.vN.avsc and
// add a line to Published with the next free ID. The tests refuse a current
// file that is not the latest published version, and a published version
// that is not BACKWARD compatible with every earlier one.
package schemas

import (
	"embed"
	"fmt"
)

//go:embed *.avsc published/*.avsc
var files embed.FS

// Kind names one of productstream's record types.
type Kind int

// The record kinds, one per topic family.
const (
	KindChange   Kind = iota // ProductChange, on <prefix>changes
	KindState                // ProductState, on <prefix>products
	KindUpdate               // ProductUpdate, on <prefix>updates
	KindEvent                // AnalyticsEvent, on <prefix>events
	KindResource             // ResourceState, on <prefix>collections, categories, options, groups and pos
	numKinds
)

// Kinds lists every kind, in ID order.
var Kinds = []Kind{KindChange, KindState, KindUpdate, KindEvent, KindResource}

// kindNames holds each kind's record name and the name of its .avsc file
// (without the extension).
var kindNames = [numKinds]struct{ record, file string }{
	KindChange:   {"ProductChange", "product_change"},
	KindState:    {"ProductState", "product_state"},
	KindUpdate:   {"ProductUpdate", "product_update"},
	KindEvent:    {"AnalyticsEvent", "analytics_event"},
	KindResource: {"ResourceState", "resource_state"},
}

func (k Kind) String() string {
	if k < 0 || k >= numKinds {
		return fmt.Sprintf("Kind(%d)", int(k))
	}
	return kindNames[k].record
}

func (k Kind) file() string {
	if k < 0 || k >= numKinds {
		panic(fmt.Sprintf("schemas: unknown kind %d", int(k)))
	}
	return kindNames[k].file
}

// Version is one published version of a kind's schema. ID is the schema ID
// the embedded registry gives it, the same on every start.
type Version struct {
	Kind    Kind
	Version int
	ID      int
}

// Published lists every published schema version, oldest first. Append only.
var Published = []Version{
	{KindChange, 1, 1},
	{KindState, 1, 2},
	{KindUpdate, 1, 3},
	{KindEvent, 1, 4},
	{KindChange, 2, 5},
	{KindState, 2, 6},
	{KindUpdate, 2, 7},
	{KindResource, 1, 8},
	{KindState, 3, 9},
	{KindUpdate, 3, 10},
	{KindResource, 2, 11},
}

// Current returns the schema text of kind as it is written now.
func Current(k Kind) string {
	return mustRead(k.file() + ".avsc")
}

// Text returns the schema text of a published version.
func (v Version) Text() string {
	return mustRead(fmt.Sprintf("published/%s.v%d.avsc", v.Kind.file(), v.Version))
}

func mustRead(name string) string {
	b, err := files.ReadFile(name)
	if err != nil {
		panic(fmt.Sprintf("schemas: embedded file %s: %v", name, err))
	}
	return string(b)
}

// Subject is the registry subject of a topic's values (TopicNameStrategy).
func Subject(topic string) string { return topic + "-value" }
