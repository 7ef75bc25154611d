package schemas

import (
	"encoding/json"
	"fmt"
	"sync"

	"github.com/linkedin/goavro/v2"
)

// An update embeds its product's full state, and the processor writes both:
// encoding the state once and appending its Avro body to the update's other
// fields halves the encoding work. Avro's binary encoding of a record is
// the concatenation of its fields' encodings, and a union is the branch
// index (a zigzag varint) followed by the value, so the composed bytes are
// exactly what encoding the whole update gives (a test checks this).

var updateHead struct {
	once  sync.Once
	codec *goavro.Codec
	err   error
}

// updateHeadCodec compiles the current ProductUpdate schema without its
// last field, state.
func updateHeadCodec() (*goavro.Codec, error) {
	updateHead.once.Do(func() {
		var sch map[string]any
		if err := json.Unmarshal([]byte(Current(KindUpdate)), &sch); err != nil {
			updateHead.err = err
			return
		}
		fields, _ := sch["fields"].([]any)
		if len(fields) == 0 || fields[len(fields)-1].(map[string]any)["name"] != "state" {
			updateHead.err = fmt.Errorf("ProductUpdate: state must be the last field")
			return
		}
		sch["fields"], sch["name"] = fields[:len(fields)-1], "ProductUpdateHead"
		text, _ := json.Marshal(sch)
		updateHead.codec, updateHead.err = goavro.NewCodecForStandardJSONFull(string(text))
	})
	return updateHead.codec, updateHead.err
}

// EncodeStateAndUpdate encodes a product's state (nil after a delete) and
// its update, whose State must be st: the same bytes as EncodeState and
// EncodeUpdate, with the state encoded once.
func (s *Serde) EncodeStateAndUpdate(st *State, u *Update) (state, update []byte, err error) {
	head, err := updateHeadCodec()
	if err != nil {
		return nil, nil, err
	}
	if st != nil {
		if state, err = s.EncodeState(st); err != nil {
			return nil, nil, err
		}
	}
	id := s.ids[KindUpdate]
	if id == 0 {
		return nil, nil, fmt.Errorf("%s: %w", KindUpdate, ErrNotRegistered)
	}
	fields := *u
	fields.State = nil // the state is appended encoded: do not build its native form
	n := fields.native()
	delete(n, "state")
	update, _ = s.hdr.AppendEncode(make([]byte, 0, 64+len(state)), id, nil)
	if update, err = head.BinaryFromNative(update, n); err != nil {
		return nil, nil, fmt.Errorf("encode %s: %w", KindUpdate, err)
	}
	if st == nil {
		return state, append(update, 0), nil // union branch 0: null
	}
	const confluentHeader = 5
	return state, append(append(update, 2), state[confluentHeader:]...), nil // branch 1, zigzag
}
