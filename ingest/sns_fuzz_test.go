package ingest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/productstream/productstream/config"
)

// Parsing any body and building its string to sign never panics, and the
// string to sign is stable: the envelope written back out as JSON parses to
// the same string to sign. Verification of whatever signature it carries
// never panics either.
func FuzzSNSEnvelope(f *testing.F) {
	f.Add(snsVectorNotification("1", snsVectorNotificationV1))
	f.Add(snsVectorConfirmation("2", snsVectorConfirmationV2))
	f.Add([]byte(`{"Type":"Notification","MessageId":"I","TopicArn":"A","Subject":null,"Message":"M","Timestamp":"T"}`))
	f.Add([]byte(`{"Type":"UnsubscribeConfirmation","Message":"a\nb","Subject":"","Token":"t","SubscribeURL":"u"}`))
	f.Add([]byte(`{"Type":"Notification","message":"x","Message":"M","Message":"N"}`))
	f.Add([]byte(`{"MessageAttributes":{"a":[1,2,{"b":null}]},"Type":"Notification"}`))
	f.Add([]byte(`{"Signature":"` + strings.Repeat("A", 344) + `","SignatureVersion":"2","Type":"Notification"}`))
	f.Add([]byte(`[]`))
	key, err := parseSNSCert([]byte(snsVectorCert))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		env, err := parseSNSEnvelope(body)
		if err != nil {
			if !errors.Is(err, ErrInvalidPayload) {
				t.Fatalf("parse error %v does not wrap ErrInvalidPayload", err)
			}
			return
		}
		_ = env.validate()
		_ = env.checkHeaders(http.Header{snsHeaderType: {"Notification"}})
		signed, err := env.stringToSign()
		if err != nil {
			switch env.Type {
			case snsNotification, snsSubscriptionConfirmation, snsUnsubscribeConfirmation:
				t.Fatalf("no string to sign for Type %q: %v", env.Type, err)
			}
			return
		}
		again, err := parseSNSEnvelope(snsReencode(t, env))
		if err != nil {
			t.Fatalf("re-encoded envelope does not parse: %v", err)
		}
		signed2, err := again.stringToSign()
		if err != nil || !bytes.Equal(signed, signed2) {
			t.Fatalf("string to sign not stable:\n%q\n%q (%v)", signed, signed2, err)
		}
		if sig, err := decodeSNSSignature(env.Signature); err == nil {
			_ = verifySNSSignature(key, env.SignatureVersion, signed, sig)
		}
	})
}

// snsReencode writes env back out as a JSON envelope with the keys it had.
func snsReencode(t *testing.T, env *snsEnvelope) []byte {
	t.Helper()
	m := map[string]any{}
	for k := range env.present {
		if k == "Subject" {
			if env.Subject != nil {
				m[k] = *env.Subject
			}
			continue
		}
		m[k] = *env.field(k)
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// snsFuzzAWSHost reports whether host is one an accepted URL may name,
// checked here on net/http's own parse of the URL (what the client would
// dial): the SNS host of an AWS region, written out apart from the code
// under test. A region is two letters (us-gov for GovCloud), a direction
// and a number; China's regions (cn-) are under amazonaws.com.cn, the
// others under amazonaws.com. An S3 bucket host such as
// sns.s3-accelerate.amazonaws.com is never one.
func snsFuzzAWSHost(host string) bool {
	rest, ok := strings.CutPrefix(host, "sns.")
	if !ok {
		return false
	}
	if region, ok := strings.CutSuffix(rest, ".amazonaws.com.cn"); ok {
		return strings.HasPrefix(region, "cn-") && snsFuzzRegion.MatchString(region)
	}
	if region, ok := strings.CutSuffix(rest, ".amazonaws.com"); ok {
		return !strings.HasPrefix(region, "cn-") && snsFuzzRegion.MatchString(region)
	}
	return false
}

var snsFuzzRegion = regexp.MustCompile(`^([a-z][a-z]|us-gov)-(central|north|south|east|west|northeast|northwest|southeast|southwest)-[0-9]+$`)

// The URL checks never accept a SigningCertURL or SubscribeURL whose host,
// as net/http would dial it, is not the SNS host of an AWS region (in
// strict mode, the default, the topic's region's), nor one with userinfo,
// a port or another scheme.
func FuzzSNSCertURL(f *testing.F) {
	for _, s := range []string{
		"https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem",
		"https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-ab.pem",
		"http://sns.eu-west-1.amazonaws.com/x.pem",
		"https://sns.x.amazonaws.com.evil.com/x.pem",
		"https://user@sns.eu-west-1.amazonaws.com/x.pem",
		"https://sns.eu-west-1.amazonaws.com@evil.com/x.pem",
		"https://sns.eu-west-1.amazonaws.com:443/x.pem",
		"https://sns.eu-west-1.amazonaws.com/x.key",
		"https://sns.eu-west-1.amazonaws.com/x?x=.pem",
		"https://sns.eu-west-1.amazonaws.com/x.pem#f",
		`https://sns.eu-west-1.amazonaws.com\@evil.com/x.pem`,
		"https://sns.eu-west-1.amazonaws.com%2eevil.com/x.pem",
		"https://[::1]/x.pem",
		"https://169.254.169.254/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:eu-west-1:1:t&Token=t",
		"https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:eu-west-1:1:t&Token=t",
		"https://sns.s3-accelerate.amazonaws.com/SimpleNotificationService-ab.pem",
		"https://sns.s3-us-west-2.amazonaws.com/SimpleNotificationService-ab.pem",
		"https://sns.s3-accelerate.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:eu-west-1:1:t&Token=t",
		"https://sns.us-gov-west-1.amazonaws.com/SimpleNotificationService-ab.pem",
		"https://sns.cn-north-1.amazonaws.com/SimpleNotificationService-ab.pem",
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	const topic = "arn:aws:sns:eu-west-1:1:t"
	aws := newSNSPolicy(&config.SNS{TopicARNs: []string{topic}, Strict: new(false)})
	strict := newSNSPolicy(&config.SNS{TopicARNs: []string{topic}})
	f.Fuzz(func(t *testing.T, raw string, isStrict bool) {
		pol := aws
		if isStrict {
			pol = strict
		}
		check := func(what string, ok bool) {
			if !ok {
				return
			}
			req, err := http.NewRequest(http.MethodGet, raw, nil)
			if err != nil {
				t.Fatalf("%s accepted %q, which net/http cannot request: %v", what, raw, err)
			}
			u := req.URL
			if u.Scheme != "https" || u.User != nil || u.Port() != "" || u.Hostname() != u.Host || !snsFuzzAWSHost(u.Host) {
				t.Fatalf("%s accepted %q: scheme %q, user %v, host %q", what, raw, u.Scheme, u.User, u.Host)
			}
			if isStrict && u.Host != "sns.eu-west-1.amazonaws.com" {
				t.Fatalf("%s accepted %q in strict mode for another region", what, raw)
			}
		}
		cu, err := pol.checkCertURL(raw, topic)
		check("checkCertURL", err == nil)
		if err == nil && (cu.RawQuery != "" || !strings.HasSuffix(cu.Path, ".pem")) {
			t.Fatalf("checkCertURL accepted %q with a query or a non-.pem path", raw)
		}
		env := &snsEnvelope{Type: snsSubscriptionConfirmation, TopicArn: topic, Token: "t", SubscribeURL: raw}
		su, err := pol.checkSubscribeURL(env)
		check("checkSubscribeURL", err == nil)
		if err == nil {
			q, _ := url.ParseQuery(su.RawQuery)
			if su.Path != "/" || q.Get("Action") != "ConfirmSubscription" || q.Get("TopicArn") != topic || q.Get("Token") != "t" {
				t.Fatalf("checkSubscribeURL accepted %q", raw)
			}
		}
	})
}

// The Tipser normalizer never panics, and a message gives an error or
// changes, never both, never neither: through a raw delivery and through a
// Notification alike. A change carries the message byte for byte.
func FuzzTipserMessage(f *testing.F) {
	for _, s := range []string{
		`{"eventType":"product-changed","data":{"productId":"5075bb2ae1d49107c08f3fc8"}}`,
		`{"eventType":"product-customization-changed","data":{"productCustomizationId":"6086bf492a4b7f5a8ded9663","productId":"60522cad085143fb93c0dd2b"}}`,
		`{"eventType":"product-in-collection-changed","data":{"productId":"606c4b1d26581c1d2db4cae2","collectionsIds":["60891a59ba0deda86df46276","60891b40ba0deda86df46277"]}}`,
		`{"eventType":"pos-collections-changed","data":{"posId":"5075bb2ae1d49107c08f3fc8","collectionsIds":["546dd6b4784155237472f73a"]}}`,
		`{"eventType":"collection-changed","data":{"collectionId":"5075bb2ae1d49107c08f3fc8"}}`,
		`{"eventType":"collection-added","data":{"collectionId":12345}}`,
		`{"eventType":"product-in-collection-changed","data":{"productId":"1","collectionsIds":[null]}}`,
		`{"eventType":"product-changed","data":null}`,
		`{"eventType":"product-changed","data":{"productId":"  "}}`,
		`{"eventType":null}`,
		`{}`,
		`[]`,
	} {
		f.Add([]byte(s))
	}
	p := oneSource(f, config.Source{Name: "fz", Provider: "tipser", Namespace: "fz",
		BasicAuth: &config.BasicAuth{Username: "u", Passwords: []string{"p"}},
		SNS:       &config.SNS{TopicARNs: []string{"arn:aws:sns:eu-west-1:1:t"}}}).Adapter
	raw := http.Header{"X-Amz-Sns-Rawdelivery": {"true"}}
	f.Fuzz(func(t *testing.T, msg []byte) {
		check := func(how string, message []byte, b Batch, err error) {
			if (err == nil) != (b.Len() == 1) || len(b.Changes) != b.Len() {
				t.Fatalf("%s: err %v with %d changes", how, err, b.Len())
			}
			if err != nil {
				if !errors.Is(err, ErrInvalidPayload) {
					t.Fatalf("%s: error %v does not wrap ErrInvalidPayload", how, err)
				}
				return
			}
			ch := b.Changes[0]
			if ch.Raw != string(message) || ch.ProductID == "" || ch.Namespace != "fz" ||
				(ch.Resource != "product" && ch.Resource != "pos" && ch.Resource != "collection") {
				t.Fatalf("%s: change %+v", how, ch)
			}
		}
		// Normalize is handed what Verify returns: for a raw delivery the
		// request, for an envelope the request and the parsed envelope.
		b, err := p.Normalize(t.Context(), Verified{Request: &Request{Header: raw, Body: msg, Received: time.Now()}})
		check("raw delivery", msg, b, err)

		body, _ := json.Marshal(map[string]string{
			"Type": "Notification", "MessageId": "m", "TopicArn": "arn:aws:sns:eu-west-1:1:t", "Message": string(msg),
			"Timestamp": "2021-03-02T11:36:37.665Z", "SignatureVersion": "2", "Signature": base64.StdEncoding.EncodeToString([]byte("s")),
			"SigningCertURL": "https://sns.eu-west-1.amazonaws.com/x.pem",
		})
		env, err := parseSNSEnvelope(body)
		if err == nil {
			err = env.validate()
		}
		if err != nil {
			t.Fatalf("envelope: %v", err)
		}
		b, err = p.Normalize(t.Context(), Verified{Request: &Request{Header: http.Header{}, Body: body, Received: time.Now()},
			Identity: Identity{ID: env.MessageID, Signed: true}, ReplayKey: env.MessageID, envelope: env})
		check("notification", []byte(env.Message), b, err)
	})
}
