package opensearch

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/opensearch-project/opensearch-go/v4/opensearchapi"

	"github.com/productstream/productstream/sink"
)

// metaKey is the key of the sink's marks in a generation's mapping _meta.
const metaKey = "productstream"

// liveFilter is the alias filter: readers never see deleted documents.
func liveFilter() map[string]any {
	return map[string]any{"term": map[string]any{"deleted": false}}
}

// state is the generation state as OpenSearch holds it.
type state struct {
	live     int   // the generation the alias points at; 0: no alias
	building int   // the generation marked building (never live); 0: none
	all      []int // every generation index, ascending
}

// genIndex names generation n's index.
func (s *Sink) genIndex(n int) string { return s.alias + "-g" + strconv.Itoa(n) }

// parseGen returns the generation an index name stands for, if it is one
// of this sink's (shop-g2, not shop-gx-g2 nor shop-g02).
func (s *Sink) parseGen(index string) (int, bool) {
	digits, ok := strings.CutPrefix(index, s.alias+"-g")
	if !ok || digits == "" || digits[0] == '0' {
		return 0, false
	}
	n, err := strconv.Atoi(digits)
	if err != nil || n < 1 || strconv.Itoa(n) != digits {
		return 0, false
	}
	return n, true
}

// state reads the generation state in one request: the generation indexes
// and whatever the alias points at, with their aliases and mapping _meta.
func (s *Sink) state(ctx context.Context) (state, error) {
	resp, err := s.api.Indices.Get(ctx, opensearchapi.IndicesGetReq{
		Indices: []string{s.alias + "-g*", s.alias},
		Params: opensearchapi.IndicesGetParams{
			IgnoreUnavailable: new(true),
			AllowNoIndices:    new(true),
			// The uuid keeps every index in the answer, marked or not.
			FilterPath: []string{"*.aliases", "*.mappings._meta", "*.settings.index.uuid"},
		},
	})
	if err := check(ctx, "read generations", resp.Inspect().Response, err); err != nil {
		return state{}, err
	}
	var st state
	var lives []string
	if resp.IndicesGetRespData != nil {
		for name, info := range *resp.IndicesGetRespData {
			n, isGen := s.parseGen(name)
			if name == s.alias {
				return state{}, fmt.Errorf("%w: an index named %s exists where the alias belongs", ErrLayout, name)
			}
			if _, ok := info.Aliases[s.alias]; ok {
				if !isGen {
					return state{}, fmt.Errorf("%w: alias %s points at %s, not at one of its generations", ErrLayout, s.alias, name)
				}
				lives = append(lives, name)
				st.live = n
			}
			if !isGen {
				continue
			}
			st.all = append(st.all, n)
			if building(info.Mappings) && n > st.building {
				st.building = n
			}
		}
	}
	if len(lives) > 1 {
		slices.Sort(lives)
		return state{}, fmt.Errorf("%w: alias %s points at %d indexes (%s)", ErrLayout, s.alias, len(lives), strings.Join(lives, ", "))
	}
	if st.building == st.live { // Switch stopped between the alias and the mark
		st.building = 0
	}
	slices.Sort(st.all)
	return st, nil
}

// building reports whether a generation's mappings carry the building mark.
func building(mappings json.RawMessage) bool {
	var m struct {
		Meta map[string]struct {
			Building bool `json:"building"`
		} `json:"_meta"`
	}
	return json.Unmarshal(mappings, &m) == nil && m.Meta[metaKey].Building
}

// Generations returns the live generation (0 when the alias is missing)
// and the one being built (0: none).
func (s *Sink) Generations(ctx context.Context) (live, building int, err error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	st, err := s.state(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("opensearch sink %s: %w", s.alias, err)
	}
	return st.live, st.building, nil
}

// Begin creates generation n (or reuses it) and marks it building, clearing
// the mark of any other: from then on Write indexes every record into it
// too. The live generation cannot be begun again (ErrLiveGeneration).
func (s *Sink) Begin(ctx context.Context, n int) error {
	if n < 1 {
		return fmt.Errorf("opensearch sink %s: begin generation %d: generations start at 1", s.alias, n)
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	st, err := s.state(ctx)
	if err != nil {
		return fmt.Errorf("opensearch sink %s: begin generation %d: %w", s.alias, n, err)
	}
	if n == st.live {
		return fmt.Errorf("opensearch sink %s: begin generation %d: %w", s.alias, n, ErrLiveGeneration)
	}
	if err := s.createGeneration(ctx, n); err != nil {
		return fmt.Errorf("opensearch sink %s: begin generation %d: %w", s.alias, n, err)
	}
	if err := s.mark(ctx, n, true); err != nil {
		return fmt.Errorf("opensearch sink %s: begin generation %d: %w", s.alias, n, err)
	}
	if st.building != 0 && st.building != n {
		if err := s.mark(ctx, st.building, false); err != nil {
			return fmt.Errorf("opensearch sink %s: begin generation %d: %w", s.alias, n, err)
		}
	}
	s.log.Info("opensearch generation building", "generation", n, "live_generation", st.live)
	return nil
}

// At returns a Sink writing to generation n only (the rebuild's writer). It
// shares s's connections: closing it closes nothing. It is a sink.Reader of
// generation n too.
func (s *Sink) At(n int) sink.Sink { return &generation{s: s, n: n} }

// Switch points the alias at generation n, removing it from the old live
// generation in the same POST /_aliases (atomic: a reader sees the old
// generation or the new one, never none), then clears n's building mark.
func (s *Sink) Switch(ctx context.Context, n int) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	st, err := s.state(ctx)
	if err != nil {
		return fmt.Errorf("opensearch sink %s: switch to generation %d: %w", s.alias, n, err)
	}
	if !slices.Contains(st.all, n) {
		return fmt.Errorf("opensearch sink %s: switch to generation %d: %w", s.alias, n, ErrNoGeneration)
	}
	if st.live != n {
		// Everything written to the new generation becomes searchable
		// before readers move to it, or they would see it half empty
		// until the next refresh.
		resp, err := s.api.Indices.Refresh(ctx, &opensearchapi.IndicesRefreshReq{Index: []string{s.genIndex(n)}})
		if err := check(ctx, "refresh "+s.genIndex(n), resp.Inspect().Response, err); err != nil {
			return fmt.Errorf("opensearch sink %s: switch to generation %d: %w", s.alias, n, err)
		}
		actions := []map[string]any{}
		if st.live != 0 {
			// Removing from the generation read above makes the switch fail
			// whole, rather than leave two live, if another Switch won.
			actions = append(actions, map[string]any{"remove": map[string]any{"index": s.genIndex(st.live), "alias": s.alias}})
		}
		actions = append(actions, s.addAlias(n)...)
		if err := s.aliasActions(ctx, actions); err != nil {
			return fmt.Errorf("opensearch sink %s: switch to generation %d: %w", s.alias, n, err)
		}
	}
	if err := s.mark(ctx, n, false); err != nil {
		return fmt.Errorf("opensearch sink %s: switch to generation %d: clear the building mark: %w", s.alias, n, err)
	}
	s.log.Info("opensearch generation switched", "generation", n, "previous", st.live)
	return nil
}

// Drop deletes generation n's index and all it holds. The live generation
// is refused (ErrLiveGeneration); a generation that does not exist is
// already dropped. A Write racing Drop of the building generation may
// create its index again (empty but for that batch): drop it again.
func (s *Sink) Drop(ctx context.Context, n int) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	st, err := s.state(ctx)
	if err != nil {
		return fmt.Errorf("opensearch sink %s: drop generation %d: %w", s.alias, n, err)
	}
	if n == st.live {
		return fmt.Errorf("opensearch sink %s: drop generation %d: %w", s.alias, n, ErrLiveGeneration)
	}
	if !slices.Contains(st.all, n) {
		return nil
	}
	resp, err := s.api.Indices.Delete(ctx, opensearchapi.IndicesDeleteReq{Indices: []string{s.genIndex(n)}})
	if err := check(ctx, "delete index "+s.genIndex(n), resp.Inspect().Response, err); err != nil && !isStatus(err, "index_not_found_exception") {
		return fmt.Errorf("opensearch sink %s: drop generation %d: %w", s.alias, n, err)
	}
	s.log.Info("opensearch generation dropped", "generation", n)
	return nil
}

// createGeneration creates generation n's index from the template, unless
// it exists.
func (s *Sink) createGeneration(ctx context.Context, n int) error {
	resp, err := s.api.Indices.Create(ctx, opensearchapi.IndicesCreateReq{Index: s.genIndex(n)})
	err = check(ctx, "create index "+s.genIndex(n), resp.Inspect().Response, err)
	if err != nil && !isStatus(err, "resource_already_exists_exception") {
		return err
	}
	return nil
}

// mark sets or clears generation n's building mark.
func (s *Sink) mark(ctx context.Context, n int, building bool) error {
	body, err := json.Marshal(map[string]any{"_meta": map[string]any{metaKey: map[string]any{"building": building}}})
	if err != nil {
		return fmt.Errorf("mark generation %d: %w", n, err)
	}
	resp, err := s.api.Indices.Mapping.Put(ctx, opensearchapi.MappingPutReq{
		Indices: []string{s.genIndex(n)}, Body: bytes.NewReader(body)})
	return check(ctx, "mark generation "+strconv.Itoa(n), resp.Inspect().Response, err)
}

// addAlias is the alias action that makes generation n live.
func (s *Sink) addAlias(n int) []map[string]any {
	return []map[string]any{{"add": map[string]any{"index": s.genIndex(n), "alias": s.alias, "filter": liveFilter()}}}
}

// aliasActions runs alias actions in one POST /_aliases: all or none.
func (s *Sink) aliasActions(ctx context.Context, actions []map[string]any) error {
	body, err := json.Marshal(map[string]any{"actions": actions})
	if err != nil {
		return fmt.Errorf("alias actions: %w", err)
	}
	resp, err := s.api.Aliases(ctx, opensearchapi.AliasesReq{Body: bytes.NewReader(body)})
	return check(ctx, "update alias "+s.alias, resp.Inspect().Response, err)
}

// generation is the Sink of one generation, returned by At.
type generation struct {
	s *Sink
	n int
}

// Write indexes batch into generation n only.
func (g *generation) Write(ctx context.Context, batch []sink.Record) ([]sink.Result, error) {
	res, err := g.s.write(ctx, batch, []string{g.s.genIndex(g.n)})
	if err != nil {
		return nil, fmt.Errorf("opensearch sink %s: generation %d: %w", g.s.alias, g.n, err)
	}
	return res, nil
}

// Held reads what generation n holds for key.
func (g *generation) Held(ctx context.Context, key string) (sink.Held, bool, error) {
	h, found, err := g.s.held(ctx, g.s.genIndex(g.n), key)
	if err != nil {
		return sink.Held{}, false, fmt.Errorf("opensearch sink %s: generation %d: %w", g.s.alias, g.n, err)
	}
	return h, found, nil
}

// Close closes nothing: the connections are the parent Sink's.
func (g *generation) Close() error { return nil }
