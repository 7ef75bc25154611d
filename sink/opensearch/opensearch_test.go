package opensearch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opensearch-project/opensearch-go/v4"
	"github.com/opensearch-project/opensearch-go/v4/opensearchapi"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/sink"
	"github.com/productstream/productstream/sink/sinktest"
)

// backend returns the real OpenSearch's base URL and an admin client on it
// that bypasses the sink (and any test proxy).
func backend(t *testing.T) admin {
	t.Helper()
	base := strings.TrimRight(sinktest.StartBackend(t, "opensearch"), "/")
	return admin{t: t, base: base}
}

// admin speaks plain HTTP to the real backend, for what the tests check
// behind the sink's back.
type admin struct {
	t    testing.TB
	base string
}

// do sends a request and returns the status and body.
func (a admin) do(method, path string, body any) (int, []byte) {
	a.t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			a.t.Fatalf("marshal: %v", err)
		}
		r = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, r)
	if err != nil {
		a.t.Fatalf("request: %v", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		a.t.Fatalf("%s %s: read: %v", method, path, err)
	}
	return resp.StatusCode, b
}

// ok sends a request that must succeed and decodes its answer into out.
func (a admin) ok(method, path string, body, out any) {
	a.t.Helper()
	status, b := a.do(method, path, body)
	if status/100 != 2 {
		a.t.Fatalf("%s %s: %d %s", method, path, status, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			a.t.Fatalf("%s %s: decode %s: %v", method, path, b, err)
		}
	}
}

// hostPort is the backend's host:port, for the suite's proxy.
func (a admin) hostPort() string {
	u, err := url.Parse(a.base)
	if err != nil || u.Host == "" {
		a.t.Fatalf("backend URL %q: %v", a.base, err)
	}
	return u.Host
}

// live returns the index the alias points at.
func (a admin) live(alias string) string {
	a.t.Helper()
	var got map[string]any
	a.ok(http.MethodGet, "/_alias/"+alias, nil, &got)
	if len(got) != 1 {
		a.t.Fatalf("alias %s points at %d indexes: %v", alias, len(got), got)
	}
	for index := range got {
		return index
	}
	return ""
}

// refresh makes everything written to the alias's family searchable.
func (a admin) refresh(alias string) {
	a.t.Helper()
	a.ok(http.MethodPost, "/"+alias+"-g*/_refresh", nil, nil)
}

// count counts the documents a reader of target (an alias or index) sees.
func (a admin) count(target string) int {
	a.t.Helper()
	var got struct {
		Count int `json:"count"`
	}
	a.ok(http.MethodGet, "/"+target+"/_count", nil, &got)
	return got.Count
}

// search returns the sorted _ids a query on target finds.
func (a admin) search(target string, query map[string]any) []string {
	a.t.Helper()
	var got struct {
		Hits struct {
			Hits []struct {
				ID string `json:"_id"`
			} `json:"hits"`
		} `json:"hits"`
	}
	a.ok(http.MethodPost, "/"+target+"/_search", map[string]any{"query": query, "size": 100}, &got)
	var ids []string
	for _, h := range got.Hits.Hits {
		ids = append(ids, h.ID)
	}
	slices.Sort(ids)
	return ids
}

// held reads key in the alias's live index, straight from the backend.
func (a admin) held(alias, key string) (sink.Held, bool) {
	a.t.Helper()
	status, b := a.do(http.MethodGet, "/"+a.live(alias)+"/_doc/"+url.PathEscape(key), nil)
	if status == http.StatusNotFound {
		return sink.Held{}, false
	}
	if status != http.StatusOK {
		a.t.Fatalf("get %s: %d %s", key, status, b)
	}
	var got struct {
		Version int64 `json:"_version"`
		Source  struct {
			Deleted bool            `json:"deleted"`
			State   json.RawMessage `json:"state"`
		} `json:"_source"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		a.t.Fatalf("get %s: %v", key, err)
	}
	h := sink.Held{Version: got.Version, Deleted: got.Source.Deleted}
	if !h.Deleted {
		h.Doc = got.Source.State
	}
	return h, true
}

// exists reports whether index exists.
func (a admin) exists(index string) bool {
	a.t.Helper()
	status, b := a.do(http.MethodHead, "/"+index, nil)
	if status != http.StatusOK && status != http.StatusNotFound {
		a.t.Fatalf("head %s: %d %s", index, status, b)
	}
	return status == http.StatusOK
}

// dropFamily deletes the alias's generations and template.
func (a admin) dropFamily(alias string) {
	a.t.Helper()
	s := &Sink{alias: alias}
	var got map[string]any
	a.ok(http.MethodGet, "/"+alias+"-g*", nil, &got)
	for index := range got {
		if _, ok := s.parseGen(index); ok {
			a.do(http.MethodDelete, "/"+index, nil)
		}
	}
	a.do(http.MethodDelete, "/_index_template/"+s.templateName(), nil)
}

// open opens a Sink on index at baseURL, and deletes the index family from
// the real backend when the test ends.
func open(t *testing.T, a admin, baseURL, index string) *Sink {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := New(ctx, config.SinkOpenSearch{URLs: []string{baseURL}, Index: index},
		slog.New(slog.NewTextHandler(t.Output(), nil)))
	if err != nil {
		t.Fatalf("New(%s): %v", index, err)
	}
	t.Cleanup(func() { a.dropFamily(index) })
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// uniqueIndex is an index name no other test or run uses.
func uniqueIndex(prefix string) string {
	return fmt.Sprintf("ostest-%s-%d", prefix, time.Now().UnixNano()%1e12)
}

func write(t *testing.T, s sink.Sink, recs ...sink.Record) []sink.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := s.Write(ctx, recs)
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	if len(res) != len(recs) {
		t.Fatalf("Write returned %d results for %d records", len(res), len(recs))
	}
	return res
}

// withPrice returns a copy of rec whose Doc's fields.price is price.
func withPrice(t testing.TB, rec sink.Record, price string) sink.Record {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(rec.Doc, &doc); err != nil {
		t.Fatalf("doc: %v", err)
	}
	doc["fields"].(map[string]any)["price"] = price
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatalf("doc: %v", err)
	}
	rec.Doc = b
	return rec
}

func TestConformance(t *testing.T) {
	a := backend(t)
	sinktest.Run(t, sinktest.Backend{
		Addr: a.hostPort(),
		HTTP: true,
		Open: func(t *testing.T, addr, target string) sink.Sink {
			return open(t, admin{t: t, base: a.base}, "http://"+addr, target)
		},
		Held: func(t *testing.T, s sink.Sink, key string) (sink.Held, bool) {
			return admin{t: t, base: a.base}.held(s.(*Sink).alias, key)
		},
		Poison: func(t *testing.T, _ sink.Sink, rec sink.Record) sink.Record {
			// A price that is no number: a mapping error on the scaled_float.
			return withPrice(t, rec, "not-a-number")
		},
		ForgetDeletes: func(t *testing.T, s sink.Sink) {
			a := admin{t: t, base: a.base}
			live := a.live(s.(*Sink).alias)
			a.ok(http.MethodPut, "/"+live+"/_settings", map[string]any{"index": map[string]any{"gc_deletes": "0ms"}}, nil)
			a.ok(http.MethodPost, "/"+live+"/_refresh", nil, nil)
			time.Sleep(1500 * time.Millisecond)
		},
	})
}

// The template's mapping applies: a price sent as the string "9.99" is a
// scaled_float a range query finds through the alias, the typed fields are
// searchable, unlisted fields are not indexed, and state comes back whole.
func TestMappingMakesTypedFieldsSearchable(t *testing.T) {
	a := backend(t)
	s := open(t, a, a.base, uniqueIndex("mapping"))
	full := []byte(`{"namespace":"ns","product_id":"4","source":"shopify","provider":"shopify",
		"fields":{"title":"Blue Widget","description":"A very blue widget","brand":"Acme","price":"5.00",
		"sale_price":"4.50","currency":"EUR","url":"https://shop.example/w","image_url":"https://shop.example/w.png",
		"availability":"in_stock","sku":"W-1","gtin":"4006381333931"},
		"raw":"{\"id\":4}","version":10,"change_count":3,"last_event_id":"ev-9","updated_at":1700000000000,
		"occurred_at":null,"collection_ids":[],"field_times":{"price":1700000000001}}`)
	fullRec := sink.Record{Key: "ns:4", Namespace: "ns", ID: "4", Version: 10, Doc: full, UpdatedAt: time.UnixMilli(1700000000000)}
	res := write(t, s, sinktest.Product("1", 1, "9.99"), sinktest.Product("2", 1, "19.99"),
		sinktest.Product("3", 1, "10.00"), fullRec)
	for i, r := range res {
		if r.Outcome != sink.Applied {
			t.Fatalf("record %d: %v %v", i, r.Outcome, r.Err)
		}
	}
	a.refresh(s.alias)

	for _, tc := range []struct {
		name  string
		query map[string]any
		want  []string
	}{
		{"price exactly 9.99", map[string]any{"range": map[string]any{"price": map[string]any{"gte": 9.99, "lte": 9.99}}}, []string{"ns:1"}},
		{"price 9.98 to 10", map[string]any{"range": map[string]any{"price": map[string]any{"gte": 9.98, "lte": 10}}}, []string{"ns:1", "ns:3"}},
		{"sale price", map[string]any{"range": map[string]any{"sale_price": map[string]any{"lt": 5}}}, []string{"ns:4"}},
		{"brand keyword", map[string]any{"term": map[string]any{"brand": "Acme"}}, []string{"ns:4"}},
		{"title text", map[string]any{"match": map[string]any{"title": "widget"}}, []string{"ns:4"}},
		{"title keyword", map[string]any{"term": map[string]any{"title.keyword": "Blue Widget"}}, []string{"ns:4"}},
		{"namespace", map[string]any{"term": map[string]any{"namespace": "ns"}}, []string{"ns:1", "ns:2", "ns:3", "ns:4"}},
		{"updated_at", map[string]any{"term": map[string]any{"updated_at": 1700000000000}}, []string{"ns:4"}},
		{"unlisted field is not indexed", map[string]any{"term": map[string]any{"source": "shopify"}}, nil},
		{"state is not indexed", map[string]any{"term": map[string]any{"state.fields.brand": "Acme"}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := a.search(s.alias, tc.query); !slices.Equal(got, tc.want) {
				t.Fatalf("found %v, want %v", got, tc.want)
			}
		})
	}

	ctx := context.Background()
	h, found, err := s.Held(ctx, "ns:4")
	if err != nil || !found {
		t.Fatalf("Held: found=%v err=%v", found, err)
	}
	if h.Version != 10 || h.Deleted || !sinktest.SameJSON(h.Doc, full) {
		t.Fatalf("Held = version %d deleted %v doc %s, want version 10 and the doc as written", h.Version, h.Deleted, h.Doc)
	}
}

// refresh_interval is set on generation 1 when the sink creates it, on the
// generations that exist when a sink starts with another one, and on the
// generations created later; a written document becomes searchable without
// an explicit refresh.
func TestRefreshInterval(t *testing.T) {
	a := backend(t)
	index := uniqueIndex("refresh")
	refreshOf := func(gen string) string {
		t.Helper()
		var got map[string]struct {
			Settings struct {
				Index struct {
					RefreshInterval string `json:"refresh_interval"`
				} `json:"index"`
			} `json:"settings"`
		}
		a.ok(http.MethodGet, "/"+gen+"/_settings", nil, &got)
		return got[gen].Settings.Index.RefreshInterval
	}
	openWith := func(d time.Duration) *Sink {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		s, err := New(ctx, config.SinkOpenSearch{URLs: []string{a.base}, Index: index, RefreshInterval: d}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	t.Cleanup(func() { a.dropFamily(index) })
	s := openWith(250 * time.Millisecond)
	if got := refreshOf(index + "-g1"); got != "250ms" {
		t.Fatalf("generation 1: refresh_interval %q, want 250ms", got)
	}
	write(t, s, sinktest.Product("1", 1, "9.99"))
	waitSearchable := time.Now().Add(10 * time.Second)
	for a.count(index) != 1 {
		if time.Now().After(waitSearchable) {
			t.Fatal("the document never became searchable by itself")
		}
		time.Sleep(50 * time.Millisecond)
	}
	s = openWith(500 * time.Millisecond)
	if got := refreshOf(index + "-g1"); got != "500ms" {
		t.Errorf("after a start with 500ms, generation 1 has %q", got)
	}
	ctx := context.Background()
	if err := s.Begin(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if got := refreshOf(index + "-g2"); got != "500ms" {
		t.Errorf("a generation begun later has %q, want 500ms", got)
	}
}

// A deleted key is a marker hidden by the filtered alias, still read by
// Held (which reads the live index, not the alias).
func TestDeletedHiddenByAliasButHeld(t *testing.T) {
	a := backend(t)
	s := open(t, a, a.base, uniqueIndex("deleted"))
	ctx := context.Background()
	write(t, s, sinktest.Product("1", 1, "1.00"), sinktest.Product("2", 1, "2.00"), sinktest.Product("3", 1, "3.00"))
	if r := write(t, s, sinktest.Deleted("2", 5)); r[0].Outcome != sink.Applied {
		t.Fatalf("delete: %v %v", r[0].Outcome, r[0].Err)
	}
	a.refresh(s.alias)
	if n := a.count(s.alias); n != 2 {
		t.Fatalf("the alias counts %d documents, want 2", n)
	}
	if n := a.count(a.live(s.alias)); n != 3 {
		t.Fatalf("the live index holds %d documents, want 3 (the delete is a marker)", n)
	}
	if ids := a.search(s.alias, map[string]any{"ids": map[string]any{"values": []string{"ns:2"}}}); len(ids) != 0 {
		t.Fatalf("the alias finds the deleted key: %v", ids)
	}
	h, found, err := s.Held(ctx, "ns:2")
	if err != nil || !found || !h.Deleted || h.Version != 5 || h.Doc != nil {
		t.Fatalf("Held(ns:2) = %+v found=%v err=%v, want a deleted marker at version 5", h, found, err)
	}
	if _, found, err := s.Held(ctx, "ns:absent"); err != nil || found {
		t.Fatalf("Held(ns:absent): found=%v err=%v", found, err)
	}
	// A later version brings the key back into the alias.
	write(t, s, sinktest.Product("2", 6, "2.50"))
	a.refresh(s.alias)
	if n := a.count(s.alias); n != 3 {
		t.Fatalf("after the restore the alias counts %d documents, want 3", n)
	}
}

// Generations: Begin marks a generation every writer also writes, At
// writes one generation, Switch is atomic for readers, the live
// generation cannot be dropped or begun, and the state is shared through
// the backend.
func TestGenerations(t *testing.T) {
	a := backend(t)
	index := uniqueIndex("gens")
	s := open(t, a, a.base, index)
	ctx := context.Background()
	expectGens := func(t *testing.T, s *Sink, live, building int) {
		t.Helper()
		l, b, err := s.Generations(ctx)
		if err != nil || l != live || b != building {
			t.Fatalf("Generations = %d, %d, %v; want %d, %d", l, b, err, live, building)
		}
	}
	expectGens(t, s, 1, 0)

	var first []sink.Record
	for i := range 100 {
		first = append(first, sinktest.Product(strconv.Itoa(i), 1, "1.00"))
	}
	write(t, s, first...)

	if err := s.Begin(ctx, 2); err != nil {
		t.Fatalf("Begin(2): %v", err)
	}
	expectGens(t, s, 1, 2)
	other := open(t, a, a.base, index) // another process sees the same state
	expectGens(t, other, 1, 2)

	// The live writer now writes both generations.
	both := sinktest.Product("500", 5, "5.00")
	write(t, other, both)
	g2 := s.At(2)
	for _, r := range []sink.Reader{s, g2.(sink.Reader)} {
		if h, found, err := r.Held(ctx, both.Key); err != nil || !found || h.Version != 5 {
			t.Fatalf("%T holds %+v found=%v err=%v, want version 5", r, h, found, err)
		}
	}

	// The rebuild writes generation 2 fully, then it is refreshed.
	var rebuilt []sink.Record
	for i := range 250 {
		rebuilt = append(rebuilt, sinktest.Product(strconv.Itoa(i), 2, "2.00"))
	}
	for i, r := range write(t, g2, rebuilt...) {
		if r.Outcome != sink.Applied {
			t.Fatalf("At(2) record %d: %v %v", i, r.Outcome, r.Err)
		}
	}
	if err := g2.Close(); err != nil {
		t.Fatalf("closing At(2): %v", err)
	}
	a.refresh(index)
	const before, after = 101, 251
	if n := a.count(index); n != before {
		t.Fatalf("before the switch the alias counts %d, want %d", n, before)
	}

	// A reader counts through the alias in a loop while Switch runs.
	var (
		mu        sync.Mutex
		counts    []int
		readerErr error
		switched  = -1 // index in counts of the first count after Switch returned
	)
	stop, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		fail := func(err error) {
			mu.Lock()
			readerErr = err
			mu.Unlock()
		}
		for {
			select {
			case <-stop:
				return
			default:
			}
			// Plain HTTP so a failure is reported, not Fatal off the test goroutine.
			resp, err := http.Get(a.base + "/" + index + "/_count")
			if err != nil {
				fail(err)
				return
			}
			var got struct {
				Count *int `json:"count"`
			}
			err = json.NewDecoder(resp.Body).Decode(&got)
			_ = resp.Body.Close()
			if err != nil || got.Count == nil {
				fail(fmt.Errorf("count answered %d (%v): the alias was missing or broken", resp.StatusCode, err))
				return
			}
			mu.Lock()
			counts = append(counts, *got.Count)
			mu.Unlock()
		}
	}()
	waitCounts := func(n int) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			have, err := len(counts), readerErr
			mu.Unlock()
			if err != nil {
				t.Fatalf("reader: %v", err)
			}
			if have >= n {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatalf("the reader made fewer than %d counts", n)
	}
	waitCounts(10)
	if err := s.Switch(ctx, 2); err != nil {
		t.Fatalf("Switch(2): %v", err)
	}
	mu.Lock()
	switched = len(counts)
	mu.Unlock()
	waitCounts(switched + 10)
	close(stop)
	<-exited
	if readerErr != nil {
		t.Fatalf("reader: %v", readerErr)
	}
	t.Logf("the reader counted %d times, %d of them before Switch returned", len(counts), switched)
	for i, n := range counts {
		if n != before && n != after {
			t.Fatalf("count %d during the switch was %d, want %d or %d (counts %v)", i, n, before, after, counts)
		}
		if i > switched && n != after {
			t.Fatalf("count %d after Switch returned was %d, want %d", i, n, after)
		}
	}
	expectGens(t, s, 2, 0)
	expectGens(t, other, 2, 0)

	if err := s.Drop(ctx, 2); !errors.Is(err, ErrLiveGeneration) {
		t.Fatalf("Drop(live) = %v, want ErrLiveGeneration", err)
	}
	if err := s.Begin(ctx, 2); !errors.Is(err, ErrLiveGeneration) {
		t.Fatalf("Begin(live) = %v, want ErrLiveGeneration", err)
	}
	if err := s.Switch(ctx, 7); !errors.Is(err, ErrNoGeneration) {
		t.Fatalf("Switch(7) = %v, want ErrNoGeneration", err)
	}
	if !a.exists(index + "-g2") {
		t.Fatal("a refused Drop removed the live generation")
	}
	for range 2 { // dropping is idempotent
		if err := s.Drop(ctx, 1); err != nil {
			t.Fatalf("Drop(1): %v", err)
		}
	}
	if a.exists(index + "-g1") {
		t.Fatal("generation 1 still exists after Drop")
	}

	// Beginning another generation moves the building mark; dropping the
	// building generation clears it.
	for _, n := range []int{3, 4} {
		if err := s.Begin(ctx, n); err != nil {
			t.Fatalf("Begin(%d): %v", n, err)
		}
	}
	expectGens(t, s, 2, 4)
	if err := s.Drop(ctx, 4); err != nil {
		t.Fatalf("Drop(4): %v", err)
	}
	expectGens(t, s, 2, 0)
	// Writes go on to the live generation through all of it.
	write(t, s, sinktest.Product("900", 1, "9.00"))
	if h, found, err := s.Held(ctx, "ns:900"); err != nil || !found || h.Version != 1 {
		t.Fatalf("Held(ns:900) = %+v found=%v err=%v", h, found, err)
	}
}

// One bulk of 1000 records mixing new keys, newer and older versions of
// held keys, deletes, a mapping error and an invalid value gets one
// correct outcome per record.
func TestMixedBulk(t *testing.T) {
	a := backend(t)
	s := open(t, a, a.base, uniqueIndex("mixed"))
	ctx := context.Background()
	var held []sink.Record
	for i := range 300 {
		held = append(held, sinktest.Product(strconv.Itoa(i), 100, "1.00"))
	}
	write(t, s, held...)

	batch := make([]sink.Record, 0, 1000)
	want := make([]sink.Outcome, 0, 1000)
	permanent := map[int]bool{}
	visible := 0 // documents the alias shows afterwards
	for i := range 1000 {
		id := strconv.Itoa(i)
		switch {
		case i < 300 && i%2 == 0:
			batch, want = append(batch, sinktest.Product(id, 50, "0.50")), append(want, sink.Stale)
			visible++
		case i < 300:
			batch, want = append(batch, sinktest.Product(id, 150, "1.50")), append(want, sink.Applied)
			visible++
		case i%10 == 0:
			batch, want = append(batch, sinktest.Deleted(id, 10)), append(want, sink.Applied)
		case i%97 == 0:
			batch, want = append(batch, withPrice(t, sinktest.Product(id, 10, "1"), "not-a-number")), append(want, sink.Failed)
			permanent[i] = true
		case i == 999:
			rec := sinktest.Product(id, 10, "1")
			rec.Doc = []byte(`{"broken":`)
			batch, want = append(batch, rec), append(want, sink.Failed)
			permanent[i] = true
		default:
			batch, want = append(batch, sinktest.Product(id, 10, "10.00")), append(want, sink.Applied)
			visible++
		}
	}
	start := time.Now()
	res := write(t, s, batch...)
	t.Logf("1000-record bulk took %v", time.Since(start))
	for i, r := range res {
		if r.Outcome != want[i] {
			t.Errorf("record %d: %v (%v), want %v", i, r.Outcome, r.Err, want[i])
		}
		if permanent[i] && !sink.IsPermanent(r.Err) {
			t.Errorf("record %d: error %v is not permanent", i, r.Err)
		}
	}
	if res[388].Err == nil || !strings.Contains(res[388].Err.Error(), "mapper_parsing_exception") {
		t.Errorf("the mapping error does not say what OpenSearch refused: %v", res[388].Err)
	}
	a.refresh(s.alias)
	if n := a.count(s.alias); n != visible {
		t.Fatalf("the alias counts %d documents, want %d", n, visible)
	}
	for key, version := range map[string]int64{"ns:0": 100, "ns:1": 150, "ns:300": 10, "ns:301": 10} {
		if h, found, err := s.Held(ctx, key); err != nil || !found || h.Version != version {
			t.Errorf("Held(%s) = %+v found=%v err=%v, want version %d", key, h, found, err, version)
		}
	}
	if _, found, _ := s.Held(ctx, "ns:388"); found {
		t.Error("the refused record was stored")
	}
}

// New against a port where nothing listens fails at once with
// ErrUnreachable, and never shows the password.
func TestNewUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	const password = "pw-that-must-not-leak"
	var logs bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	s, err := New(ctx, config.SinkOpenSearch{URLs: []string{"http://" + addr}, Index: "unreachable",
		Username: "admin", Password: password}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err == nil {
		_ = s.Close()
		t.Fatal("New against a closed port returned no error")
	}
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("New = %v, want ErrUnreachable", err)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Fatalf("New took %v to fail", el)
	}
	if strings.Contains(err.Error(), password) || strings.Contains(logs.String(), password) {
		t.Fatalf("the password leaked: %v / %s", err, logs.String())
	}
	t.Logf("New: %v", err)
}

// Credentials are sent but never logged (the test backend has no security
// plugin, so it accepts any).
func TestCredentialsNeverLogged(t *testing.T) {
	a := backend(t)
	const password = "pw-that-must-not-leak"
	var logs bytes.Buffer
	index := uniqueIndex("creds")
	s, err := New(context.Background(), config.SinkOpenSearch{URLs: []string{a.base}, Index: index,
		Username: "admin", Password: password}, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { a.dropFamily(index) })
	defer s.Close()
	write(t, s, sinktest.Product("1", 1, "1.00"))
	if logs.Len() == 0 || strings.Contains(logs.String(), password) {
		t.Fatalf("logs %q: want some, without the password", logs.String())
	}
}

// New refuses an index family whose alias name is taken by an index.
func TestNewRefusesIndexNamedLikeTheAlias(t *testing.T) {
	a := backend(t)
	index := uniqueIndex("taken")
	a.ok(http.MethodPut, "/"+index, nil, nil)
	t.Cleanup(func() { a.do(http.MethodDelete, "/"+index, nil); a.dropFamily(index) })
	_, err := New(context.Background(), config.SinkOpenSearch{URLs: []string{a.base}, Index: index}, nil)
	if !errors.Is(err, ErrLayout) {
		t.Fatalf("New = %v, want ErrLayout", err)
	}
}

// Each bulk item status maps to the outcome the runner needs.
func TestItemResult(t *testing.T) {
	long := strings.Repeat("x", 2000)
	for _, tc := range []struct {
		name      string
		status    int
		errType   string
		reason    string
		want      sink.Outcome
		permanent bool
	}{
		{"created", 201, "", "", sink.Applied, false},
		{"updated, equal version", 200, "", "", sink.Applied, false},
		{"version conflict", 409, "version_conflict_engine_exception", "[ns:1]: version conflict", sink.Stale, false},
		{"other conflict", 409, "some_conflict_exception", "?", sink.Failed, true},
		{"rejected", 429, "es_rejected_execution_exception", "queue full", sink.Failed, false},
		{"rejected, OpenSearch name", 429, "rejected_execution_exception", "queue full", sink.Failed, false},
		{"circuit breaker", 429, "circuit_breaking_exception", "too much", sink.Failed, false},
		{"unavailable shards", 503, "unavailable_shards_exception", "primary not active", sink.Failed, false},
		{"index missing", 404, "index_not_found_exception", "no such index", sink.Failed, false},
		{"mapping error", 400, "mapper_parsing_exception", "failed to parse field [price]", sink.Failed, true},
		{"long reason", 400, "illegal_argument_exception", long, sink.Failed, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var item opensearchapi.BulkRespItem
			raw := fmt.Sprintf(`{"status":%d}`, tc.status)
			if tc.errType != "" {
				raw = fmt.Sprintf(`{"status":%d,"error":{"type":%q,"reason":%q,"caused_by":{"type":"cause_type","reason":"cause"}}}`, tc.status, tc.errType, tc.reason)
			}
			if err := json.Unmarshal([]byte(raw), &item); err != nil {
				t.Fatal(err)
			}
			r := itemResult(map[string]opensearchapi.BulkRespItem{"index": item})
			if r.Outcome != tc.want || sink.IsPermanent(r.Err) != tc.permanent {
				t.Fatalf("itemResult = %v %v, want %v permanent=%v", r.Outcome, r.Err, tc.want, tc.permanent)
			}
			if r.Outcome != sink.Failed {
				return
			}
			var se *StatusError
			if !errors.As(r.Err, &se) || se.Status != tc.status || se.Type != tc.errType {
				t.Fatalf("error %v carries no StatusError %d %s", r.Err, tc.status, tc.errType)
			}
			if !strings.Contains(r.Err.Error(), "cause_type") && len(tc.reason) < maxReason {
				t.Fatalf("error %q lacks the cause", r.Err)
			}
			if len(se.Reason) > maxReason+3 {
				t.Fatalf("reason of %d bytes was not truncated", len(se.Reason))
			}
		})
	}
}

// Retry-After is read as seconds or as an HTTP date.
func TestRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		header string
		want   time.Duration
		ok     bool
	}{
		{"1", time.Second, true},
		{" 120 ", 2 * time.Minute, true},
		{"0", 0, true},
		{now.Add(5 * time.Second).Format(http.TimeFormat), 5 * time.Second, true},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0, true},
		{"", 0, false},
		{"-3", 0, false},
		{"soon", 0, false},
	} {
		got, ok := retryAfter(tc.header, now)
		if got != tc.want || ok != tc.ok {
			t.Errorf("retryAfter(%q) = %v, %v; want %v, %v", tc.header, got, ok, tc.want, tc.ok)
		}
	}
}

// check sorts OpenSearch's whole-request answers into the errors callers
// act on.
func TestCheck(t *testing.T) {
	answer := func(status int, body string, header http.Header) *opensearch.Response {
		if header == nil {
			header = http.Header{}
		}
		return opensearch.NewResponse(status, io.NopCloser(strings.NewReader(body)), header)
	}
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name      string
		ctx       context.Context
		resp      *opensearch.Response
		err       error
		is        error
		wait      time.Duration // a *sink.RetryAfter with this wait; 0: none
		status    int           // a *StatusError with this status; 0: none
		errType   string
		transient bool
	}{
		{name: "ok", resp: answer(200, `{}`, nil)},
		{name: "no answer", err: errors.New("dial tcp: connection refused"), is: ErrUnreachable},
		{name: "canceled", ctx: canceled, err: errors.New("context canceled"), is: context.Canceled},
		{name: "wrong password", resp: answer(401, `Unauthorized`, nil), err: errors.New("401"), is: ErrAuthentication, status: 401},
		{name: "busy with Retry-After", resp: answer(429, `{"error":"injected 429"}`, http.Header{"Retry-After": {"1"}}), err: errors.New("429"), wait: time.Second, status: 429},
		{name: "unavailable with Retry-After", resp: answer(503, `{}`, http.Header{"Retry-After": {"3"}}), err: errors.New("503"), wait: 3 * time.Second, status: 503},
		{name: "unavailable", resp: answer(503, `{"error":{"type":"cluster_block_exception","reason":"blocked"},"status":503}`, nil), err: errors.New("503"), status: 503, errType: "cluster_block_exception"},
		{name: "refused", resp: answer(400, `{"error":{"type":"illegal_argument_exception","reason":"bad","caused_by":{"type":"x","reason":"y"}},"status":400}`, nil), err: errors.New("400"), status: 400, errType: "illegal_argument_exception"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := tc.ctx
			if ctx == nil {
				ctx = context.Background()
			}
			err := check(ctx, "op", tc.resp, tc.err)
			if tc.err == nil && tc.resp != nil && !tc.resp.IsError() {
				if err != nil {
					t.Fatalf("check = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), "op: ") {
				t.Fatalf("check = %v, want an error naming the operation", err)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("check = %v, want %v", err, tc.is)
			}
			var ra *sink.RetryAfter
			if got := errors.As(err, &ra); got != (tc.wait != 0) || (got && ra.Wait != tc.wait) {
				t.Fatalf("check = %v (RetryAfter %v), want a wait of %v", err, ra, tc.wait)
			}
			var se *StatusError
			if got := errors.As(err, &se); got != (tc.status != 0) || (got && (se.Status != tc.status || se.Type != tc.errType)) {
				t.Fatalf("check = %v, want a StatusError %d %q", err, tc.status, tc.errType)
			}
			if sink.IsPermanent(err) {
				t.Fatalf("check = %v: a whole-request error is never permanent", err)
			}
		})
	}
}

// Only <index>-g<N> names are generations of <index>.
func TestParseGen(t *testing.T) {
	s := &Sink{alias: "shop"}
	for name, want := range map[string]int{
		"shop-g1": 1, "shop-g42": 42, "shop-g0": 0, "shop-g01": 0, "shop-g": 0,
		"shop-gx-g1": 0, "shop": 0, "shop-g1x": 0, "shopx-g1": 0, "shop-g-1": 0,
	} {
		n, ok := s.parseGen(name)
		if n != want || ok != (want != 0) {
			t.Errorf("parseGen(%q) = %d, %v; want %d", name, n, ok, want)
		}
	}
	if got := s.genIndex(7); got != "shop-g7" {
		t.Errorf("genIndex(7) = %q", got)
	}
}
