package ingest

import (
	"bytes"
	"cmp"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/schemas"
)

// The SNS test bed: an RSA key and a self-signed certificate made in the
// test, served as a .pem by a loopback TLS server that counts every request
// it gets (certificate fetches and subscription confirmations alike), and
// envelopes signed with that key as AWS would sign them.

const (
	tipserTopic      = "arn:aws:sns:eu-west-1:770937179823:webhooks-change-broker"
	tipserOtherTopic = "arn:aws:sns:eu-west-1:770937179823:webhooks-change-broker-2"
	snsCertPath      = "/SimpleNotificationService-0123456789abcdef.pem"
)

// snsTestKeys are made once per test binary: RSA key generation is slow on
// two cores. The second one signs what the served certificate must refuse.
var snsTestKeys = sync.OnceValue(func() [2]*rsa.PrivateKey {
	var keys [2]*rsa.PrivateKey
	for i := range keys {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		keys[i] = k
	}
	return keys
})

// snsSelfSignedPEM returns a PEM certificate for key, signed by itself.
func snsSelfSignedPEM(t testing.TB, pub, priv any) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "sns.eu-west-1.amazonaws.com"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

type snsBed struct {
	key     *rsa.PrivateKey
	wrong   *rsa.PrivateKey
	certPEM []byte
	srv     *httptest.Server
	host    string // 127.0.0.1:port, the trusted certificate host

	mu   sync.Mutex
	reqs []string // every request received, "path?query", in order

	failConfirm atomic.Int32 // confirmation GETs still to answer 500
	flaky       atomic.Int32 // fetches of /flaky.pem still to answer 503
}

func newSNSBed(t *testing.T) *snsBed {
	t.Helper()
	keys := snsTestKeys()
	b := &snsBed{key: keys[0], wrong: keys[1]}
	b.certPEM = snsSelfSignedPEM(t, &b.key.PublicKey, b.key)
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecPEM := snsSelfSignedPEM(t, &ec.PublicKey, ec)
	b.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		b.reqs = append(b.reqs, r.URL.RequestURI())
		b.mu.Unlock()
		switch r.URL.Path {
		case snsCertPath, "/other.pem", "/SimpleNotificationService-0123456789abcdef.key", "/cert":
			w.Write(b.certPEM)
		case "/redirect.pem":
			http.Redirect(w, r, snsCertPath, http.StatusFound)
		case "/fail.pem":
			http.Error(w, "boom", http.StatusInternalServerError)
		case "/flaky.pem":
			if b.flaky.Add(-1) >= 0 {
				http.Error(w, "busy", http.StatusServiceUnavailable)
				return
			}
			w.Write(b.certPEM)
		case "/big.pem":
			// A valid certificate, but the document is over 64 KiB.
			w.Write(b.certPEM)
			w.Write(bytes.Repeat([]byte("\n"), snsMaxCertBytes))
		case "/junk.pem":
			w.Write([]byte("this is not a certificate"))
		case "/ecdsa.pem":
			w.Write(ecPEM)
		case "/":
			if b.failConfirm.Add(-1) >= 0 {
				http.Error(w, "busy", http.StatusInternalServerError)
				return
			}
			w.Write([]byte("<ConfirmSubscriptionResponse/>"))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(b.srv.Close)
	b.host = strings.TrimPrefix(b.srv.URL, "https://")
	return b
}

// hits is the number of requests the bed received so far.
func (b *snsBed) hits() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.reqs)
}

// requests lists the requests received so far.
func (b *snsBed) requests() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.reqs)
}

// wantNoRequestsSince fails t if the bed received any request after its
// first before; what names the cause.
func (b *snsBed) wantNoRequestsSince(t *testing.T, before int, what string) {
	t.Helper()
	if n := b.hits() - before; n != 0 {
		t.Fatalf("%s made %d outbound requests, want none: %v", what, n, b.requests()[before:])
	}
}

func (b *snsBed) certURL() string { return "https://" + b.host + snsCertPath }

// deps hands the provider the TLS server's client (which trusts its
// certificate and may reach loopback).
func (b *snsBed) deps() Deps { return Deps{Outbound: b.srv.Client()} }

// startEdge starts an edge serving the bed's tipser-main source alone
// (startEdge with a 5 s produce timeout).
func (b *snsBed) startEdge(t *testing.T) *fixture {
	t.Helper()
	return startEdge(t, []config.Source{b.source("tipser-main")}, b.deps(), 5*time.Second)
}

// source is a tipser source trusting the bed's host.
func (b *snsBed) source(name string, edit ...func(*config.Source)) config.Source {
	s := config.Source{Name: name, Provider: "tipser", ID: name, Namespace: "tip", DedupeWindow: 10 * time.Minute,
		SNS: &config.SNS{TopicARNs: []string{tipserTopic, tipserOtherTopic}, TrustedCertHosts: []string{b.host}}}
	for _, e := range edit {
		e(&s)
	}
	return s
}

// snsMsg is an envelope's fields; Subject is present iff its key is.
type snsMsg map[string]string

func snsNow() string { return time.Now().UTC().Format("2006-01-02T15:04:05.000Z") }

// notification is an unsigned Notification carrying message.
func (b *snsBed) notification(id, message string) snsMsg {
	return snsMsg{
		"Type": "Notification", "MessageId": id, "TopicArn": tipserTopic, "Message": message,
		"Timestamp": snsNow(), "SigningCertURL": b.certURL(),
		"UnsubscribeURL": "https://" + b.host + "/?Action=Unsubscribe&SubscriptionArn=" + tipserTopic + ":sub",
	}
}

// confirmation is an unsigned Subscription- or UnsubscribeConfirmation.
func (b *snsBed) confirmation(typ, id, token string) snsMsg {
	return snsMsg{
		"Type": typ, "MessageId": id, "TopicArn": tipserTopic, "Token": token,
		"Message":      "You have chosen to subscribe to the topic " + tipserTopic + ".\nTo confirm the subscription, visit the SubscribeURL included in this message.",
		"SubscribeURL": b.subscribeURL(tipserTopic, token), "Timestamp": snsNow(), "SigningCertURL": b.certURL(),
	}
}

func (b *snsBed) subscribeURL(topic, token string) string {
	return "https://" + b.host + "/?Action=ConfirmSubscription&TopicArn=" + url.QueryEscape(topic) + "&Token=" + url.QueryEscape(token)
}

// snsTestStringToSign is the test's own string to sign, written from
// signatures.md apart from the code under test.
func snsTestStringToSign(m snsMsg) string {
	keys := []string{"Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"}
	if m["Type"] != "Notification" {
		keys = []string{"Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"}
	}
	var s strings.Builder
	for _, k := range keys {
		if v, ok := m[k]; ok {
			s.WriteString(k + "\n" + v + "\n")
		}
	}
	return s.String()
}

// snsSignWith returns m signed by key as SignatureVersion version.
func snsSignWith(t testing.TB, key *rsa.PrivateKey, m snsMsg, version string) snsMsg {
	t.Helper()
	out := cloneMsg(m)
	signed := []byte(snsTestStringToSign(m))
	var sig []byte
	var err error
	switch version {
	case "1":
		d := sha1.Sum(signed)
		sig, err = rsa.SignPKCS1v15(nil, key, crypto.SHA1, d[:])
	default:
		d := sha256.Sum256(signed)
		sig, err = rsa.SignPKCS1v15(nil, key, crypto.SHA256, d[:])
	}
	if err != nil {
		t.Fatal(err)
	}
	out["SignatureVersion"] = version
	out["Signature"] = base64.StdEncoding.EncodeToString(sig)
	return out
}

func (b *snsBed) sign(t testing.TB, m snsMsg, version string) snsMsg {
	return snsSignWith(t, b.key, m, version)
}

func cloneMsg(m snsMsg) snsMsg {
	out := snsMsg{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

func (m snsMsg) with(kv ...string) snsMsg {
	out := cloneMsg(m)
	for i := 0; i < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

func (m snsMsg) without(keys ...string) snsMsg {
	out := cloneMsg(m)
	for _, k := range keys {
		delete(out, k)
	}
	return out
}

func (m snsMsg) body(t testing.TB) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]string(m))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// snsHeaders are the headers SNS sends with m.
func snsHeaders(m snsMsg) map[string]string {
	return map[string]string{
		"Content-Type":           "text/plain; charset=UTF-8",
		"X-Amz-Sns-Message-Type": m["Type"],
		"X-Amz-Sns-Message-Id":   m["MessageId"],
		"X-Amz-Sns-Topic-Arn":    m["TopicArn"],
		"User-Agent":             "Amazon Simple Notification Service Agent",
	}
}

// postSNS posts m to source as SNS would, with extra headers set (an empty
// value deletes the header).
func postSNS(t *testing.T, f *fixture, source string, m snsMsg, extra ...string) (int, map[string]any) {
	t.Helper()
	body := m.body(t)
	h := snsHeaders(m)
	for i := 0; i < len(extra); i += 2 {
		if extra[i+1] == "" {
			delete(h, extra[i])
		} else {
			h[extra[i]] = extra[i+1]
		}
	}
	status, resp, _ := f.postT(t, "/webhooks/"+source, bytes.NewReader(body), int64(len(body)), h)
	return status, resp
}

// tipserChanges decodes everything on the changes topic.
func tipserChanges(t *testing.T, f *fixture) []schemas.Change {
	t.Helper()
	var out []schemas.Change
	for _, r := range f.records() {
		ch, err := f.serde.DecodeChange(context.Background(), r.Value)
		if err != nil {
			t.Fatal(err)
		}
		if string(r.Key) != ch.Key() {
			t.Fatalf("record key %q, change key %q", r.Key, ch.Key())
		}
		out = append(out, ch)
	}
	return out
}

// tipserChangeKeys lists "key event-id" of every change on the topic,
// sorted (the topic has several partitions).
func tipserChangeKeys(t *testing.T, f *fixture) []string {
	t.Helper()
	var out []string
	for _, ch := range tipserChanges(t, f) {
		out = append(out, ch.Key()+" "+ch.EventID)
	}
	slices.Sort(out)
	return out
}

func tipserEvent(eventType, data string) string {
	return `{"eventType":"` + eventType + `","data":` + data + `}`
}

// Signed notifications of both signature versions and every Tipser event
// type are accepted and written as exactly one change each, with the right
// resource, key, event type and id, time and raw message.
func TestTipserNotificationsReachKafka(t *testing.T) {
	b := newSNSBed(t)
	f := b.startEdge(t)
	cases := []struct {
		name, version, message, resource, key string
	}{
		{"product-changed v1", "1", tipserEvent("product-changed", `{"productId":"5075bb2ae1d49107c08f3fc8"}`), "product", "tip:5075bb2ae1d49107c08f3fc8"},
		{"product-changed v2", "2", tipserEvent("product-changed", `{"productId":"p2"}`), "product", "tip:p2"},
		{"product-customization-changed", "2", tipserEvent("product-customization-changed", `{"productCustomizationId":"6086bf492a4b7f5a8ded9663","productId":"60522cad085143fb93c0dd2b"}`), "product", "tip:60522cad085143fb93c0dd2b"},
		{"product-in-collection-changed", "1", tipserEvent("product-in-collection-changed", `{"productId":"606c4b1d26581c1d2db4cae2","collectionsIds":["60891a59ba0deda86df46276","60891b40ba0deda86df46277"]}`), "product", "tip:606c4b1d26581c1d2db4cae2"},
		{"pos-collections-changed", "2", tipserEvent("pos-collections-changed", `{"posId":"pos1","collectionsIds":["546dd6b4784155237472f73a","553d0124784155080cc17bbd"]}`), "pos", "tip:pos1"},
		{"pos-collections-changed, no collections left", "2", tipserEvent("pos-collections-changed", `{"posId":"pos2","collectionsIds":[]}`), "pos", "tip:pos2"},
		{"collection-changed", "2", tipserEvent("collection-changed", `{"collectionId":"5f1a21f60d34b4140ce2f10c"}`), "collection", "tip:5f1a21f60d34b4140ce2f10c"},
		{"collection-added", "1", tipserEvent("collection-added", `{"collectionId":"c9"}`), "collection", "tip:c9"},
		{"with a Subject", "2", tipserEvent("product-changed", `{"productId":"subj"}`), "product", "tip:subj"},
	}
	var want []string
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("msg-%d", i)
			m := b.notification(id, tc.message)
			if tc.name == "with a Subject" {
				m["Subject"] = "product update"
			}
			status, resp := postSNS(t, f, "tipser-main", b.sign(t, m, tc.version))
			if status != http.StatusAccepted || resp["accepted"] != 1.0 {
				t.Fatalf("status %d %v", status, resp)
			}
			want = append(want, tc.key+" "+id)
			slices.Sort(want)
			if got := tipserChangeKeys(t, f); !slices.Equal(got, want) {
				t.Fatalf("Kafka holds %v, want %v", got, want)
			}
			var ch schemas.Change
			for _, c := range tipserChanges(t, f) {
				if c.EventID == id {
					ch = c
				}
			}
			ts, _ := time.Parse(time.RFC3339Nano, m["Timestamp"])
			var ev struct {
				EventType string
				Data      struct{ CollectionsIds []string }
			}
			json.Unmarshal([]byte(tc.message), &ev)
			if ch.Resource != tc.resource || ch.EventType != ev.EventType || ch.Raw != tc.message ||
				ch.Provider != "tipser" || ch.Source != "tipser-main" || !ch.OccurredAt.Equal(ts) || ch.Deleted {
				t.Fatalf("change decoded wrong: %+v", ch)
			}
			// Every Tipser event is a notice; the collection events carry
			// their ids (a snapshot may be empty).
			if !ch.Notice || !slices.Equal(ch.CollectionIDs, ev.Data.CollectionsIds) {
				t.Fatalf("notice %v, collection ids %q, want %q", ch.Notice, ch.CollectionIDs, ev.Data.CollectionsIds)
			}
		})
	}
	if n := b.hits(); n != 1 {
		t.Fatalf("the certificate was fetched %d times, want once (then cached): %v", n, b.requests())
	}
}

// The certificate is fetched once per URL and then served from the cache;
// a second certificate URL is fetched once too. (strict: false: the second
// path is not AWS's form.)
func TestTipserCertificateCached(t *testing.T) {
	b := newSNSBed(t)
	loose := func(s *config.Source) { s.SNS.Strict = new(false) }
	f := startEdge(t, []config.Source{b.source("tipser-main", loose)}, b.deps(), 5*time.Second)
	for i, certURL := range []string{b.certURL(), b.certURL(), b.certURL(), "https://" + b.host + "/other.pem", "https://" + b.host + "/other.pem"} {
		m := b.notification(fmt.Sprintf("cache-%d", i), tipserEvent("product-changed", fmt.Sprintf(`{"productId":"c%d"}`, i)))
		m["SigningCertURL"] = certURL
		if status, resp := postSNS(t, f, "tipser-main", b.sign(t, m, "2")); status != http.StatusAccepted {
			t.Fatalf("message %d: %d %v", i, status, resp)
		}
	}
	if got, want := b.requests(), []string{snsCertPath, "/other.pem"}; !slices.Equal(got, want) {
		t.Fatalf("requests %v, want %v", got, want)
	}
	if n := len(f.records()); n != 5 {
		t.Fatalf("%d records, want 5", n)
	}
}

// SNS retries reuse the MessageId: a retried message is answered as
// accepted and written once.
func TestTipserRetriedMessageWrittenOnce(t *testing.T) {
	b := newSNSBed(t)
	f := b.startEdge(t)
	m := b.sign(t, b.notification("retry-1", tipserEvent("product-changed", `{"productId":"r"}`)), "2")
	for i := range 3 {
		if status, resp := postSNS(t, f, "tipser-main", m); status != http.StatusAccepted || resp["accepted"] != 1.0 {
			t.Fatalf("delivery %d: %d %v", i, status, resp)
		}
	}
	if got := tipserChangeKeys(t, f); !slices.Equal(got, []string{"tip:r retry-1"}) {
		t.Fatalf("Kafka holds %v, want the message once", got)
	}
}

// Every refusal that signatures.md says happens before any network request
// makes none: the bed's counter stays at zero, and nothing is written.
func TestTipserRefusalsMakeNoOutboundRequest(t *testing.T) {
	b := newSNSBed(t)
	sources := []config.Source{
		b.source("tipser-main"),
		b.source("tipser-v2", func(s *config.Source) { s.SNS.SignatureVersions = []string{"2"} }),
		b.source("tipser-aws", func(s *config.Source) { s.SNS.TrustedCertHosts = nil }),
		b.source("tipser-strict", func(s *config.Source) { s.SNS.Strict = new(true) }),
		b.source("tipser-maxage", func(s *config.Source) { s.SNS.MaxAge = time.Hour }),
	}
	f := startEdge(t, sources, b.deps(), 5*time.Second)
	note := func(id string) snsMsg {
		return b.notification(id, tipserEvent("product-changed", `{"productId":"x"}`))
	}
	cert := func(u string) func(m snsMsg) snsMsg {
		return func(m snsMsg) snsMsg { return m.with("SigningCertURL", u) }
	}
	confirm := func(sub string) snsMsg {
		return b.confirmation("SubscriptionConfirmation", "c-"+sub, "tok123").with("SubscribeURL", sub)
	}
	other := strings.Replace(b.host, ":", ":1", 1) // the same host, another port
	cases := []struct {
		name    string
		source  string
		msg     snsMsg
		before  func(snsMsg) snsMsg // applied before signing
		after   func(snsMsg) snsMsg // applied after signing
		headers []string
		status  int
		errHas  string
	}{
		{name: "unknown SignatureVersion", msg: note("v3"), after: func(m snsMsg) snsMsg { return m.with("SignatureVersion", "3") }, status: 401, errHas: "SignatureVersion"},
		{name: "SignatureVersion 1 on a source accepting only 2", source: "tipser-v2", msg: note("v1-on-v2"), status: 401, errHas: "SignatureVersion"},
		{name: "cert URL on http", msg: note("http"), before: cert("http://" + b.host + snsCertPath), status: 401, errHas: "https"},
		{name: "cert URL foreign host", msg: note("foreign"), before: cert("https://evil.example.com" + snsCertPath), status: 401, errHas: "host"},
		{name: "cert URL sns.x.amazonaws.com.evil.com", msg: note("suffix"), before: cert("https://sns.x.amazonaws.com.evil.com" + snsCertPath), status: 401, errHas: "host"},
		{name: "cert URL sns.x.amazonaws.com.evil.com, AWS rules", source: "tipser-aws", msg: note("suffix-aws"), before: cert("https://sns.x.amazonaws.com.evil.com" + snsCertPath), status: 401, errHas: "host"},
		{name: "cert URL with userinfo", msg: note("userinfo"), before: cert("https://user:pw@" + b.host + snsCertPath), status: 401, errHas: "userinfo"},
		{name: "cert URL with another port", msg: note("port"), before: cert("https://" + other + snsCertPath), status: 401, errHas: "host"},
		{name: "cert URL with a port, AWS rules", source: "tipser-aws", msg: note("port-aws"), before: cert("https://sns.eu-west-1.amazonaws.com:443" + snsCertPath), status: 401, errHas: "port"},
		{name: "cert URL .key path", msg: note("key"), before: cert("https://" + b.host + "/SimpleNotificationService-0123456789abcdef.key"), status: 401, errHas: ".pem"},
		{name: "cert URL ?x=.pem query", msg: note("query"), before: cert("https://" + b.host + "/cert?x=.pem"), status: 401, errHas: "query"},
		{name: "cert URL with a fragment", msg: note("fragment"), before: cert("https://" + b.host + snsCertPath + "#x"), status: 401, errHas: "fragment"},
		{name: "cert URL path not AWS's, strict", source: "tipser-strict", msg: note("strict"), before: cert("https://" + b.host + "/other.pem"), status: 401, errHas: "SimpleNotificationService"},
		{name: "TopicArn not allowed", msg: note("topic").with("TopicArn", "arn:aws:sns:eu-west-1:111111111111:elsewhere"), status: 403, errHas: "TopicArn"},
		{name: "older than max_age", source: "tipser-maxage", msg: note("stale").with("Timestamp", time.Now().Add(-2*time.Hour).UTC().Format(time.RFC3339Nano)), status: 401, errHas: "stale"},
		{name: "SubscribeURL on a foreign host", msg: confirm("https://evil.example.com/?Action=ConfirmSubscription&TopicArn=" + tipserTopic + "&Token=tok123"), status: 403, errHas: "SubscribeURL"},
		{name: "SubscribeURL to the metadata address", msg: confirm("https://169.254.169.254/?Action=ConfirmSubscription&TopicArn=" + tipserTopic + "&Token=tok123"), status: 403, errHas: "SubscribeURL"},
		{name: "SubscribeURL on http", msg: confirm("http://" + b.host + "/?Action=ConfirmSubscription&TopicArn=" + tipserTopic + "&Token=tok123"), status: 403, errHas: "https"},
		{name: "SubscribeURL wrong path", msg: confirm("https://" + b.host + "/confirm?Action=ConfirmSubscription&TopicArn=" + tipserTopic + "&Token=tok123"), status: 400, errHas: "path"},
		{name: "SubscribeURL wrong Action", msg: confirm("https://" + b.host + "/?Action=Unsubscribe&TopicArn=" + tipserTopic + "&Token=tok123"), status: 400, errHas: "Action"},
		{name: "SubscribeURL two Actions", msg: confirm("https://" + b.host + "/?Action=ConfirmSubscription&Action=Unsubscribe&TopicArn=" + tipserTopic + "&Token=tok123"), status: 400, errHas: "Action"},
		{name: "SubscribeURL other TopicArn", msg: confirm(b.subscribeURL(tipserOtherTopic, "tok123")), status: 400, errHas: "TopicArn"},
		{name: "SubscribeURL other Token", msg: confirm(b.subscribeURL(tipserTopic, "other")), status: 400, errHas: "Token"},
		{name: "unknown Type", msg: note("type").with("Type", "Notice"), headers: []string{"X-Amz-Sns-Message-Type", ""}, status: 400, errHas: "Type"},
		{name: "missing Signature", msg: note("nosig"), after: func(m snsMsg) snsMsg { return m.without("Signature") }, status: 400, errHas: "Signature"},
		{name: "Signature not base64", msg: note("b64"), after: func(m snsMsg) snsMsg { return m.with("Signature", "not base64!") }, status: 400, errHas: "Signature"},
		{name: "header Type disagrees", msg: note("h-type"), headers: []string{"X-Amz-Sns-Message-Type", "SubscriptionConfirmation"}, status: 400, errHas: "x-amz-sns-message-type"},
		{name: "header MessageId disagrees", msg: note("h-id"), headers: []string{"X-Amz-Sns-Message-Id", "another"}, status: 400, errHas: "x-amz-sns-message-id"},
		{name: "header TopicArn disagrees", msg: note("h-topic"), headers: []string{"X-Amz-Sns-Topic-Arn", tipserOtherTopic}, status: 400, errHas: "x-amz-sns-topic-arn"},
		{name: "not an envelope", msg: snsMsg{}, headers: []string{"X-Amz-Sns-Message-Type", ""}, status: 400, errHas: "Type"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := tc.msg
			if tc.before != nil {
				m = tc.before(m)
			}
			m = b.sign(t, m, "1")
			if tc.after != nil {
				m = tc.after(m)
			}
			source := cmp.Or(tc.source, "tipser-main")
			before := b.hits()
			status, resp := postSNS(t, f, source, m, tc.headers...)
			if status != tc.status {
				t.Fatalf("status %d, want %d (%v)", status, tc.status, resp)
			}
			if msg := errorText(resp); !strings.Contains(msg, tc.errHas) || m["Signature"] != "" && strings.Contains(msg, m["Signature"]) {
				t.Fatalf("error %q does not say %q (or leaks the signature)", msg, tc.errHas)
			}
			b.wantNoRequestsSince(t, before, "the refused message")
		})
	}
	if n := len(f.records()); n != 0 {
		t.Fatalf("refusals wrote %d records", n)
	}
}

// A certificate fetch that is redirected, fails, is oversized or is not an
// RSA certificate refuses the message: 503 when SNS should retry, 401 when
// the document itself is wrong; the redirect is never followed, and a
// failure is answered again without a fetch for snsCertFailTTL. (strict:
// false: the bed's paths are not AWS's form.)
func TestTipserCertificateFetchFailures(t *testing.T) {
	b := newSNSBed(t)
	loose := func(s *config.Source) { s.SNS.Strict = new(false) }
	f := startEdge(t, []config.Source{b.source("tipser-main", loose)}, b.deps(), 5*time.Second)
	var ahead atomic.Int64 // the certificate cache's virtual clock: base plus ahead
	base := time.Now()
	f.src.Adapter.(*tipser).certs.now = func() time.Time { return base.Add(time.Duration(ahead.Load())) }
	cases := []struct {
		name, path string
		status     int
		errHas     string
		requests   []string
	}{
		{"redirect is not followed", "/redirect.pem", 401, "302", []string{"/redirect.pem"}},
		{"5xx", "/fail.pem", 503, "500", []string{"/fail.pem"}},
		{"5xx again, from the cache", "/fail.pem", 503, "500", nil},
		{"404", "/missing.pem", 401, "404", []string{"/missing.pem"}},
		{"oversize", "/big.pem", 401, "65536 bytes", []string{"/big.pem"}},
		{"not PEM", "/junk.pem", 401, "PEM", []string{"/junk.pem"}},
		{"not RSA", "/ecdsa.pem", 401, "RSA", []string{"/ecdsa.pem"}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := len(b.requests())
			m := b.notification(fmt.Sprintf("fetch-%d", i), tipserEvent("product-changed", `{"productId":"x"}`))
			m["SigningCertURL"] = "https://" + b.host + tc.path
			status, resp := postSNS(t, f, "tipser-main", b.sign(t, m, "2"))
			if status != tc.status || !strings.Contains(errorText(resp), tc.errHas) {
				t.Fatalf("status %d %v, want %d saying %q", status, resp, tc.status, tc.errHas)
			}
			if got := b.requests()[before:]; !slices.Equal(got, tc.requests) {
				t.Fatalf("requests %v, want %v", got, tc.requests)
			}
		})
	}
	t.Run("503 then the same message accepted", func(t *testing.T) {
		b.flaky.Store(1)
		m := b.notification("flaky", tipserEvent("product-changed", `{"productId":"flaky"}`))
		m["SigningCertURL"] = "https://" + b.host + "/flaky.pem"
		m = b.sign(t, m, "2")
		if status, resp := postSNS(t, f, "tipser-main", m); status != http.StatusServiceUnavailable {
			t.Fatalf("first delivery: %d %v, want 503", status, resp)
		}
		ahead.Add(int64(snsCertFailTTL)) // SNS retries later
		if status, resp := postSNS(t, f, "tipser-main", m); status != http.StatusAccepted {
			t.Fatalf("retry: %d %v, want 202", status, resp)
		}
	})
	if got := tipserChangeKeys(t, f); !slices.Equal(got, []string{"tip:flaky flaky"}) {
		t.Fatalf("Kafka holds %v, want only the flaky message", got)
	}
}

// A message altered after AWS signed it (any signed field, the signer, or
// the SignatureVersion) is refused with 401 and nothing is written.
func TestTipserTamperedMessage(t *testing.T) {
	b := newSNSBed(t)
	f := b.startEdge(t)
	note := b.notification("n-1", tipserEvent("product-changed", `{"productId":"t"}`)).with("Subject", "hello")
	subscribe := b.confirmation("SubscriptionConfirmation", "s-1", "tok")
	unsubscribe := b.confirmation("UnsubscribeConfirmation", "u-1", "tok")
	cases := []struct {
		name  string
		msg   snsMsg
		alter func(snsMsg) snsMsg
	}{
		{"Message", note, func(m snsMsg) snsMsg {
			return m.with("Message", tipserEvent("product-changed", `{"productId":"u"}`))
		}},
		{"Message, trailing newline", note, func(m snsMsg) snsMsg { return m.with("Message", m["Message"]+"\n") }},
		{"Subject changed", note, func(m snsMsg) snsMsg { return m.with("Subject", "hello!") }},
		{"Subject emptied", note, func(m snsMsg) snsMsg { return m.with("Subject", "") }},
		{"Subject removed", note, func(m snsMsg) snsMsg { return m.without("Subject") }},
		{"Subject added", note.without("Subject"), func(m snsMsg) snsMsg { return m.with("Subject", "x") }},
		{"Timestamp", note, func(m snsMsg) snsMsg {
			return m.with("Timestamp", time.Now().Add(-time.Minute).UTC().Format("2006-01-02T15:04:05.000Z"))
		}},
		{"MessageId", note, func(m snsMsg) snsMsg { return m.with("MessageId", "n-2") }},
		{"TopicArn, to another allowed topic", note, func(m snsMsg) snsMsg { return m.with("TopicArn", tipserOtherTopic) }},
		{"Type, Subscription to Unsubscribe", subscribe, func(m snsMsg) snsMsg { return m.with("Type", "UnsubscribeConfirmation") }},
		{"Type, Unsubscribe to Subscription", unsubscribe, func(m snsMsg) snsMsg { return m.with("Type", "SubscriptionConfirmation") }},
		{"Token", unsubscribe, func(m snsMsg) snsMsg { return m.with("Token", "tok2") }},
		{"SignatureVersion 2 to 1", note, func(m snsMsg) snsMsg { return m.with("SignatureVersion", "1") }},
		{"signed with another key", note, func(m snsMsg) snsMsg { return snsSignWith(t, b.wrong, m, "2") }},
		{"signature truncated", note, func(m snsMsg) snsMsg {
			sig, _ := base64.StdEncoding.DecodeString(m["Signature"])
			return m.with("Signature", base64.StdEncoding.EncodeToString(sig[:len(sig)-1]))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := tc.alter(b.sign(t, tc.msg, "2"))
			status, resp := postSNS(t, f, "tipser-main", m)
			if status != http.StatusUnauthorized || !strings.Contains(errorText(resp), "signature") {
				t.Fatalf("status %d %v, want 401 signature does not match", status, resp)
			}
		})
	}
	if n := len(f.records()); n != 0 {
		t.Fatalf("tampered messages wrote %d records", n)
	}
	for _, r := range b.requests() {
		if r != snsCertPath {
			t.Fatalf("a tampered confirmation visited %s", r)
		}
	}
}

// Raw message delivery carries no signature: refused (401) unless the
// source has basic auth, then accepted with the body as the Tipser event.
func TestTipserRawDelivery(t *testing.T) {
	b := newSNSBed(t)
	basic := func(s *config.Source) {
		s.BasicAuth = &config.BasicAuth{Username: "sns", Passwords: []string{"pw1", "pw0"}}
	}
	f := startEdge(t, []config.Source{b.source("tipser-main"), b.source("tipser-basic", basic)}, b.deps(), 5*time.Second)
	event := []byte(tipserEvent("product-changed", `{"productId":"raw"}`))
	auth := func(pw string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte("sns:"+pw)) }
	cases := []struct {
		name, source string
		headers      map[string]string
		status       int
		errHas       string
	}{
		{"without basic auth configured", "tipser-main", map[string]string{}, 401, "basic_auth"},
		{"basic auth missing", "tipser-basic", map[string]string{}, 401, "basic auth"},
		{"basic auth wrong", "tipser-basic", map[string]string{"Authorization": auth("nope")}, 401, "basic auth"},
		{"topic header not allowed", "tipser-basic", map[string]string{"Authorization": auth("pw1"), "X-Amz-Sns-Topic-Arn": "arn:aws:sns:eu-west-1:1:other"}, 403, "TopicArn"},
		{"with basic auth", "tipser-basic", map[string]string{"Authorization": auth("pw1")}, 202, ""},
		{"with the rotated password, the same body again", "tipser-basic", map[string]string{"Authorization": auth("pw0")}, 202, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := map[string]string{"Content-Type": "text/plain; charset=UTF-8", "X-Amz-Sns-Rawdelivery": "true",
				"X-Amz-Sns-Message-Type": "Notification", "X-Amz-Sns-Topic-Arn": tipserTopic, "X-Amz-Sns-Message-Id": "raw-1"}
			for k, v := range tc.headers {
				h[k] = v
			}
			status, resp, _ := f.postT(t, "/webhooks/"+tc.source, bytes.NewReader(event), int64(len(event)), h)
			if status != tc.status || !strings.Contains(errorText(resp), tc.errHas) {
				t.Fatalf("status %d %v, want %d saying %q", status, resp, tc.status, tc.errHas)
			}
		})
	}
	chs := tipserChanges(t, f)
	if len(chs) != 1 || chs[0].Key() != "tip:raw" || chs[0].EventID != "raw-1" ||
		chs[0].Raw != string(event) || !chs[0].OccurredAt.IsZero() {
		t.Fatalf("Kafka holds %+v, want the raw event once", chs)
	}
	b.wantNoRequestsSince(t, 0, "raw deliveries")
}

// A valid SubscriptionConfirmation is confirmed by exactly one GET of its
// SubscribeURL, with its query, and writes nothing; a retry of it is not
// confirmed again; a failed confirmation is 503 so SNS sends it again.
func TestTipserSubscriptionConfirmation(t *testing.T) {
	b := newSNSBed(t)
	f := b.startEdge(t)
	m := b.sign(t, b.confirmation("SubscriptionConfirmation", "sub-1", "2336412f37fb687f5d51e6e2425c464de"), "1")
	for i := range 2 {
		status, resp := postSNS(t, f, "tipser-main", m)
		if status != http.StatusAccepted || resp["accepted"] != 0.0 {
			t.Fatalf("delivery %d: %d %v", i, status, resp)
		}
	}
	want := []string{snsCertPath, "/?Action=ConfirmSubscription&TopicArn=" + url.QueryEscape(tipserTopic) + "&Token=2336412f37fb687f5d51e6e2425c464de"}
	if got := b.requests(); !slices.Equal(got, want) {
		t.Fatalf("requests %v, want %v", got, want)
	}

	b.failConfirm.Store(1)
	m2 := b.sign(t, b.confirmation("SubscriptionConfirmation", "sub-2", "tok2"), "2")
	if status, resp := postSNS(t, f, "tipser-main", m2); status != http.StatusServiceUnavailable {
		t.Fatalf("failed confirmation: %d %v, want 503", status, resp)
	}
	if status, resp := postSNS(t, f, "tipser-main", m2); status != http.StatusAccepted {
		t.Fatalf("confirmation retried: %d %v, want 202", status, resp)
	}
	if got := b.requests()[2:]; len(got) != 2 || got[0] != got[1] || !strings.Contains(got[0], "Token=tok2") {
		t.Fatalf("requests %v, want the SubscribeURL twice", got)
	}
	if n := len(f.records()); n != 0 {
		t.Fatalf("confirmations wrote %d records", n)
	}
}

// An UnsubscribeConfirmation is accepted and only logged: its SubscribeURL
// is never visited and nothing is written.
func TestTipserUnsubscribeConfirmation(t *testing.T) {
	b := newSNSBed(t)
	f := b.startEdge(t)
	// Warm the certificate cache, so the unsubscribe makes no request at all.
	warm := b.sign(t, b.notification("warm", tipserEvent("product-changed", `{"productId":"w"}`)), "2")
	if status, resp := postSNS(t, f, "tipser-main", warm); status != http.StatusAccepted {
		t.Fatalf("warm-up: %d %v", status, resp)
	}
	before := b.hits()
	m := b.sign(t, b.confirmation("UnsubscribeConfirmation", "unsub-1", "tok"), "2")
	status, resp := postSNS(t, f, "tipser-main", m)
	if status != http.StatusAccepted || resp["accepted"] != 0.0 {
		t.Fatalf("status %d %v", status, resp)
	}
	b.wantNoRequestsSince(t, before, "the unsubscribe confirmation")
	if n := len(f.records()); n != 1 {
		t.Fatalf("%d records, want only the warm-up's", n)
	}
}

// A body of exactly 300 KiB is read; one byte more is 413, announced by
// Content-Length or sent chunked.
func TestTipserBodyLimit(t *testing.T) {
	b := newSNSBed(t)
	f := b.startEdge(t)
	if f.src.MaxBody != 300<<10 {
		t.Fatalf("default body limit %d, want 300 KiB", f.src.MaxBody)
	}
	// sized returns a signed envelope of exactly n bytes, padding Message.
	sized := func(id string, n int) []byte {
		pad := 0
		for {
			msg := `{"eventType":"product-changed","data":{"productId":"big"},"pad":"` + strings.Repeat("x", pad) + `"}`
			body := b.sign(t, b.notification(id, msg), "2").body(t)
			if len(body) == n {
				return body
			}
			if len(body) > n {
				t.Fatalf("cannot size the envelope to %d bytes", n)
			}
			pad += n - len(body)
		}
	}
	limit := int(f.src.MaxBody)
	exact := sized("exact", limit)
	hdr := map[string]string{"Content-Type": "text/plain; charset=UTF-8"}
	if status, resp, _ := f.postT(t, "/webhooks/tipser-main", bytes.NewReader(exact), int64(len(exact)), hdr); status != http.StatusAccepted {
		t.Fatalf("body of exactly the limit: %d %v", status, resp)
	}
	over := sized("over", limit+1)
	for _, chunk := range []bool{false, true} {
		t.Run(fmt.Sprintf("limit+1 chunked=%v", chunk), func(t *testing.T) {
			before := b.hits()
			var status int
			var resp map[string]any
			if chunk {
				status, resp, _ = f.postT(t, "/webhooks/tipser-main", chunkedReader{bytes.NewReader(over)}, -1, hdr)
			} else {
				status, resp, _ = f.postT(t, "/webhooks/tipser-main", bytes.NewReader(over), int64(len(over)), hdr)
			}
			if status != http.StatusRequestEntityTooLarge {
				t.Fatalf("status %d %v, want 413", status, resp)
			}
			b.wantNoRequestsSince(t, before, "an oversized body")
		})
	}
	if got := tipserChangeKeys(t, f); !slices.Equal(got, []string{"tip:big exact"}) {
		t.Fatalf("Kafka holds %v", got)
	}
}

// When Kafka does not acknowledge, SNS gets 503 (it retries), and the same
// message is accepted once Kafka is back.
func TestTipserKafkaUnreachable(t *testing.T) {
	b := newSNSBed(t)
	f := startEdge(t, []config.Source{b.source("tipser-main")}, b.deps(), time.Second)
	warm := b.sign(t, b.notification("warm", tipserEvent("product-changed", `{"productId":"w"}`)), "2")
	if status, resp := postSNS(t, f, "tipser-main", warm); status != http.StatusAccepted {
		t.Fatalf("warm-up: %d %v", status, resp)
	}
	kafkaBack := f.breakProduce()
	m := b.sign(t, b.notification("outage", tipserEvent("product-changed", `{"productId":"outage"}`)), "2")
	if status, resp := postSNS(t, f, "tipser-main", m); status != http.StatusServiceUnavailable {
		t.Fatalf("during the outage: %d %v, want 503", status, resp)
	}
	kafkaBack()
	deadline := time.Now().Add(15 * time.Second)
	for {
		status, resp := postSNS(t, f, "tipser-main", m)
		if status == http.StatusAccepted {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never accepted after the outage: %d %v", status, resp)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := tipserChangeKeys(t, f); !slices.Contains(got, "tip:outage outage") {
		t.Fatalf("the retried message is not in Kafka: %v", got)
	}
}

// Signed envelopes whose Tipser event is not what the contract says are
// refused with 400 naming the field, and nothing is written.
func TestTipserInvalidEvents(t *testing.T) {
	b := newSNSBed(t)
	f := b.startEdge(t)
	cases := []struct{ name, message, errHas string }{
		{"not JSON", `{"eventType":`, "not a JSON object"},
		{"JSON array", `[]`, "not a JSON object"},
		{"unknown eventType", tipserEvent("product-deleted", `{"productId":"1"}`), "eventType"},
		{"eventType not a string", `{"eventType":1,"data":{"productId":"1"}}`, "eventType"},
		{"missing eventType", `{"data":{"productId":"1"}}`, "missing field eventType"},
		{"missing data", `{"eventType":"product-changed"}`, "missing field data"},
		{"data not an object", `{"eventType":"product-changed","data":["1"]}`, "data"},
		{"missing productId", tipserEvent("product-changed", `{}`), "missing field data.productId"},
		{"empty productId", tipserEvent("product-changed", `{"productId":""}`), "data.productId"},
		{"missing productCustomizationId", tipserEvent("product-customization-changed", `{"productId":"1"}`), "data.productCustomizationId"},
		{"missing posId", tipserEvent("pos-collections-changed", `{"collectionsIds":[]}`), "data.posId"},
		{"missing collectionId", tipserEvent("collection-added", `{"productId":"1"}`), "data.collectionId"},
		{"missing collectionsIds", tipserEvent("product-in-collection-changed", `{"productId":"1"}`), "data.collectionsIds"},
		{"collectionsIds not an array", tipserEvent("pos-collections-changed", `{"posId":"1","collectionsIds":"a"}`), "data.collectionsIds"},
		{"collectionsIds holding a number", tipserEvent("product-in-collection-changed", `{"productId":"1","collectionsIds":["a",2]}`), "data.collectionsIds"},
		{"collectionsIds holding null", tipserEvent("product-in-collection-changed", `{"productId":"1","collectionsIds":["a",null]}`), "data.collectionsIds"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := b.sign(t, b.notification(fmt.Sprintf("bad-%d", i), tc.message), "2")
			status, resp := postSNS(t, f, "tipser-main", m)
			if status != http.StatusBadRequest || !strings.Contains(errorText(resp), tc.errHas) {
				t.Fatalf("status %d %v, want 400 saying %q", status, resp, tc.errHas)
			}
		})
	}
	if n := len(f.records()); n != 0 {
		t.Fatalf("invalid events wrote %d records", n)
	}
}

// A tipser source needs an sns block with topic ARNs; signature versions are
// "1" or "2"; each mistake is a FieldError naming the field.
func TestTipserConfigErrors(t *testing.T) {
	base := func(edit func(*config.SNS)) config.Source {
		s := config.Source{Name: "t", Provider: "tipser", SNS: &config.SNS{TopicARNs: []string{tipserTopic}}}
		if edit != nil {
			edit(s.SNS)
		}
		return s
	}
	cases := []struct {
		name  string
		src   config.Source
		field string
	}{
		{"valid", base(nil), ""},
		{"valid, all options", base(func(s *config.SNS) {
			s.SignatureVersions, s.Strict, s.MaxAge, s.TrustedCertHosts = []string{"2"}, new(true), time.Hour, []string{"127.0.0.1:8443", "localhost"}
		}), ""},
		{"no sns block", config.Source{Name: "t", Provider: "tipser"}, "sources[0].sns.topic_arns"},
		{"no topic", base(func(s *config.SNS) { s.TopicARNs = nil }), "sources[0].sns.topic_arns"},
		{"not a topic ARN", base(func(s *config.SNS) { s.TopicARNs = append(s.TopicARNs, "webhooks-topic") }), "sources[0].sns.topic_arns[1]"},
		{"unknown signature version", base(func(s *config.SNS) { s.SignatureVersions = []string{"2", "3"} }), "sources[0].sns.signature_versions[1]"},
		{"negative max age", base(func(s *config.SNS) { s.MaxAge = -time.Second }), "sources[0].sns.max_age"},
		{"trusted host with a scheme", base(func(s *config.SNS) { s.TrustedCertHosts = []string{"https://127.0.0.1"} }), "sources[0].sns.trusted_cert_hosts[0]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewSources([]config.Source{tc.src}, Deps{})
			var fe *config.FieldError
			switch {
			case tc.field == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.field != "" && (!errors.As(err, &fe) || fe.Field != tc.field):
				t.Fatalf("want a FieldError for %s, got %v", tc.field, err)
			}
		})
	}
}

// Sign cannot make an SNS signature; it gives the headers SNS sends.
func TestTipserSignHeaders(t *testing.T) {
	src := oneSource(t, config.Source{Name: "t", Provider: "tipser", SNS: &config.SNS{TopicARNs: []string{tipserTopic}}})
	h := src.Adapter.(Signer).Sign([]byte("{}"))
	if len(h) != 2 || h.Get("Content-Type") != "text/plain" || h.Get("X-Amz-Sns-Message-Type") != "Notification" {
		t.Fatalf("headers %v", h)
	}
	if routes := providers()["tipser"].Routes; src.MaxBody != 300<<10 || routes != nil {
		t.Fatalf("limit %d, routes %v", src.MaxBody, routes)
	}
}

// DeliveryID is the signed MessageId for an envelope and the unsigned
// message id header for a raw delivery, never the body.
func TestTipserDeliveryID(t *testing.T) {
	src := oneSource(t, config.Source{Name: "t", Provider: "tipser", SNS: &config.SNS{TopicARNs: []string{tipserTopic}}})
	// The signed envelope, as Verify returns it.
	b := newSNSBed(t)
	f := b.startEdge(t)
	m := b.sign(t, b.notification("m-1", tipserEvent("product-changed", `{"productId":"1"}`)), "2")
	if v, err := f.src.Adapter.Verify(t.Context(), &Request{Header: http.Header{}, Body: m.body(t), Received: time.Now()}); err != nil || v.Identity != (Identity{ID: "m-1", Signed: true}) {
		t.Fatalf("envelope: %+v %v", v.Identity, err)
	}
	env := []byte(`{"Type":"Notification","MessageId":"m-1","Message":"{}"}`)
	raw := http.Header{"X-Amz-Sns-Rawdelivery": {"true"}, "X-Amz-Sns-Message-Id": {"m-2"}}
	withAuth := oneSource(t, config.Source{Name: "t", Provider: "tipser", SNS: &config.SNS{TopicARNs: []string{tipserTopic}},
		BasicAuth: &config.BasicAuth{Username: "u", Passwords: []string{"p"}}})
	if v, err := withAuth.Adapter.Verify(t.Context(), &Request{Header: raw, Body: env}); err != nil || v.Identity != (Identity{ID: "m-2"}) {
		t.Fatalf("raw: %+v %v", v.Identity, err)
	}
	if v, err := src.Adapter.Verify(t.Context(), &Request{Header: http.Header{}, Body: []byte("nope")}); err == nil || v.Identity.ID != "" {
		t.Fatalf("an unparseable body has a delivery id: %+v", v.Identity)
	}
}
