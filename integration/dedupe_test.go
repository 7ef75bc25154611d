package integration

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/productstream/productstream/schemas"
	"github.com/productstream/productstream/topics"
)

// Regression (issue "Production", item 3): two ingest replicas behind a
// round-robin load balancer, and a sender that retries every delivery,
// which the balancer hands to the other replica. Each replica writes its
// copy to changes, and the processor merges and counts each delivery once:
// per key, one update per quiet period standing for that period's
// deliveries, and a state counting each delivery once. Both a Standard
// Webhooks source (the retry keeps its webhook-id) and a LiSA source (its
// event id is a hash of the body) are retried.
func TestBackendRetriesAcrossIngestReplicasCountOnce(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		prefix := uniquePrefix(t)
		names := topics.For(prefix)
		// Each key's deliveries of a round are a few requests apart: far
		// inside a quiet period, even on a slow broker.
		const quiet = 2 * time.Second
		config := roleConfigs(t, b, prefix, replicaSources+fmt.Sprintf(`processor:
  quiet_period: %s
  max_delay: 20s
  group: %q
`, quiet, prefix+"processor"))
		replicas := []string{freeAddr(t), freeAddr(t)}
		for i, addr := range replicas {
			startRole(t, "ingest", config(fmt.Sprintf("ingest-%d", i), fmt.Sprintf("http:\n  listen: %q\n  drain_delay: 0s\n", addr)))
		}
		opsAddr := freeAddr(t)
		startRole(t, "process", config("process", fmt.Sprintf("ops:\n  listen: %q\n", opsAddr)))
		for _, addr := range replicas {
			waitFor(t, addr+" answers", 60*time.Second, func() (bool, string) {
				resp, err := httpClient.Get("http://" + addr + "/openapi.json")
				if err != nil {
					return false, err.Error()
				}
				resp.Body.Close()
				return resp.StatusCode == http.StatusOK, resp.Status
			})
		}
		lb := newRoundRobin(t, replicas)

		// Each round: every key gets `per` deliveries, each posted and then
		// retried, key after key, well within a quiet period per key.
		const per, rounds = 3, 2
		keys := []string{"k0", "k1", "k2"}
		var stateKeys []string // every key, as the processor keys it
		for _, id := range keys {
			stateKeys = append(stateKeys, "vendor:"+id, "shop-eu:"+id)
		}
		deliveries := 0
		send := func(round int) {
			for _, id := range keys {
				for i := range per {
					title := fmt.Sprintf("r%d-%d", round, i)
					// Standard Webhooks: the retry keeps its webhook-id,
					// timestamp and signature.
					swID := fmt.Sprintf("msg_%d_%s_%d", round, id, i)
					swBody := []byte(fmt.Sprintf(`{"id":%q,"title":%q}`, id, title))
					lb.deliverTwice(t, "/webhooks/sw-main", swHeaders(t, swID, swBody), swBody)
					// LiSA: the same body and signature again.
					lisaBody := []byte(fmt.Sprintf(`{"productId":%q,"title":%q,"price":%d}`, id, title, round*10+i))
					lb.deliverTwice(t, "/plugin-notifications/plugin-42/updates", lisaHeaders(hmacHex("s1", lisaBody)), lisaBody)
					deliveries += 2
				}
			}
		}
		serde := newSerde(t, b.registry)
		// updates reads every update, by key.
		updates := func() map[string][]schemas.Update {
			out := map[string][]schemas.Update{}
			for _, r := range readAll(t, b.brokers, names.Updates) {
				u, err := serde.DecodeUpdate(context.Background(), r.Value)
				if err != nil {
					t.Fatalf("updates %d/%d: %v", r.Partition, r.Offset, err)
				}
				out[string(r.Key)] = append(out[string(r.Key)], u)
			}
			return out
		}
		waitUpdates := func(n int) {
			waitFor(t, fmt.Sprintf("%d updates per key", n), 90*time.Second, func() (bool, string) {
				ups := updates()
				for _, key := range stateKeys {
					if len(ups[key]) < n {
						return false, fmt.Sprintf("%s has %d updates", key, len(ups[key]))
					}
				}
				return true, ""
			})
		}
		for round := range rounds {
			send(round)
			waitUpdates(round + 1)
		}
		time.Sleep(2 * quiet) // room for any update a counted retry would cause

		// The premise: every delivery reached both replicas, and each wrote it.
		lb.checkAlternated(t)
		copies := map[string]int{}
		for _, r := range readAll(t, b.brokers, names.Changes) {
			ch, err := serde.DecodeChange(context.Background(), r.Value)
			if err != nil {
				t.Fatalf("changes %d/%d: %v", r.Partition, r.Offset, err)
			}
			copies[ch.Key()+" "+ch.EventID]++
		}
		if len(copies) != deliveries {
			t.Fatalf("changes holds %d distinct deliveries, want %d", len(copies), deliveries)
		}
		for d, n := range copies {
			if n != 2 {
				t.Errorf("changes holds %d copies of %s, want 2 (one per replica)", n, d)
			}
		}

		// Each delivery counted once: one update per key per round, each
		// standing for the round's deliveries, and states counting them all.
		ups := updates()
		states := latest(readAll(t, b.brokers, names.Products))
		for _, key := range stateKeys {
			us := ups[key]
			if len(us) != rounds {
				t.Errorf("%s: %d updates, want %d (one per quiet period)", key, len(us), rounds)
			}
			for i, u := range us {
				if u.ChangeCount != per {
					t.Errorf("%s: update %d stands for %d changes, want %d", key, i, u.ChangeCount, per)
				}
			}
			r := states[key]
			if r == nil || r.Value == nil {
				t.Errorf("%s: no state", key)
				continue
			}
			st, err := serde.DecodeState(context.Background(), r.Value)
			if err != nil {
				t.Fatal(err)
			}
			title := "(none)"
			if st.Fields.Title != nil {
				title = *st.Fields.Title
			}
			if want := fmt.Sprintf("r%d-%d", rounds-1, per-1); st.ChangeCount != rounds*per || title != want {
				t.Errorf("%s: state counts %d changes with title %s, want %d and %s", key, st.ChangeCount, title, rounds*per, want)
			}
		}
		// The counter is the process's, not transactional: a transaction
		// aborted and read again counts its duplicates again, so it is at
		// least every retry (the state above is the exact count).
		if got := scrapeCounter(t, "http://"+opsAddr+"/metrics", `productstream_processor_changes_total{outcome="duplicate"}`); got < deliveries {
			t.Errorf("the processor counted %d duplicates, want at least %d (every retry)", got, deliveries)
		}
	})
}

// roundRobin is a load balancer in front of the ingest replicas: each
// request goes to the next replica in turn. It notes which replica
// answered each request, and with what status.
type roundRobin struct {
	url     string
	next    atomic.Uint64
	mu      sync.Mutex
	answers [][2]int // per request, in order: replica and status
}

func newRoundRobin(t *testing.T, replicas []string) *roundRobin {
	t.Helper()
	lb := &roundRobin{}
	targets := make([]*url.URL, len(replicas))
	for i, addr := range replicas {
		targets[i] = &url.URL{Scheme: "http", Host: addr}
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			n := int(lb.next.Add(1)-1) % len(targets)
			r.SetURL(targets[n])
			r.Out.Header.Set("X-Test-Replica", strconv.Itoa(n))
		},
		ModifyResponse: func(resp *http.Response) error {
			n, _ := strconv.Atoi(resp.Request.Header.Get("X-Test-Replica"))
			lb.mu.Lock()
			lb.answers = append(lb.answers, [2]int{n, resp.StatusCode})
			lb.mu.Unlock()
			return nil
		},
	}
	srv := httptest.NewServer(proxy)
	t.Cleanup(srv.Close)
	lb.url = srv.URL
	return lb
}

// deliverTwice posts a delivery through the balancer and, once it is
// accepted, retries it unchanged (body, signature, delivery id), as a
// sender that did not get the first answer does: the balancer hands the
// retry to the other replica.
func (lb *roundRobin) deliverTwice(t *testing.T, path string, h http.Header, body []byte) {
	t.Helper()
	mustPost(t, lb.url+path, h, body, http.StatusAccepted)
	mustPost(t, lb.url+path, h, body, http.StatusAccepted)
}

// checkAlternated checks that each delivery and its retry were accepted by
// different replicas.
func (lb *roundRobin) checkAlternated(t *testing.T) {
	t.Helper()
	lb.mu.Lock()
	defer lb.mu.Unlock()
	if len(lb.answers) == 0 || len(lb.answers)%2 != 0 {
		t.Fatalf("the balancer answered %d requests, want pairs", len(lb.answers))
	}
	for i := 0; i < len(lb.answers); i += 2 {
		first, retry := lb.answers[i], lb.answers[i+1]
		if first[0] == retry[0] || first[1] != http.StatusAccepted || retry[1] != http.StatusAccepted {
			t.Fatalf("delivery %d: answered by replica %d (%d), its retry by replica %d (%d); want two replicas, 202 each", i/2, first[0], first[1], retry[0], retry[1])
		}
	}
}

// scrapeCounter reads one series' value from a Prometheus text endpoint.
func scrapeCounter(t *testing.T, url, series string) int {
	t.Helper()
	resp, err := httpClient.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %q", series, v)
			}
			return int(f)
		}
	}
	t.Fatalf("%s has no series %s", url, series)
	return 0
}
