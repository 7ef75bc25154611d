package schemas

import "fmt"

// An update embeds its product's full state, and the processor writes both:
// encoding the state once and appending its Avro body to the update's other
// fields halves the encoding work. Avro's binary encoding of a record is
// the concatenation of its fields' encodings, and a union is the branch
// index (a zigzag varint) followed by the value, so the composed bytes are
// exactly what encoding the whole update gives (a test checks this).

// EncodeStateAndUpdate encodes a product's state (nil after a delete) and
// its update, whose State must be st: the same bytes as EncodeState and
// EncodeUpdate, with the state encoded once.
func (s *Serde) EncodeStateAndUpdate(st *State, u *Update) (state, update []byte, err error) {
	if st != nil {
		if state, err = s.EncodeState(st); err != nil {
			return nil, nil, err
		}
	}
	id := s.ids[KindUpdate]
	if id == 0 {
		return nil, nil, fmt.Errorf("%s: %w", KindUpdate, ErrNotRegistered)
	}
	update, _ = s.hdr.AppendEncode(make([]byte, 0, 64+len(state)), id, nil)
	if update, err = s.enc.updateHead.encode(update, u); err != nil {
		return nil, nil, fmt.Errorf("encode %s: %w", KindUpdate, err)
	}
	if st == nil {
		return state, append(update, 0), nil // union branch 0: null
	}
	const confluentHeader = 5
	return state, append(append(update, 2), state[confluentHeader:]...), nil // branch 1, zigzag
}
