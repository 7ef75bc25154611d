package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/productstream/productstream/topics"
)

// getJSON reads url into v; it reports the status or error otherwise.
func getJSON(url string, v any) error {
	resp, err := httpClient.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// The console role sees every ingest replica: deliveries posted in turn
// to two ingest processes are all in its delivery log, each named by the
// process that answered it (host:pid) and pointing at the record it
// wrote, and both processes are listed as ingest instances.
func TestBackendConsoleSeesEveryIngest(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		prefix := uniquePrefix(t)
		names := topics.For(prefix)
		config := roleConfigs(t, b, prefix, fmt.Sprintf(`sources:
  - name: lisa-main
    provider: lisa
    id: plugin-42
    namespace: shop-eu
    secrets: ["s1"]
    api_keys: ["k1"]
processor:
  quiet_period: 200ms
  max_delay: 1s
  group: %q
`, prefix+"processor"))
		ingestAddrs := []string{freeAddr(t), freeAddr(t)}
		consoleAddr := freeAddr(t)
		var ingests []string // instance names, as each ingest process calls itself
		for i, addr := range ingestAddrs {
			cmd := startRole(t, "ingest", config(fmt.Sprintf("ingest-%d", i), fmt.Sprintf("http:\n  listen: %q\n  drain_delay: 0s\n", addr)))
			ingests = append(ingests, instanceOf(t, cmd.Process.Pid))
		}
		startRole(t, "process", config("process", ""))
		startRole(t, "console", config("console", fmt.Sprintf("console:\n  listen: %q\n", consoleAddr)))
		console := "http://" + consoleAddr
		for _, addr := range append(slices.Clone(ingestAddrs), consoleAddr) {
			path := "/openapi.json"
			if addr == consoleAddr {
				path = "/api/openapi.json"
			}
			waitFor(t, addr+" answers", 60*time.Second, func() (bool, string) {
				resp, err := httpClient.Get("http://" + addr + path)
				if err != nil {
					return false, err.Error()
				}
				resp.Body.Close()
				return resp.StatusCode == http.StatusOK, resp.Status
			})
		}

		// In turn to each ingest: 3 accepted and 1 refused apiece.
		const perIngest = 3
		want := map[string]string{} // key -> the instance that accepted it
		for i := range 2 * perIngest {
			n := i % 2
			id := fmt.Sprintf("seen-%d", i)
			body := []byte(fmt.Sprintf(`{"productId":%q,"price":%d}`, id, i+1))
			mustPost(t, "http://"+ingestAddrs[n]+"/webhooks/lisa-main", lisaHeaders(hmacHex("s1", body)), body, http.StatusAccepted)
			want["shop-eu:"+id] = ingests[n]
		}
		for n, addr := range ingestAddrs {
			body := []byte(fmt.Sprintf(`{"productId":"forged-%d"}`, n))
			mustPost(t, "http://"+addr+"/webhooks/lisa-main", lisaHeaders(hmacHex("wrong", body)), body, http.StatusUnauthorized)
		}

		type written struct {
			Topic     string `json:"topic"`
			Partition int32  `json:"partition"`
			Offset    int64  `json:"offset"`
			Key       string `json:"key"`
		}
		type record struct {
			Instance string    `json:"instance"`
			Source   string    `json:"source"`
			Status   int       `json:"status"`
			Outcome  string    `json:"outcome"`
			Reason   string    `json:"reason"`
			Written  []written `json:"written"`
		}
		var view struct {
			Records   []record `json:"deliveries"`
			Instances []string `json:"ingest_instances"`
		}
		accepted := map[string]record{} // by key
		refused := map[string]int{}     // by instance
		took := waitFor(t, "the console's delivery log holds all 8 deliveries", 30*time.Second, func() (bool, string) {
			if err := getJSON(console+"/api/deliveries?limit=1000", &view); err != nil {
				return false, err.Error()
			}
			clear(accepted)
			clear(refused)
			for _, r := range view.Records {
				switch {
				case r.Outcome == "accepted" && len(r.Written) == 1:
					accepted[r.Written[0].Key] = r
				case r.Outcome == "refused" && r.Reason == "bad_signature":
					refused[r.Instance]++
				}
			}
			return len(view.Records) == 2*perIngest+2 && len(accepted) == 2*perIngest && len(refused) == 2, fmt.Sprintf("%+v", view)
		})
		t.Logf("%s: all 8 deliveries in the console's log %s after the last answer", b.name, took.Round(time.Millisecond))

		slices.Sort(ingests)
		if !slices.Equal(view.Instances, ingests) {
			t.Errorf("/api/deliveries lists ingest instances %q, want %q", view.Instances, ingests)
		}
		for _, inst := range ingests {
			if refused[inst] != 1 {
				t.Errorf("%s: %d bad_signature refusals in the log, want 1", inst, refused[inst])
			}
		}
		onTopic := map[string][2]int64{}
		for _, r := range readAll(t, b.brokers, names.Changes) {
			onTopic[string(r.Key)] = [2]int64{int64(r.Partition), r.Offset}
		}
		for key, inst := range want {
			r, ok := accepted[key]
			if !ok {
				t.Errorf("no accepted delivery of %s in the log", key)
				continue
			}
			w := r.Written[0]
			if r.Instance != inst || r.Source != "lisa-main" || r.Status != http.StatusAccepted {
				t.Errorf("%s: instance %s, source %s, status %d; want %s, lisa-main, 202", key, r.Instance, r.Source, r.Status, inst)
			}
			if pos, ok := onTopic[key]; !ok || w.Topic != names.Changes || [2]int64{int64(w.Partition), w.Offset} != pos {
				t.Errorf("%s: the log says %s/%d/%d; on %s it is at %v (found: %t)", key, w.Topic, w.Partition, w.Offset, names.Changes, pos, ok)
			}
		}

		var overview struct {
			Instances []string `json:"ingest_instances"`
			Accepted  int      `json:"accepted_15m"`
			Refused   int      `json:"refused_15m"`
			Processor struct {
				Group      string `json:"group"`
				LagRecords int64  `json:"lag_records"`
			} `json:"processor"`
		}
		waitFor(t, "the overview counts both ingest processes and a caught-up processor", 30*time.Second, func() (bool, string) {
			if err := getJSON(console+"/api/overview", &overview); err != nil {
				return false, err.Error()
			}
			return slices.Equal(overview.Instances, ingests) && overview.Accepted == 2*perIngest && overview.Refused == 2 &&
				overview.Processor.Group == prefix+"processor" && overview.Processor.LagRecords == 0, fmt.Sprintf("%+v", overview)
		})
	})
}
