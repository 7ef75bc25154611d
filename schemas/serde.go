package schemas

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/linkedin/goavro/v2"
	"github.com/twmb/franz-go/pkg/sr"
)

// ErrNotRegistered surfaces from Serde's encoders when Register has not
// been called for the kind.
var ErrNotRegistered = errors.New("schema not registered")

// ErrUnknownSchema surfaces from Serde's decoders when a record names a
// schema ID the registry does not know (or could not be asked about).
var ErrUnknownSchema = errors.New("unknown schema id")

// Serde encodes productstream's records in the Confluent wire format (magic
// byte, 4-byte schema ID, Avro binary) and decodes any record whose writer
// schema the registry knows, reading fields by name so that records written
// with an older compatible schema decode too. It is safe for concurrent use.
type Serde struct {
	reg    *sr.Client
	hdr    sr.ConfluentHeader
	ids    [numKinds]int
	codecs sync.Map // schema ID -> *goavro.Codec
	plans  sync.Map // schema ID -> *recordPlan, nil when the map decodes it (DecodeChange)
	// enc encodes the current schemas, planned by the first Register
	// (before any kind has an ID).
	encOnce sync.Once
	enc     encoders
	encErr  error
}

// NewSerde returns a Serde that looks writer schemas up in reg. Call
// Register before encoding.
func NewSerde(reg *sr.Client) *Serde { return &Serde{reg: reg} }

// Register registers the current schema of each kind under the value
// subject of each of its topics (idempotent: the registry returns the
// existing ID for a schema it has) and remembers the IDs for encoding. A
// kind on several topics encodes with the first ID the registry gave it
// (registries that number by content give the same ID everywhere; a reader
// looks any ID up, whatever subject holds it).
func (s *Serde) Register(ctx context.Context, topics map[Kind][]string) error {
	s.encOnce.Do(func() { s.encErr = s.enc.plan() })
	if s.encErr != nil {
		return fmt.Errorf("plan the schemas' encoding: %w", s.encErr)
	}
	for kind, names := range topics {
		text := Current(kind)
		codec, err := goavro.NewCodecForStandardJSONFull(text)
		if err != nil {
			return fmt.Errorf("compile %s schema: %w", kind, err)
		}
		s.ids[kind] = 0
		for _, topic := range names {
			id, err := s.reg.RegisterSchema(ctx, Subject(topic), sr.Schema{Schema: text, Type: sr.TypeAvro}, -1, -1)
			if err != nil {
				return fmt.Errorf("register %s under %s: %w", kind, Subject(topic), err)
			}
			if s.ids[kind] == 0 {
				s.ids[kind] = id
			}
			s.codecs.Store(id, codec)
		}
	}
	return nil
}

// ID returns the registered schema ID of kind (0 before Register).
func (s *Serde) ID(k Kind) int { return s.ids[k] }

// encode appends x, encoded with re as kind k's current schema, to dst,
// first growing dst to hold sizeHint more bytes when it has not the room:
// the record's encoded size, estimated from its strings, so that it is
// written without growing the buffer again and again.
func encode[T any](s *Serde, k Kind, re *recordEncoder[T], dst []byte, x *T, sizeHint int) ([]byte, error) {
	id := s.ids[k]
	if id == 0 {
		return nil, fmt.Errorf("%s: %w", k, ErrNotRegistered)
	}
	if cap(dst)-len(dst) < sizeHint {
		dst = slices.Grow(dst, sizeHint)
	}
	b, _ := s.hdr.AppendEncode(dst, id, nil)
	b, err := re.encode(b, x)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", k, err)
	}
	return b, nil
}

// EncodeChange encodes a change as a ProductChange record value.
func (s *Serde) EncodeChange(c *Change) ([]byte, error) {
	hint := c.sizeHint()
	return encode(s, KindChange, s.enc.change, make([]byte, 0, hint), c, hint)
}

// AppendChange appends a change, encoded as EncodeChange encodes it, to
// dst: a buffer its caller reuses.
func (s *Serde) AppendChange(dst []byte, c *Change) ([]byte, error) {
	return encode(s, KindChange, s.enc.change, dst, c, c.sizeHint())
}

// EncodeState encodes a state: a product's as a ProductState record value,
// any other resource's as a ResourceState.
func (s *Serde) EncodeState(st *State) ([]byte, error) {
	if st.IsProduct() {
		hint := st.sizeHint()
		return encode(s, KindState, s.enc.state, make([]byte, 0, hint), st, hint)
	}
	hint := st.sizeHint()
	return encode(s, KindResource, s.enc.resource, make([]byte, 0, hint), st, hint)
}

// EncodeUpdate encodes an update as a ProductUpdate record value.
func (s *Serde) EncodeUpdate(u *Update) ([]byte, error) {
	_, b, err := s.EncodeStateAndUpdate(u.State, u)
	return b, err
}

// EncodeEvent encodes an analytics event as an AnalyticsEvent record value.
func (s *Serde) EncodeEvent(e *Event) ([]byte, error) {
	hint := e.sizeHint()
	return encode(s, KindEvent, s.enc.event, make([]byte, 0, hint), e, hint)
}

// AppendEvent appends an analytics event, encoded as EncodeEvent encodes
// it, to dst: a buffer its caller reuses.
func (s *Serde) AppendEvent(dst []byte, e *Event) ([]byte, error) {
	return encode(s, KindEvent, s.enc.event, dst, e, e.sizeHint())
}

// DecodeEvent decodes an AnalyticsEvent record value.
func (s *Serde) DecodeEvent(ctx context.Context, b []byte) (Event, error) {
	n, _, err := s.decode(ctx, b)
	if err != nil {
		return Event{}, err
	}
	return eventFromNative(n)
}

// codec returns the codec for a writer schema ID, asking the registry once.
func (s *Serde) codec(ctx context.Context, id int) (*goavro.Codec, error) {
	if c, ok := s.codecs.Load(id); ok {
		return c.(*goavro.Codec), nil
	}
	sch, err := s.reg.SchemaByID(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("%w %d: %w", ErrUnknownSchema, id, err)
	}
	c, err := goavro.NewCodecForStandardJSONFull(sch.Schema)
	if err != nil {
		return nil, fmt.Errorf("compile schema %d: %w", id, err)
	}
	actual, _ := s.codecs.LoadOrStore(id, c)
	return actual.(*goavro.Codec), nil
}

// decode strips the wire header and decodes the Avro body to native form.
func (s *Serde) decode(ctx context.Context, b []byte) (any, *goavro.Codec, error) {
	id, body, err := s.hdr.DecodeID(b)
	if err != nil {
		return nil, nil, fmt.Errorf("wire header: %w", err)
	}
	c, err := s.codec(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	native, rest, err := c.NativeFromBinary(body)
	if err != nil {
		return nil, nil, fmt.Errorf("decode schema %d: %w", id, err)
	}
	if len(rest) != 0 {
		return nil, nil, fmt.Errorf("decode schema %d: %d trailing bytes", id, len(rest))
	}
	return native, c, nil
}

// DecodeChange decodes a ProductChange record value. It decodes field by
// field where the writer schema allows (changePlan); a value that does not
// decode so is decoded again through the map, which reports its error.
func (s *Serde) DecodeChange(ctx context.Context, b []byte) (Change, error) {
	id, body, err := s.hdr.DecodeID(b)
	if err != nil {
		return Change{}, fmt.Errorf("wire header: %w", err)
	}
	c, err := s.codec(ctx, id)
	if err != nil {
		return Change{}, err
	}
	if plan := s.changePlan(id, c); plan != nil {
		var ch Change
		if rest, err := changeByPlan(plan, body, &ch); err == nil && len(rest) == 0 {
			return ch, nil
		}
	}
	n, _, err := s.decode(ctx, b)
	if err != nil {
		return Change{}, err
	}
	return changeFromNative(n)
}

// DecodeState decodes a ProductState or ResourceState record value.
func (s *Serde) DecodeState(ctx context.Context, b []byte) (State, error) {
	n, _, err := s.decode(ctx, b)
	if err != nil {
		return State{}, err
	}
	return stateFromNative(n)
}

// DecodeUpdate decodes a ProductUpdate record value.
func (s *Serde) DecodeUpdate(ctx context.Context, b []byte) (Update, error) {
	n, _, err := s.decode(ctx, b)
	if err != nil {
		return Update{}, err
	}
	return updateFromNative(n)
}

// DecodeJSON decodes any registered Avro record value to plain JSON (unions
// unwrapped), for tools that print records.
func (s *Serde) DecodeJSON(ctx context.Context, b []byte) (json.RawMessage, error) {
	n, c, err := s.decode(ctx, b)
	if err != nil {
		return nil, err
	}
	out, err := c.TextualFromNative(nil, n)
	if err != nil {
		return nil, fmt.Errorf("render JSON: %w", err)
	}
	return out, nil
}
