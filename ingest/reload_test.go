package ingest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/productstream/productstream/config"
)

// swapEdge is an edge on a loopback port, producing to an in-process
// broker, whose sources a test replaces.
type swapEdge struct {
	url  string
	edge *Server
	adm  *kadm.Client
	obs  *outcomes
}

// outcomes records the outcome of every delivery.
type outcomes struct {
	mu  sync.Mutex
	all []Delivery
}

func (o *outcomes) Observe(d Delivery) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.all = append(o.all, d)
}

func (o *outcomes) last() Delivery {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.all[len(o.all)-1]
}

func startSwapEdge(t *testing.T, cfgs []config.Source) *swapEdge {
	t.Helper()
	_, _, cl, out := testOutput(t, 5*time.Second)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	obs := &outcomes{}
	edge := New(buildSources(t, cfgs), out, WithLogger(log), WithObserver(obs))
	addr, _ := serveOn(t, edge.Handler(), edgeListener(5*time.Second))
	return &swapEdge{url: "http://" + addr, edge: edge, adm: kadm.NewClient(cl), obs: obs}
}

// buildSources builds cfgs as the role does.
func buildSources(t *testing.T, cfgs []config.Source) []*Source {
	t.Helper()
	sources, err := NewSources(cfgs, Deps{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return sources
}

// written counts the records on the changes topic.
func (e *swapEdge) written(t *testing.T) int64 {
	t.Helper()
	ends, err := e.adm.ListEndOffsets(context.Background(), testTopic)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	return n
}

// rotatingLiSA is a LiSA source accepting secrets.
func rotatingLiSA(secrets ...string) config.Source {
	return config.Source{Name: "lisa-main", Provider: "lisa", ID: "plugin-42", Namespace: "shop-eu",
		Secrets: secrets, APIKeys: []string{"k1"}, MaxBodyBytes: 1024}
}

// signedLiSA are a LiSA delivery's headers, body signed with secret.
func signedLiSA(secret string, body []byte) http.Header {
	return http.Header{"Authorization": {"ApiKey k1"}, "X-Hmac-Signature": {sign(secret, body)}, "Content-Type": {"application/json"}}
}

// postStatus posts body with h to url and returns the status.
func postStatus(t *testing.T, url string, h http.Header, body []byte) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	req.Header = h
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err)
		return 0
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// startRequest sends a request's headers with Expect: 100-continue and
// returns once the server has started handling it (its handler asked for
// the body); finish sends the body and returns the status.
func startRequest(t *testing.T, url string, h http.Header, body []byte) (finish func() int) {
	t.Helper()
	pr, pw := io.Pipe()
	req, _ := http.NewRequest(http.MethodPost, url, pr)
	req.ContentLength = int64(len(body))
	req.Header = h.Clone()
	req.Header.Set("Expect", "100-continue")
	handling := make(chan struct{})
	req = req.WithContext(httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		Got100Continue: func() { close(handling) },
	}))
	client := &http.Client{Transport: &http.Transport{ExpectContinueTimeout: guard}}
	status := make(chan int, 1)
	go func() {
		resp, err := client.Do(req)
		if err != nil {
			t.Error(err)
			status <- 0
			return
		}
		resp.Body.Close()
		status <- resp.StatusCode
	}()
	select {
	case <-handling:
	case <-time.After(guard):
		t.Fatal("the server did not start handling the request")
	}
	return func() int {
		if _, err := pw.Write(body); err != nil {
			t.Fatal(err)
		}
		pw.Close()
		return <-status
	}
}

// A request finishes under the sources it arrived under, whatever
// SetSources does meanwhile; the next request uses the new ones.
func TestSetSourcesLeavesARequestInFlightWithItsSources(t *testing.T) {
	const route = "/plugin-notifications/plugin-42/updates"
	for _, tc := range []struct {
		name     string
		signedBy string
		want     int // for the request in flight across the swap
	}{
		{"signed with the old secret: accepted", "old", http.StatusAccepted},
		{"signed with the new secret: refused", "new", http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startSwapEdge(t, []config.Source{rotatingLiSA("old")})
			body := []byte(`{"productId":"1","price":1}`)
			finish := startRequest(t, e.url+route, signedLiSA(tc.signedBy, body), body)
			e.edge.SetSources(buildSources(t, []config.Source{rotatingLiSA("new")}))
			if got := finish(); got != tc.want {
				t.Fatalf("request in flight across the swap answered %d, want %d", got, tc.want)
			}
			if got := postStatus(t, e.url+route, signedLiSA("old", body), body); got != http.StatusUnauthorized {
				t.Errorf("old secret after the swap: %d, want 401", got)
			}
			if got := postStatus(t, e.url+route, signedLiSA("new", body), body); got != http.StatusAccepted {
				t.Errorf("new secret after the swap: %d, want 202", got)
			}
			want := int64(1)
			if tc.want == http.StatusAccepted {
				want = 2
			}
			if n := e.written(t); n != want {
				t.Errorf("%d records written, want %d", n, want)
			}
		})
	}
}

// Under concurrent requests, swapping sources back and forth refuses
// nothing signed with a secret every set holds, and only ever accepts or
// refuses (401) one signed with a secret some sets hold; after the last
// swap the secret it removed is refused. Run with -race.
func TestSetSourcesUnderConcurrentRequestsDropsNothing(t *testing.T) {
	e := startSwapEdge(t, []config.Source{rotatingLiSA("shared", "a")})
	const route = "/webhooks/lisa-main"
	setA := []config.Source{rotatingLiSA("shared", "a")}
	setB := []config.Source{rotatingLiSA("b", "shared")}
	stop := make(chan struct{})
	var swaps atomic.Int64
	var swapper sync.WaitGroup
	swapper.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			cfgs := setA
			if i%2 == 0 {
				cfgs = setB
			}
			e.edge.SetSources(buildSources(t, cfgs))
			swaps.Add(1)
			time.Sleep(time.Millisecond)
		}
	})
	var senders sync.WaitGroup
	var accepted, probesAccepted, probesRefused atomic.Int64
	for g := range 6 {
		senders.Go(func() {
			for i := range 40 {
				body := fmt.Appendf(nil, `{"productId":"%d-%d"}`, g, i)
				if got := postStatus(t, e.url+route, signedLiSA("shared", body), body); got != http.StatusAccepted {
					t.Errorf("signed with a secret of every set: %d, want 202", got)
				} else {
					accepted.Add(1)
				}
				switch got := postStatus(t, e.url+route, signedLiSA("a", body), body); got {
				case http.StatusAccepted:
					probesAccepted.Add(1)
				case http.StatusUnauthorized:
					probesRefused.Add(1)
				default:
					t.Errorf("signed with a secret of one set: %d, want 202 or 401", got)
				}
			}
		})
	}
	senders.Wait()
	close(stop)
	swapper.Wait()
	e.edge.SetSources(buildSources(t, setB))
	body := []byte(`{"productId":"last"}`)
	if got := postStatus(t, e.url+route, signedLiSA("a", body), body); got != http.StatusUnauthorized {
		t.Errorf("secret a after the last swap removed it: %d, want 401", got)
	}
	if n, want := e.written(t), accepted.Load()+probesAccepted.Load(); n != want {
		t.Errorf("%d records written, want %d (one per 202)", n, want)
	}
	if swaps.Load() < 10 || probesAccepted.Load() == 0 || probesRefused.Load() == 0 {
		t.Errorf("the swaps did not interleave with the requests: %d swaps, probe accepted %d, refused %d",
			swaps.Load(), probesAccepted.Load(), probesRefused.Load())
	}
}

// A reload keeps what the edge remembers of a source: its rate limiter
// while rate_limit is unchanged (no fresh burst), a new one when it
// changes; its memory of deliveries, even when dedupe_window changes.
func TestSetSourcesCarriesOverLimitsAndMemory(t *testing.T) {
	t.Run("rate limit", func(t *testing.T) {
		limited := func(burst int, secret string) []config.Source {
			s := rotatingLiSA(secret)
			s.RateLimit = config.RateLimit{PerSecond: 0.001, Burst: burst}
			return []config.Source{s}
		}
		e := startSwapEdge(t, limited(2, "s1"))
		post := func(secret string) int {
			body := []byte(`{"productId":"1"}`)
			return postStatus(t, e.url+"/webhooks/lisa-main", signedLiSA(secret, body), body)
		}
		for i, want := range []int{202, 202, 429} {
			if got := post("s1"); got != want {
				t.Fatalf("request %d: %d, want %d", i, got, want)
			}
		}
		e.edge.SetSources(buildSources(t, limited(2, "s2")))
		if got := post("s2"); got != http.StatusTooManyRequests {
			t.Fatalf("after a reload that kept rate_limit: %d, want 429 (the spent burst)", got)
		}
		e.edge.SetSources(buildSources(t, limited(3, "s2")))
		if got := post("s2"); got != http.StatusAccepted {
			t.Fatalf("after a reload that changed rate_limit: %d, want 202", got)
		}
	})
	t.Run("dedupe memory", func(t *testing.T) {
		shop := func(window time.Duration, secrets ...string) []config.Source {
			return []config.Source{{Name: "shop", Provider: "hmac", Secrets: secrets, HMAC: cfgShopifyHMAC,
				Payload: cfgShopifyPayload, DedupeWindow: window}}
		}
		e := startSwapEdge(t, shop(10*time.Minute, "s1"))
		body := []byte(`{"id":7}`)
		deliver := func(secret string) Delivery {
			t.Helper()
			h := cfgB64Signer("X-Shopify-Hmac-Sha256", func() http.Header {
				return http.Header{"X-Shopify-Webhook-Id": {"d-1"}, "X-Shopify-Topic": {"products/update"}}
			})(secret, body)
			if got := postStatus(t, e.url+"/webhooks/shop", h, body); got >= 300 {
				t.Fatalf("delivery answered %d", got)
			}
			return e.obs.last()
		}
		if d := deliver("s1"); d.Outcome != Accepted {
			t.Fatalf("first delivery: %s", d.Outcome)
		}
		e.edge.SetSources(buildSources(t, shop(10*time.Minute, "s2", "s1")))
		if d := deliver("s2"); d.Outcome != Duplicate {
			t.Fatalf("retry after a reload: %s, want duplicate", d.Outcome)
		}
		e.edge.SetSources(buildSources(t, shop(5*time.Minute, "s2")))
		if d := deliver("s2"); d.Outcome != Duplicate {
			t.Fatalf("retry after a reload that changed dedupe_window: %s, want duplicate", d.Outcome)
		}
		if n := e.written(t); n != 1 {
			t.Fatalf("%d records written, want 1", n)
		}
	})
}
