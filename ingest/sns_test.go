package ingest

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/productstream/productstream/config"
)

// An independent vector: a key and certificate made with openssl, and the
// string to sign written out by hand and signed with
//
//	openssl dgst -sha1 -sign key.pem notif.txt | base64 -w0     (and -sha256)
//
// so neither the canonical string nor the verification is checked only
// against this package's own idea of them.
const (
	snsVectorCert = `-----BEGIN CERTIFICATE-----
MIIDFzCCAf+gAwIBAgIUOx84gOGovK9Mj6LW3i27iT1FWFYwDQYJKoZIhvcNAQEL
BQAwGjEYMBYGA1UEAwwPc25zLnRlc3QudmVjdG9yMCAXDTI2MTEyMjEzNDIzM1oY
DzIxMjYxMDI5MTM0MjMzWjAaMRgwFgYDVQQDDA9zbnMudGVzdC52ZWN0b3IwggEi
MA0GCSqGSIb3DQEBAQUAA4IBDwAwggEKAoIBAQCFHj5A37fz1xjjZpiAae7yBdkP
uq9VGHdQ2olRjZYaPsh/Ws1SpkDjTmLtfETPzt2uABE2lokJsKLXZYxJ4goCBVQB
A6AiKOchzHrH4Iaj0ssi70TNpFYglVmPh+fzn5j4HZk3o4tR1gZHT4ifauoCvsEA
yQq1AhvfqcoSJVsQNHkS/GDfZVq1zD3o8Fzvy+viPjpokmULsq1AVA4vjGPXX5VF
YLxDVGL+88BL0C2ehY5/TvXwM7BOnVBLJXW3boPRIJBvGYYXgz+dSPNjFfcGu5MQ
7OmSJ+8y7wshsJ2pvXxVh2qYGR8nvBySHONrQGz8ZsC8jj1007tIwsavptAjAgMB
AAGjUzBRMB0GA1UdDgQWBBQLowsp+hZFKCNtl40iro1p0O5wfTAfBgNVHSMEGDAW
gBQLowsp+hZFKCNtl40iro1p0O5wfTAPBgNVHRMBAf8EBTADAQH/MA0GCSqGSIb3
DQEBCwUAA4IBAQAsk6SLT9iobzNuHdNNdOug42CKGQue/mqJZj/7X9oWdTJogfEf
NurEcKXAAKOX+uvp+5JdKjeihyQi5vuj1BhJzplJ/MPUf2zL1cEihrnMb8qlh4CX
VhC2TdzTB20WEUlfbQgM9MNNKRGY/6vkeXiTy26C+qnRTaTj7sxACetPI1yAOnxO
PJfxtOZ3UgGS5fO11MPVpMXterEUejMLgxo/vW7t463TP00CK71txOCH/2n/Ljy7
peWJ4p8Ssd9BI96OP54Q6RVpoqYXq5DDIaUC9Iw3Tjhu0mheaNNzZJh7WDvJcvlK
I5cEumcNT4TAOTV/WTo5LT7m33wkZgZN3N4r
-----END CERTIFICATE-----
`
	snsVectorCertURL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem"

	snsVectorNotificationSigned = "Message\n" +
		`{"eventType":"product-changed","data":{"productId":"5075bb2ae1d49107c08f3fc8"}}` + "\n" +
		"MessageId\n22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324\n" +
		"Subject\nproduct update\n" +
		"Timestamp\n2021-03-02T11:36:37.665Z\n" +
		"TopicArn\narn:aws:sns:eu-west-1:770937179823:webhooks-change-broker\n" +
		"Type\nNotification\n"
	snsVectorNotificationV1 = "ChegS14+asB5AL4SpdX4YuugQtcWvUXMHo2xLtB3Ry09jajDoBAlnds+oA2umxi/ShmPF3QEAc561dBtl6jLu06IZejmv/E6k86T33y1S+fnID2OQxAe5H3lKB1rfwCjnU+zhn1goLsj9dS2q5BDMkMrOruwRBujUopZYAN8X5jG/a3T+S/Wpv6iedRv677OLPdRMx/nDFUfP0rV+ljvQkW1qSkq3JSiqgjmwB8LQMyhzAgkrbOP/qdvEPrR/cAXNTfOnrS8A/NRWlUzX2ciD1xXUbbBM0fGbdegTYXfiWrtuUtw1vj3b+p52AcnAVIjJE8tuKilbi5qMbzbFtXo9A=="
	snsVectorNotificationV2 = "Xzn088SyECFFrg6zynTk+AWOWFgYuYrarNSqYbwpnyLPCADfoCt0GQMJqdW60f+5VzUzR3GGJBaaJTFtmuEcQRPeD8+j7QvDJL+jpeHhDMPD2DA047v2KI9Hf6ZwkUHbd5+KhrIg5N2RHTeKQNGNU5EaA2njLpM5/8qXUr+Kel6qPAVHOKEPKXeKpIB2WpkaYkY4SizARHgKh8I7F6ueF7OcuMj/4ELFlX105/J8uktQqhk0Dr2guXGw21hej/JMX63kijpV1/Y1xEUmkiGKXO7hntL8SjhN+98QSG7SwlyI3pwxoSTqkzUhtbIbpaEl2JHoUWhOhz0j5hvFMALbJA=="

	snsVectorConfirmationSigned = "Message\nYou have chosen to subscribe to the topic arn:aws:sns:eu-west-1:770937179823:webhooks-change-broker.\nTo confirm the subscription, visit the SubscribeURL included in this message.\n" +
		"MessageId\n2bb5b9ba-2342-4ebd-b88c-a1feb1e21228\n" +
		"SubscribeURL\nhttps://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:eu-west-1:770937179823:webhooks-change-broker&Token=2336412f37fb687f5d51e6e2425c464de\n" +
		"Timestamp\n2021-03-02T11:36:37.665Z\n" +
		"Token\n2336412f37fb687f5d51e6e2425c464de\n" +
		"TopicArn\narn:aws:sns:eu-west-1:770937179823:webhooks-change-broker\n" +
		"Type\nSubscriptionConfirmation\n"
	snsVectorConfirmationV1 = "N0yOocnlIImPephGPhclSiKkkvdGm4MdVwVPej7T5mcZMLLGngFsOs6wDKwJahmIB9Ku72/mrrdxfz3wD+Z02hDu5UI8Fh+r5mf8APWjJ6ngmNfDgIUTtvxpTSSqv44bmY6rPqWnK9uy8XTLsUl4QsYvHdMgjl0s/Q/xoaEYCi2Pw3fQquISgnvujxzhjQZAgN2O6bWj3kzUb1/eScDA6q5S9osy2VOuYwND6hFyc+9o/NXjHXHa4jcQjiAmKZfMFMu8eD65E3tFguXkUkZtJQeSmdbdTPHTFWs9o0jP5G45+qIjZbLWjBUhS5iTRhFRpLee5AaKAzTxS8586J6u4Q=="
	snsVectorConfirmationV2 = "FV5keGK8dT3AUGLgsqY/Dxtee4HT+aI7BpMldo1matEjhB+u/COlJIe743gTQjhI78+YvcDW6jcTqz1XWcqd6FerZV019CaGdhzlG7c96zmERTvI+h9KS1BzuFkVagpW5ntWuR77WTXpv7LLj1L1dRZ+nkIXu8VZskZgI+JzS5UpelFXfPwX9xoazbVGKBHIun5F0eTkm8RXO5+fePgLVgouxdus9vDHxZWlexRfK8kv3z1DC+NxJLuvpOQuk9YehQ7F7oOQH6Qjut5JN0faFfcaLDWbrGFPxcKvahOVmDcctxZooF2T0g6UNyXnEGlLMWIf7fBacjCSPrtRAHSf7A=="
)

// snsVectorNotification is the vector as SNS formats its bodies.
func snsVectorNotification(version, sig string) []byte {
	return []byte(`{
  "Type" : "Notification",
  "MessageId" : "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
  "TopicArn" : "arn:aws:sns:eu-west-1:770937179823:webhooks-change-broker",
  "Subject" : "product update",
  "Message" : "{\"eventType\":\"product-changed\",\"data\":{\"productId\":\"5075bb2ae1d49107c08f3fc8\"}}",
  "Timestamp" : "2021-03-02T11:36:37.665Z",
  "SignatureVersion" : "` + version + `",
  "Signature" : "` + sig + `",
  "SigningCertURL" : "` + snsVectorCertURL + `",
  "UnsubscribeURL" : "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=arn:aws:sns:eu-west-1:770937179823:webhooks-change-broker:0b6a5d3e"
}`)
}

func snsVectorConfirmation(version, sig string) []byte {
	return []byte(`{
  "Type" : "SubscriptionConfirmation",
  "MessageId" : "2bb5b9ba-2342-4ebd-b88c-a1feb1e21228",
  "Token" : "2336412f37fb687f5d51e6e2425c464de",
  "TopicArn" : "arn:aws:sns:eu-west-1:770937179823:webhooks-change-broker",
  "Message" : "You have chosen to subscribe to the topic arn:aws:sns:eu-west-1:770937179823:webhooks-change-broker.\nTo confirm the subscription, visit the SubscribeURL included in this message.",
  "SubscribeURL" : "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:eu-west-1:770937179823:webhooks-change-broker&Token=2336412f37fb687f5d51e6e2425c464de",
  "Timestamp" : "2021-03-02T11:36:37.665Z",
  "SignatureVersion" : "` + version + `",
  "Signature" : "` + sig + `",
  "SigningCertURL" : "` + snsVectorCertURL + `"
}`)
}

// The openssl vector verifies through the whole Verify, under the AWS host
// rules (strict too), with its certificate already cached: no network.
func TestSNSOpenSSLVector(t *testing.T) {
	key, err := parseSNSCert([]byte(snsVectorCert))
	if err != nil {
		t.Fatal(err)
	}
	p := newTipser(Deps{}).(*tipser)
	p.certs.keys.Add(snsVectorCertURL, cachedKey{key: key, fetched: time.Now()})
	for _, strict := range []bool{false, true} {
		srcs, err := NewSources([]config.Source{{Name: "vec", Provider: "tipser", Namespace: "vec",
			SNS: &config.SNS{TopicARNs: []string{"arn:aws:sns:eu-west-1:770937179823:webhooks-change-broker"}, Strict: strict}}}, Deps{})
		if err != nil {
			t.Fatal(err)
		}
		src := srcs[0]
		cases := []struct {
			name, signed string
			body         []byte
		}{
			{"notification v1", snsVectorNotificationSigned, snsVectorNotification("1", snsVectorNotificationV1)},
			{"notification v2", snsVectorNotificationSigned, snsVectorNotification("2", snsVectorNotificationV2)},
			{"confirmation v1", snsVectorConfirmationSigned, snsVectorConfirmation("1", snsVectorConfirmationV1)},
			{"confirmation v2", snsVectorConfirmationSigned, snsVectorConfirmation("2", snsVectorConfirmationV2)},
		}
		for _, tc := range cases {
			env, err := parseSNSEnvelope(tc.body)
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			if s, _ := env.stringToSign(); string(s) != tc.signed {
				t.Fatalf("%s: string to sign\n%q\nwant\n%q", tc.name, s, tc.signed)
			}
			if err := p.Verify(t.Context(), src, &Request{Header: http.Header{}, Body: tc.body, Received: time.Now()}); err != nil {
				t.Fatalf("%s (strict=%v): %v", tc.name, strict, err)
			}
			// Swapping the versions' signatures must fail: v1 is SHA-1, v2 SHA-256.
			swapped := strings.Replace(string(tc.body), `"SignatureVersion" : "1"`, `"SignatureVersion" : "2"`, 1)
			if swapped == string(tc.body) {
				swapped = strings.Replace(string(tc.body), `"SignatureVersion" : "2"`, `"SignatureVersion" : "1"`, 1)
			}
			if err := p.Verify(t.Context(), src, &Request{Header: http.Header{}, Body: []byte(swapped), Received: time.Now()}); !errors.Is(err, ErrBadSignature) {
				t.Fatalf("%s with the other SignatureVersion: %v, want ErrBadSignature", tc.name, err)
			}
		}
	}
}

// The string to sign follows signatures.md key by key; a Subject is signed
// when present, even empty, and not when absent or null.
func TestSNSStringToSign(t *testing.T) {
	const tail = "Timestamp\nT\nTopicArn\nA\nType\nNotification\n"
	cases := []struct{ name, body, want string }{
		{"no Subject", `{"Type":"Notification","MessageId":"I","TopicArn":"A","Message":"M","Timestamp":"T"}`, "Message\nM\nMessageId\nI\n" + tail},
		{"Subject", `{"Type":"Notification","MessageId":"I","TopicArn":"A","Subject":"S","Message":"M","Timestamp":"T"}`, "Message\nM\nMessageId\nI\nSubject\nS\n" + tail},
		{"empty Subject", `{"Type":"Notification","MessageId":"I","TopicArn":"A","Subject":"","Message":"M","Timestamp":"T"}`, "Message\nM\nMessageId\nI\nSubject\n\n" + tail},
		{"null Subject", `{"Type":"Notification","MessageId":"I","TopicArn":"A","Subject":null,"Message":"M","Timestamp":"T"}`, "Message\nM\nMessageId\nI\n" + tail},
		{"escapes decoded", `{"Type":"Notification","MessageId":"I","TopicArn":"A","Message":"a\nb\u00e9\"","Timestamp":"T"}`, "Message\na\nbé\"\nMessageId\nI\n" + tail},
		{"unsigned and unknown keys left out", `{"Type":"Notification","MessageId":"I","TopicArn":"A","Message":"M","Timestamp":"T","Token":"X","SubscribeURL":"U","UnsubscribeURL":"V","MessageAttributes":{"a":{"Type":"String","Value":"b"}}}`, "Message\nM\nMessageId\nI\n" + tail},
		{"UnsubscribeConfirmation", `{"Type":"UnsubscribeConfirmation","MessageId":"I","TopicArn":"A","Message":"M","Timestamp":"T","Token":"K","SubscribeURL":"U","Subject":"S"}`,
			"Message\nM\nMessageId\nI\nSubscribeURL\nU\nTimestamp\nT\nToken\nK\nTopicArn\nA\nType\nUnsubscribeConfirmation\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env, err := parseSNSEnvelope([]byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			got, err := env.stringToSign()
			if err != nil || string(got) != tc.want {
				t.Fatalf("got %q (%v), want %q", got, err, tc.want)
			}
		})
	}
}

// The envelope parser takes keys exactly as SNS writes them, each once,
// with string values; anything else is a 400.
func TestSNSEnvelopeParsing(t *testing.T) {
	cases := []struct {
		name, body, errHas string
		check              func(*snsEnvelope) bool
	}{
		{name: "lower-case key is not Message", body: `{"Type":"Notification","message":"x","Message":"M"}`,
			check: func(e *snsEnvelope) bool { return e.Message == "M" }},
		{name: "lower-case key alone is ignored", body: `{"Type":"Notification","message":"x"}`,
			check: func(e *snsEnvelope) bool { return e.Message == "" && !e.present["Message"] }},
		{name: "escaped key is the key", body: `{"Mess\u0061ge":"M"}`, check: func(e *snsEnvelope) bool { return e.Message == "M" }},
		{name: "duplicate Message", body: `{"Message":"a","Message":"b"}`, errHas: "duplicate key Message"},
		{name: "duplicate Subject", body: `{"Subject":null,"Subject":"b"}`, errHas: "duplicate key Subject"},
		{name: "number value", body: `{"MessageId":1}`, errHas: "MessageId must be a string"},
		{name: "null value", body: `{"TopicArn":null}`, errHas: "TopicArn must be a string"},
		{name: "object Subject", body: `{"Subject":{}}`, errHas: "Subject must be a string"},
		{name: "trailing data", body: `{"Type":"Notification"} {}`, errHas: "trailing data"},
		{name: "array", body: `[]`, errHas: "not an SNS JSON envelope"},
		{name: "truncated", body: `{"Type":"Notification"`, errHas: "not an SNS JSON envelope"},
		{name: "invalid UTF-8", body: "{\"Message\":\"\xff\"}", errHas: "UTF-8"},
		{name: "empty", body: ``, errHas: "not an SNS JSON envelope"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env, err := parseSNSEnvelope([]byte(tc.body))
			if tc.errHas != "" {
				if !errors.Is(err, ErrInvalidPayload) || !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("err %v, want ErrInvalidPayload saying %q", err, tc.errHas)
				}
				return
			}
			if err != nil || !tc.check(env) {
				t.Fatalf("parsed %+v, %v", env, err)
			}
		})
	}
}

// The SigningCertURL rules of signatures.md, under AWS host rules, strict
// rules and a trusted test host.
func TestSNSCertURL(t *testing.T) {
	const topic = "arn:aws:sns:eu-west-1:770937179823:t"
	aws := newSNSPolicy(&config.SNS{TopicARNs: []string{topic}})
	strict := newSNSPolicy(&config.SNS{TopicARNs: []string{topic}, Strict: true})
	trusted := newSNSPolicy(&config.SNS{TopicARNs: []string{topic}, TrustedCertHosts: []string{"127.0.0.1:8443"}})
	good := "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-9c6465fa7f48f5cacd23014631ec1136.pem"
	cases := []struct {
		name   string
		pol    *snsPolicy
		topic  string
		url    string
		accept bool
	}{
		{"AWS", aws, topic, good, true},
		{"AWS, another region", aws, topic, "https://sns.us-east-1.amazonaws.com/x.pem", true},
		{"AWS China", aws, topic, "https://sns.cn-north-1.amazonaws.com.cn/x.pem", true},
		{"HTTPS scheme in capitals", aws, topic, "HTTPS://sns.eu-west-1.amazonaws.com/x.pem", true},
		{"http", aws, topic, "http://sns.eu-west-1.amazonaws.com/x.pem", false},
		{"no scheme", aws, topic, "//sns.eu-west-1.amazonaws.com/x.pem", false},
		{"foreign host", aws, topic, "https://evil.example.com/x.pem", false},
		{"suffix attack", aws, topic, "https://sns.x.amazonaws.com.evil.com/x.pem", false},
		{"prefix attack", aws, topic, "https://evilsns.eu-west-1.amazonaws.com/x.pem", false},
		{"not sns", aws, topic, "https://s3.eu-west-1.amazonaws.com/x.pem", false},
		{"short region", aws, topic, "https://sns.x.amazonaws.com/x.pem", false},
		{"dots in region", aws, topic, "https://sns.a.b.c.amazonaws.com/x.pem", false},
		{"trailing dot", aws, topic, "https://sns.eu-west-1.amazonaws.com./x.pem", false},
		{"capital host", aws, topic, "https://SNS.eu-west-1.amazonaws.com/x.pem", false},
		{"userinfo", aws, topic, "https://user@sns.eu-west-1.amazonaws.com/x.pem", false},
		{"userinfo hiding the host", aws, topic, "https://sns.eu-west-1.amazonaws.com@evil.com/x.pem", false},
		{"port", aws, topic, "https://sns.eu-west-1.amazonaws.com:443/x.pem", false},
		{"empty port", aws, topic, "https://sns.eu-west-1.amazonaws.com:/x.pem", false},
		{".key", aws, topic, "https://sns.eu-west-1.amazonaws.com/x.key", false},
		{"query", aws, topic, "https://sns.eu-west-1.amazonaws.com/x?x=.pem", false},
		{"empty query", aws, topic, "https://sns.eu-west-1.amazonaws.com/x.pem?", false},
		{"fragment", aws, topic, "https://sns.eu-west-1.amazonaws.com/x.pem#f", false},
		{"empty fragment", aws, topic, "https://sns.eu-west-1.amazonaws.com/x.pem#", false},
		{"percent-encoded", aws, topic, "https://sns.eu-west-1.amazonaws.com/x%2Epem", false},
		{"backslash", aws, topic, `https://sns.eu-west-1.amazonaws.com\@evil.com/x.pem`, false},
		{"space", aws, topic, "https://sns.eu-west-1.amazonaws.com /x.pem", false},
		{"IP host", aws, topic, "https://52.94.0.1/x.pem", false},
		{"opaque", aws, topic, "https:sns.eu-west-1.amazonaws.com/x.pem", false},
		{"strict", strict, topic, good, true},
		{"strict, China", strict, "arn:aws-cn:sns:cn-north-1:1:t", "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-ab.pem", true},
		{"strict, another region", strict, topic, "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-ab.pem", false},
		{"strict, path", strict, topic, "https://sns.eu-west-1.amazonaws.com/x.pem", false},
		{"strict, upper-case hex", strict, topic, "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-AB.pem", false},
		{"strict, deeper path", strict, topic, "https://sns.eu-west-1.amazonaws.com/a/SimpleNotificationService-ab.pem", false},
		{"trusted host", trusted, topic, "https://127.0.0.1:8443/x.pem", true},
		{"trusted host, other port", trusted, topic, "https://127.0.0.1:8444/x.pem", false},
		{"trusted host without its port", trusted, topic, "https://127.0.0.1/x.pem", false},
		{"trusted replaces the AWS rule", trusted, topic, good, false},
		{"trusted host, userinfo", trusted, topic, "https://u@127.0.0.1:8443/x.pem", false},
		{"trusted host, http", trusted, topic, "http://127.0.0.1:8443/x.pem", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.pol.checkCertURL(tc.url, tc.topic)
			if tc.accept && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tc.accept && !errors.Is(err, ErrBadSignature) {
				t.Fatalf("got %v, want a refusal wrapping ErrBadSignature", err)
			}
		})
	}
}

// The SubscribeURL rules: the host rules of the certificate URL (403), then
// path "/" and Action, TopicArn and Token matching the message (400).
func TestSNSSubscribeURL(t *testing.T) {
	const topic = "arn:aws:sns:eu-west-1:770937179823:t"
	aws := newSNSPolicy(&config.SNS{TopicARNs: []string{topic}})
	strict := newSNSPolicy(&config.SNS{TopicARNs: []string{topic}, Strict: true})
	q := "?Action=ConfirmSubscription&TopicArn=" + topic + "&Token=tok"
	cases := []struct {
		name string
		pol  *snsPolicy
		url  string
		want error
	}{
		{"valid", aws, "https://sns.eu-west-1.amazonaws.com/" + q, nil},
		{"valid, escaped TopicArn", aws, "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn%3Aaws%3Asns%3Aeu-west-1%3A770937179823%3At&Token=tok", nil},
		{"valid, strict", strict, "https://sns.eu-west-1.amazonaws.com/" + q, nil},
		{"strict, another region", strict, "https://sns.us-east-1.amazonaws.com/" + q, ErrForbidden},
		{"foreign host", aws, "https://evil.example.com/" + q, ErrForbidden},
		{"metadata address", aws, "https://169.254.169.254/" + q, ErrForbidden},
		{"metadata address on http", aws, "http://169.254.169.254/latest/meta-data/" + q, ErrForbidden},
		{"port", aws, "https://sns.eu-west-1.amazonaws.com:8443/" + q, ErrForbidden},
		{"userinfo", aws, "https://a@sns.eu-west-1.amazonaws.com/" + q, ErrForbidden},
		{"fragment", aws, "https://sns.eu-west-1.amazonaws.com/" + q + "#f", ErrForbidden},
		{"no path", aws, "https://sns.eu-west-1.amazonaws.com" + q, ErrInvalidPayload},
		{"wrong path", aws, "https://sns.eu-west-1.amazonaws.com/x" + q, ErrInvalidPayload},
		{"encoded path", aws, "https://sns.eu-west-1.amazonaws.com/%2F" + q, ErrInvalidPayload},
		{"wrong Action", aws, "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe&TopicArn=" + topic + "&Token=tok", ErrInvalidPayload},
		{"two Actions", aws, "https://sns.eu-west-1.amazonaws.com/" + q + "&Action=Unsubscribe", ErrInvalidPayload},
		{"no Action", aws, "https://sns.eu-west-1.amazonaws.com/?TopicArn=" + topic + "&Token=tok", ErrInvalidPayload},
		{"other TopicArn", aws, "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=" + topic + "2&Token=tok", ErrInvalidPayload},
		{"other Token", aws, "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=" + topic + "&Token=tok2", ErrInvalidPayload},
		{"malformed query", aws, "https://sns.eu-west-1.amazonaws.com/" + q + "&%zz", ErrInvalidPayload},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := &snsEnvelope{Type: snsSubscriptionConfirmation, TopicArn: topic, Token: "tok", SubscribeURL: tc.url}
			_, err := tc.pol.checkSubscribeURL(env)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// The hardened client's address rule: public unicast only, IPv4 hidden in
// IPv6 included.
func TestSNSOutboundAddressRules(t *testing.T) {
	cases := []struct {
		addr   string
		public bool
	}{
		{"52.94.236.248:443", true},
		{"[2600:1f18:4000::1]:443", true},
		{"127.0.0.1:443", false},
		{"127.8.9.10:443", false},
		{"10.1.2.3:443", false},
		{"172.16.0.1:443", false},
		{"192.168.1.1:443", false},
		{"169.254.169.254:80", false},
		{"169.254.0.1:80", false},
		{"100.64.0.1:443", false},
		{"0.0.0.0:443", false},
		{"0.1.2.3:443", false},
		{"224.0.0.1:443", false},
		{"255.255.255.255:443", false},
		{"[::1]:443", false},
		{"[::]:443", false},
		{"[fe80::1]:443", false},
		{"[fe80::1%25eth0]:443", false},
		{"[fd00:ec2::254]:80", false},
		{"[fc00::1]:443", false},
		{"[ff02::1]:443", false},
		{"[::ffff:127.0.0.1]:443", false},
		{"[::ffff:169.254.169.254]:80", false},
		{"[64:ff9b::a9fe:a9fe]:80", false},
		{"[64:ff9b::3424:1]:80", true},
		{"[2002:a9fe:a9fe::1]:80", false},
		{"[::127.0.0.1]:443", false},
		{"localhost:443", false},
	}
	for _, tc := range cases {
		err := checkOutboundAddr("tcp", tc.addr)
		if tc.public && err != nil || !tc.public && !errors.Is(err, ErrRefusedAddress) {
			t.Errorf("%s: %v, want public=%v", tc.addr, err, tc.public)
		}
	}
	if err := checkOutboundAddr("udp", "52.94.236.248:53"); !errors.Is(err, ErrRefusedAddress) {
		t.Errorf("udp: %v, want refused", err)
	}
}

// The hardened dialer refuses 127.0.0.1, 10.x, 169.254.169.254 and [::1]
// before connecting: the loopback listeners never see a connection.
func TestSNSOutboundDialerRefuses(t *testing.T) {
	var accepted atomic.Int32
	listen := func(network, addr string) string {
		ln, err := net.Listen(network, addr)
		if err != nil {
			return ""
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				accepted.Add(1)
				c.Close()
			}
		}()
		return ln.Addr().String()
	}
	v4 := listen("tcp4", "127.0.0.1:0")
	v6 := listen("tcp6", "[::1]:0")
	if v6 == "" {
		v6 = "[::1]:443" // no IPv6 loopback here: still refused before connecting
	}
	d := newGuardedDialer()
	for _, addr := range []string{v4, v6, "10.0.0.1:443", "169.254.169.254:80"} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := d.DialContext(ctx, "tcp", addr)
		cancel()
		if conn != nil {
			conn.Close()
		}
		if !errors.Is(err, ErrRefusedAddress) {
			t.Errorf("dial %s: %v, want ErrRefusedAddress", addr, err)
		}
	}
	// The whole client too: a loopback HTTP server is never reached.
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	defer srv.Close()
	resp, err := NewOutboundClient().Get(srv.URL)
	if err == nil {
		resp.Body.Close()
	}
	if !errors.Is(err, ErrRefusedAddress) {
		t.Errorf("client GET %s: %v, want ErrRefusedAddress", srv.URL, err)
	}
	time.Sleep(50 * time.Millisecond)
	if n := accepted.Load() + hits.Load(); n != 0 {
		t.Fatalf("%d connections reached loopback", n)
	}
}

// The hardened client: bounded, never redirected, no proxy from the
// environment; newTipser keeps the redirect rule and a timeout on any client.
func TestSNSOutboundClientSettings(t *testing.T) {
	c := NewOutboundClient()
	tr, ok := c.Transport.(*http.Transport)
	if !ok || tr.Proxy != nil || c.Timeout != 5*time.Second || tr.DialContext == nil {
		t.Fatalf("client %+v", c)
	}
	if err := c.CheckRedirect(nil, nil); !errors.Is(err, http.ErrUseLastResponse) {
		t.Fatalf("CheckRedirect: %v", err)
	}
	given := &http.Client{}
	p := newTipser(Deps{Outbound: given}).(*tipser)
	if p.client.Timeout != 5*time.Second || p.client.CheckRedirect == nil || given.CheckRedirect != nil {
		t.Fatalf("provider client %+v (given %+v)", p.client, given)
	}
}

// The certificate cache holds at most 64 URLs, forgets a key after a day,
// and shares one fetch among concurrent misses of a URL.
func TestSNSCertCache(t *testing.T) {
	certPEM := snsSelfSignedPEM(t, &snsTestKeys()[0].PublicKey, snsTestKeys()[0])
	var mu sync.Mutex
	fetched := map[string]int{}
	release := make(chan struct{})
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		fetched[r.URL.Path]++
		mu.Unlock()
		if r.URL.Path == "/slow.pem" {
			<-release
		}
		w.Write(certPEM)
	}))
	defer srv.Close()
	count := func(path string) int { mu.Lock(); defer mu.Unlock(); return fetched[path] }
	c := newCertCache(srv.Client(), slog.Default())
	now := time.Now()
	c.now = func() time.Time { return now }
	get := func(path string) {
		t.Helper()
		if _, err := c.key(t.Context(), srv.URL+path); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	for i := range snsCertCacheSize + 1 {
		get("/" + string(rune('a'+i%26)) + strings.Repeat("x", i/26) + ".pem")
	}
	get("/axx.pem") // a recent one: cached
	get("/a.pem")   // the oldest: evicted, fetched again
	if count("/axx.pem") != 1 || count("/a.pem") != 2 {
		t.Fatalf("fetches %v", fetched)
	}
	now = now.Add(snsCertTTL)
	get("/axx.pem")
	if count("/axx.pem") != 2 {
		t.Fatalf("a day-old key was not fetched again: %v", fetched)
	}

	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { get("/slow.pem") })
	}
	for {
		c.mu.Lock()
		_, running := c.inflight[srv.URL+"/slow.pem"]
		c.mu.Unlock()
		if running && count("/slow.pem") == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	if n := count("/slow.pem"); n != 1 {
		t.Fatalf("8 concurrent misses made %d fetches, want 1", n)
	}

	// A waiter whose request goes away stops waiting, with 503.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	c2 := newCertCache(&http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		<-r.Context().Done()
		return nil, r.Context().Err()
	})}, slog.Default())
	if _, err := c2.key(ctx, "https://sns.eu-west-1.amazonaws.com/x.pem"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("canceled wait: %v, want ErrUnavailable", err)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
