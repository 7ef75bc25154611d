package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
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
// rules (strict too), with its certificate already cached: no network. It
// is received a minute after it was signed (its Timestamp is from 2021).
func TestSNSOpenSSLVector(t *testing.T) {
	key, err := parseSNSCert([]byte(snsVectorCert))
	if err != nil {
		t.Fatal(err)
	}
	received := time.Date(2021, 3, 2, 11, 37, 37, 0, time.UTC)
	for _, strict := range []bool{false, true} {
		src := oneSource(t, config.Source{Name: "vec", Provider: "tipser", Namespace: "vec",
			SNS: &config.SNS{TopicARNs: []string{"arn:aws:sns:eu-west-1:770937179823:webhooks-change-broker"}, Strict: new(strict)}})
		src.Adapter.(*tipser).certs.keys.Add(snsVectorCertURL, cachedKey{key: key, fetched: time.Now()})
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
			if err := verifyErr(t.Context(), src, &Request{Header: http.Header{}, Body: tc.body, Received: received}); err != nil {
				t.Fatalf("%s (strict=%v): %v", tc.name, strict, err)
			}
			// Swapping the versions' signatures must fail: v1 is SHA-1, v2 SHA-256.
			swapped := strings.Replace(string(tc.body), `"SignatureVersion" : "1"`, `"SignatureVersion" : "2"`, 1)
			if swapped == string(tc.body) {
				swapped = strings.Replace(string(tc.body), `"SignatureVersion" : "2"`, `"SignatureVersion" : "1"`, 1)
			}
			if err := verifyErr(t.Context(), src, &Request{Header: http.Header{}, Body: []byte(swapped), Received: received}); !errors.Is(err, ErrBadSignature) {
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

// The SigningCertURL rules of signatures.md, under the loose AWS host rule
// (strict: false), the strict rule (the default) and a trusted test host.
// No rule accepts an S3 bucket host such as sns.s3-accelerate.amazonaws.com:
// whoever owns the bucket "sns" could serve a certificate from it.
func TestSNSCertURL(t *testing.T) {
	const topic = "arn:aws:sns:eu-west-1:770937179823:t"
	aws := newSNSPolicy(&config.SNS{TopicARNs: []string{topic}, Strict: new(false)})
	strict := newSNSPolicy(&config.SNS{TopicARNs: []string{topic}, Strict: new(true)})
	byDefault := newSNSPolicy(&config.SNS{TopicARNs: []string{topic}})
	const pem = "/SimpleNotificationService-ab.pem"
	trusted := newSNSPolicy(&config.SNS{TopicARNs: []string{topic}, Strict: new(false), TrustedCertHosts: []string{"127.0.0.1:8443"}})
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
		{"region us-east-1", aws, topic, "https://sns.us-east-1.amazonaws.com" + pem, true},
		{"region eu-central-1", aws, topic, "https://sns.eu-central-1.amazonaws.com" + pem, true},
		{"region ap-southeast-2", aws, topic, "https://sns.ap-southeast-2.amazonaws.com" + pem, true},
		{"region ap-northeast-3", aws, topic, "https://sns.ap-northeast-3.amazonaws.com" + pem, true},
		{"region us-gov-west-1", aws, topic, "https://sns.us-gov-west-1.amazonaws.com" + pem, true},
		{"region cn-northwest-1", aws, topic, "https://sns.cn-northwest-1.amazonaws.com.cn" + pem, true},
		{"China region under .com", aws, topic, "https://sns.cn-north-1.amazonaws.com" + pem, false},
		{"other region under .com.cn", aws, topic, "https://sns.us-east-1.amazonaws.com.cn" + pem, false},
		{"S3 bucket, s3-accelerate", aws, topic, "https://sns.s3-accelerate.amazonaws.com" + pem, false},
		{"S3 bucket, s3-us-west-2", aws, topic, "https://sns.s3-us-west-2.amazonaws.com" + pem, false},
		{"S3 bucket, s3-external-1", aws, topic, "https://sns.s3-external-1.amazonaws.com" + pem, false},
		{"S3 bucket, s3", aws, topic, "https://sns.s3.amazonaws.com" + pem, false},
		{"S3 bucket, s3.<region>", aws, topic, "https://sns.s3.eu-west-1.amazonaws.com" + pem, false},
		{"S3 bucket, s3-website", aws, topic, "https://sns.s3-website-us-east-1.amazonaws.com" + pem, false},
		{"S3 bucket, s3-accelerate dualstack", aws, topic, "https://sns.s3-accelerate.dualstack.amazonaws.com" + pem, false},
		{"not a region, 3+ characters", aws, topic, "https://sns.abc.amazonaws.com" + pem, false},
		{"not a region, no number", aws, topic, "https://sns.eu-west.amazonaws.com" + pem, false},
		{"not a region, upper case", aws, topic, "https://sns.EU-WEST-1.amazonaws.com" + pem, false},
		{"strict, S3 bucket, s3-accelerate", strict, topic, "https://sns.s3-accelerate.amazonaws.com" + pem, false},
		{"strict, S3 bucket, s3-us-west-2", strict, "arn:aws:sns:us-west-2:1:t", "https://sns.s3-us-west-2.amazonaws.com" + pem, false},
		{"strict, us-west-2", strict, "arn:aws:sns:us-west-2:1:t", "https://sns.us-west-2.amazonaws.com" + pem, true},
		{"strict, GovCloud", strict, "arn:aws-us-gov:sns:us-gov-west-1:1:t", "https://sns.us-gov-west-1.amazonaws.com" + pem, true},
		{"strict, China under .com", strict, "arn:aws-cn:sns:cn-north-1:1:t", "https://sns.cn-north-1.amazonaws.com" + pem, false},
		{"default is strict", byDefault, topic, good, true},
		{"default, another region", byDefault, topic, "https://sns.us-east-1.amazonaws.com" + pem, false},
		{"default, path", byDefault, topic, "https://sns.eu-west-1.amazonaws.com/x.pem", false},
		{"default, S3 bucket, s3-accelerate", byDefault, topic, "https://sns.s3-accelerate.amazonaws.com" + pem, false},
		{"default, S3 bucket, s3-us-west-2", byDefault, topic, "https://sns.s3-us-west-2.amazonaws.com" + pem, false},
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
	aws := newSNSPolicy(&config.SNS{TopicARNs: []string{topic}, Strict: new(false)})
	strict := newSNSPolicy(&config.SNS{TopicARNs: []string{topic}})
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
		{"another region", aws, "https://sns.us-east-1.amazonaws.com/" + q, nil},
		{"S3 bucket, s3-accelerate", aws, "https://sns.s3-accelerate.amazonaws.com/" + q, ErrForbidden},
		{"S3 bucket, s3-us-west-2", aws, "https://sns.s3-us-west-2.amazonaws.com/" + q, ErrForbidden},
		{"strict, S3 bucket, s3-accelerate", strict, "https://sns.s3-accelerate.amazonaws.com/" + q, ErrForbidden},
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
			wantErrIs(t, err, tc.want)
		})
	}
}

// NewOutboundClient is outbound's guarded client (whose address rules
// outbound's tests pin down): a loopback HTTP server is never reached, and
// the refusal is ErrRefusedAddress.
func TestSNSOutboundClientRefusesLoopback(t *testing.T) {
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
	if n := hits.Load(); n != 0 {
		t.Fatalf("%d requests reached loopback", n)
	}
}

// The hardened client: bounded, never redirected, no proxy from the
// environment; Deps.sns keeps the redirect rule and a timeout on any client.
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
	p := Deps{Outbound: given}.sns()
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

// A topic ARN must name an AWS region, in China exactly when its partition
// is aws-cn: a topic "in" s3-accelerate would make the strict host rule
// pin the S3 bucket host sns.s3-accelerate.amazonaws.com.
func TestSNSTopicRegion(t *testing.T) {
	cases := []struct {
		arn               string
		partition, region string
	}{
		{"arn:aws:sns:eu-west-1:770937179823:t", "aws", "eu-west-1"},
		{"arn:aws-us-gov:sns:us-gov-west-1:1:t", "aws-us-gov", "us-gov-west-1"},
		{"arn:aws-cn:sns:cn-north-1:1:t", "aws-cn", "cn-north-1"},
		{"arn:aws:sns:s3-accelerate:1:t", "", ""},
		{"arn:aws:sns:s3-us-west-2:1:t", "", ""},
		{"arn:aws:sns:eu-west:1:t", "", ""},
		{"arn:aws:sns:cn-north-1:1:t", "", ""},
		{"arn:aws-cn:sns:eu-west-1:1:t", "", ""},
		{"arn:aws:sqs:eu-west-1:1:t", "", ""},
	}
	for _, tc := range cases {
		partition, region, ok := snsTopicRegion(tc.arn)
		if ok != (tc.region != "") || partition != tc.partition || region != tc.region {
			t.Errorf("%s: %q %q %v, want %q %q", tc.arn, partition, region, ok, tc.partition, tc.region)
		}
	}
	_, err := NewSources([]config.Source{{Name: "t", Provider: "tipser",
		SNS: &config.SNS{TopicARNs: []string{"arn:aws:sns:s3-accelerate:1:t"}}}}, Deps{})
	var fe *config.FieldError
	if !errors.As(err, &fe) || fe.Field != "sources[0].sns.topic_arns[0]" {
		t.Fatalf("topic in s3-accelerate: %v, want a FieldError for sources[0].sns.topic_arns[0]", err)
	}
}

// config.Parse makes strict and a max_age of 1h the defaults, and keeps
// configured values; a block built by hand without them gets the same safe
// values.
func TestSNSConfigDefaults(t *testing.T) {
	cfg, err := config.Parse([]byte(`
sources:
  - name: by-default
    provider: tipser
    sns:
      topic_arns: ["arn:aws:sns:eu-west-1:1:t"]
  - name: configured
    provider: tipser
    sns:
      topic_arns: ["arn:aws:sns:eu-west-1:1:t"]
      strict: false
      max_age: 2h
`), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		sns    *config.SNS
		strict bool
		maxAge time.Duration
	}{
		{"parsed, defaults", cfg.Sources[0].SNS, true, time.Hour},
		{"parsed, configured", cfg.Sources[1].SNS, false, 2 * time.Hour},
		{"built by hand", &config.SNS{TopicARNs: []string{"arn:aws:sns:eu-west-1:1:t"}}, true, time.Hour},
	}
	for _, tc := range cases {
		p := newSNSPolicy(tc.sns)
		if p.strict != tc.strict || p.maxAge != tc.maxAge || !slices.Equal(p.versions, []string{"1", "2"}) {
			t.Errorf("%s: strict %v, max age %s, versions %v; want %v, %s, [1 2]", tc.name, p.strict, p.maxAge, p.versions, tc.strict, tc.maxAge)
		}
	}
	if s := cfg.Sources[0].SNS; s.Strict == nil || !*s.Strict || s.MaxAge != config.DefaultSNSMaxAge {
		t.Fatalf("config.Parse left sns %+v", s)
	}
}

// Every YAML example of docs/providers-tipser.md parses and starts, and the
// documented defaults are the ones applied.
func TestSNSDocumentedConfig(t *testing.T) {
	doc, err := os.ReadFile("../docs/providers-tipser.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := strings.Split(string(doc), "```yaml\n")[1:]
	if len(blocks) == 0 {
		t.Fatal("no YAML example in docs/providers-tipser.md")
	}
	for _, b := range blocks {
		yml, _, _ := strings.Cut(b, "```")
		cfg, err := config.Parse([]byte(yml), func(string) (string, bool) { return "secret", true })
		if err != nil {
			t.Fatalf("%v in\n%s", err, yml)
		}
		if _, err := NewSources(cfg.Sources, Deps{}); err != nil {
			t.Fatalf("%v in\n%s", err, yml)
		}
	}
}

// The Timestamp is accepted from max_age in the past to 5 minutes in the
// future, both ends included; beyond either it is ErrStale.
func TestSNSTimestampWindow(t *testing.T) {
	received := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	byDefault := newSNSPolicy(&config.SNS{TopicARNs: []string{tipserTopic}})
	twoHours := newSNSPolicy(&config.SNS{TopicARNs: []string{tipserTopic}, MaxAge: 2 * time.Hour})
	cases := []struct {
		name   string
		pol    *snsPolicy
		ts     time.Time
		errHas string
	}{
		{"now", byDefault, received, ""},
		{"5 minutes ahead", byDefault, received.Add(5 * time.Minute), ""},
		{"just over 5 minutes ahead", byDefault, received.Add(5*time.Minute + time.Millisecond), "more than 5m0s in the future"},
		{"in the year 9999", byDefault, time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), "in the future"},
		{"1h old, the default max_age", byDefault, received.Add(-time.Hour), ""},
		{"just over 1h old", byDefault, received.Add(-time.Hour - time.Millisecond), "older than 1h0m0s"},
		{"in the year 0", byDefault, time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC), "older than"},
		{"90m old, max_age 2h", twoHours, received.Add(-90 * time.Minute), ""},
		{"just over 2h old, max_age 2h", twoHours, received.Add(-2*time.Hour - time.Millisecond), "older than 2h0m0s"},
	}
	for _, tc := range cases {
		err := tc.pol.checkAge(tc.ts, received)
		if tc.errHas == "" && err != nil || tc.errHas != "" && (!errors.Is(err, ErrStale) || !strings.Contains(err.Error(), tc.errHas)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.errHas)
		}
	}
}

// acceptWindow is max_age plus the 5 minutes of skew, and covers every
// time a message accepted once is accepted again: one signed 5 minutes
// ahead of the first receipt passes checkAge until acceptWindow later.
func TestSNSAcceptWindow(t *testing.T) {
	p := newSNSPolicy(&config.SNS{TopicARNs: []string{tipserTopic}})
	if w := p.acceptWindow(); w != time.Hour+5*time.Minute {
		t.Fatalf("default window %s, want 1h5m", w)
	}
	if w := newSNSPolicy(&config.SNS{TopicARNs: []string{tipserTopic}, MaxAge: 10 * time.Minute}).acceptWindow(); w != 15*time.Minute {
		t.Fatalf("window for max_age 10m: %s, want 15m", w)
	}
	first := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	ts := first.Add(snsMaxClockSkew)
	if err := p.checkAge(ts, first.Add(p.acceptWindow())); err != nil {
		t.Fatalf("at the end of the window: %v", err)
	}
	if err := p.checkAge(ts, first.Add(p.acceptWindow()+time.Millisecond)); !errors.Is(err, ErrStale) {
		t.Fatalf("after the window: %v, want ErrStale", err)
	}
}

// snsAWSFake is a loopback TLS server standing in for AWS: the client it
// hands out dials it whatever host a URL names, so sources run under the
// production host rules (no trusted_cert_hosts). It serves the test
// certificate at /SimpleNotificationService-<hex>.pem, answers 500 for
// paths starting /SimpleNotificationService-fa11, and holds paths starting
// /SimpleNotificationService-51 until released.
type snsAWSFake struct {
	client *http.Client

	mu      sync.Mutex
	reqs    []string      // host and path of every request, in order
	running int           // requests being answered
	peak    int           // the most answered at once
	gate    chan struct{} // closed: held requests go on
}

func newSNSAWSFake(t *testing.T) *snsAWSFake {
	t.Helper()
	f := &snsAWSFake{gate: make(chan struct{})}
	close(f.gate)
	certPEM := snsSelfSignedPEM(t, &snsTestKeys()[0].PublicKey, snsTestKeys()[0])
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.reqs = append(f.reqs, r.Host+r.URL.Path)
		f.running++
		f.peak = max(f.peak, f.running)
		gate := f.gate
		f.mu.Unlock()
		defer func() { f.mu.Lock(); f.running--; f.mu.Unlock() }()
		switch p := r.URL.Path; {
		case strings.HasPrefix(p, "/SimpleNotificationService-fa11"):
			http.Error(w, "boom", http.StatusInternalServerError)
		case strings.HasPrefix(p, "/SimpleNotificationService-51"):
			select {
			case <-gate:
			case <-r.Context().Done():
				return
			}
			w.Write(certPEM)
		case snsStrictPath.MatchString(p):
			w.Write(certPEM)
		default:
			http.NotFound(w, r)
		}
	}))
	// Connections the client dialled but did not need are closed mid-handshake.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	tr := srv.Client().Transport.(*http.Transport).Clone()
	addr := srv.Listener.Addr().String()
	tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	tr.TLSClientConfig.ServerName = "example.com" // a name of httptest's certificate
	f.client = &http.Client{Transport: tr}
	return f
}

// hold makes requests for held paths wait until release.
func (f *snsAWSFake) hold() { f.mu.Lock(); f.gate = make(chan struct{}); f.mu.Unlock() }

func (f *snsAWSFake) release() { f.mu.Lock(); close(f.gate); f.mu.Unlock() }

func (f *snsAWSFake) requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.reqs)
}

func (f *snsAWSFake) stats() (requests, running, peak int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.reqs), f.running, f.peak
}

// snsWaitFor polls cond (state other goroutines reach over the loopback
// network) for up to 10 s.
func snsWaitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// inflightCount is the number of fetches waiting for a slot or running.
func (c *certCache) inflightCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.inflight)
}

// snsAWSCertURL is a certificate URL on eu-west-1's SNS host.
func snsAWSCertURL(hex string) string {
	return "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-" + hex + ".pem"
}

// At most snsMaxCertFetches certificate fetches run at once, however many
// requests name distinct certificate URLs: the others wait for a slot, and
// one whose context ends first gets ErrUnavailable (503) having fetched
// nothing, and leaves nothing cached.
func TestSNSCertFetchesCapped(t *testing.T) {
	fake := newSNSAWSFake(t)
	c := newCertCache(fake.client, slog.New(slog.DiscardHandler))
	const n = 3 * snsMaxCertFetches
	held := func(i int) string { return snsAWSCertURL(fmt.Sprintf("51%02x", i)) }

	// Requests that go away while every slot is taken.
	fake.hold()
	ctx, cancel := context.WithCancel(t.Context())
	errs := make(chan error, n)
	for i := range n {
		go func() { _, err := c.key(ctx, held(i)); errs <- err }()
	}
	snsWaitFor(t, "all misses to be in flight", func() bool {
		_, running, _ := fake.stats()
		return running >= snsMaxCertFetches && c.inflightCount() == n
	})
	cancel()
	for range n {
		if err := <-errs; !errors.Is(err, ErrUnavailable) {
			t.Fatalf("a request whose context ended: %v, want ErrUnavailable", err)
		}
	}
	fake.release()
	snsWaitFor(t, "the started fetches to end", func() bool { return c.inflightCount() == 0 })
	if reqs, _, peak := fake.stats(); reqs != snsMaxCertFetches || peak != snsMaxCertFetches {
		t.Fatalf("%d fetches, %d at once; want %d, %d at once", reqs, peak, snsMaxCertFetches, snsMaxCertFetches)
	}
	fetched := fake.requests()
	var abandoned string
	for i := range n {
		if u := held(i); !slices.Contains(fetched, strings.TrimPrefix(u, "https://")) {
			abandoned = u
			break
		}
	}
	if _, err := c.key(t.Context(), abandoned); err != nil {
		t.Fatalf("a URL whose fetch was abandoned, asked again: %v", err)
	}

	// Requests that wait: each gets its key, never more than the cap at once.
	before, _, _ := fake.stats()
	fake.hold()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if _, err := c.key(t.Context(), held(100+i)); err != nil {
				t.Errorf("a waiting request: %v", err)
			}
		})
	}
	snsWaitFor(t, "the slots to fill", func() bool { _, running, _ := fake.stats(); return running >= snsMaxCertFetches })
	fake.release()
	wg.Wait()
	if reqs, _, peak := fake.stats(); reqs-before != n || peak != snsMaxCertFetches {
		t.Fatalf("%d fetches, %d at once; want %d, %d at once", reqs-before, peak, n, snsMaxCertFetches)
	}
}

// A failed fetch is answered again, with the same error, for
// snsCertFailTTL: concurrent and later requests naming the URL make no
// fetch. Then it is fetched again. A transient failure stays 503 and a
// refusal 401.
func TestSNSCertFailureCached(t *testing.T) {
	fake := newSNSAWSFake(t)
	c := newCertCache(fake.client, slog.New(slog.DiscardHandler))
	var ahead atomic.Int64 // the cache's virtual clock: base plus ahead
	base := time.Now()
	c.now = func() time.Time { return base.Add(time.Duration(ahead.Load())) }
	cases := []struct {
		name, url string
		class     error
		errText   string
	}{
		{"500", snsAWSCertURL("fa11"), ErrUnavailable, "temporarily unavailable: SNS signing certificate fetch answered 500"},
		{"404", "https://sns.eu-west-1.amazonaws.com/missing.pem", ErrBadSignature, "signature does not match: SNS signing certificate fetch answered 404"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ahead.Store(0)
			before, _, _ := fake.stats()
			ask := func(k int) {
				var wg sync.WaitGroup
				for range k {
					wg.Go(func() {
						if _, err := c.key(t.Context(), tc.url); !errors.Is(err, tc.class) || err.Error() != tc.errText {
							t.Errorf("got %v, want %q", err, tc.errText)
						}
					})
				}
				wg.Wait()
			}
			fetches := func() int { n, _, _ := fake.stats(); return n - before }
			ask(8)
			ask(8)
			if n := fetches(); n != 1 {
				t.Fatalf("16 requests made %d fetches, want 1", n)
			}
			ahead.Store(int64(snsCertFailTTL - time.Millisecond))
			ask(8)
			if n := fetches(); n != 1 {
				t.Fatalf("within %s of the failure: %d fetches, want 1", snsCertFailTTL, n)
			}
			ahead.Store(int64(snsCertFailTTL))
			ask(8)
			if n := fetches(); n != 2 {
				t.Fatalf("after %s: %d fetches, want 2", snsCertFailTTL, n)
			}
		})
	}
}

// snsPost posts m to source as SNS would, from any goroutine.
func snsPost(f *fixture, source string, m snsMsg) (int, map[string]any, error) {
	body, err := json.Marshal(map[string]string(m))
	if err != nil {
		return 0, nil, err
	}
	req, err := http.NewRequest(http.MethodPost, f.url+"/webhooks/"+source, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	for k, v := range snsHeaders(m) {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return resp.StatusCode, nil, fmt.Errorf("response body is not JSON: %w", err)
	}
	return resp.StatusCode, out, nil
}

// snsAWSEdge starts an edge whose sources come from yml through
// config.Parse (so with the production defaults), fetching from fake.
func snsAWSEdge(t *testing.T, fake *snsAWSFake, yml string) *fixture {
	t.Helper()
	cfg, err := config.Parse([]byte(yml), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(config.Needs{}); err != nil {
		t.Fatal(err)
	}
	return startEdge(t, cfg.Sources, Deps{Outbound: fake.client}, 5*time.Second)
}

// snsAWSNote is a Notification about product id naming certURL, signed
// with the test key as SignatureVersion 2.
func snsAWSNote(t *testing.T, id, certURL string) snsMsg {
	return snsSignWith(t, snsTestKeys()[0], snsMsg{
		"Type": "Notification", "MessageId": id, "TopicArn": tipserTopic, "Timestamp": snsNow(),
		"Message": tipserEvent("product-changed", `{"productId":"`+id+`"}`), "SigningCertURL": certURL,
	}, "2")
}

const snsAWSSources = `
sources:
  - name: tipser-default
    provider: tipser
    namespace: tip
    sns:
      topic_arns: ["` + tipserTopic + `"]
  - name: tipser-loose
    provider: tipser
    namespace: tip
    sns:
      topic_arns: ["` + tipserTopic + `"]
      strict: false
`

// Through the edge, with the production host rules and defaults: S3 bucket
// hosts are refused (401) by default and with strict: false, another
// region's host by default, a Timestamp over 1h old or over 5 minutes
// ahead by default; none of them fetches anything or reaches Kafka. The
// topic's region's host is accepted, and with strict: false any region's.
func TestSNSProductionRulesThroughEdge(t *testing.T) {
	fake := newSNSAWSFake(t)
	f := snsAWSEdge(t, fake, snsAWSSources)
	const pem = "/SimpleNotificationService-0123456789abcdef.pem"
	const (
		notAWS    = "signature does not match: SigningCertURL host is not an AWS SNS host (sns.<region>.amazonaws.com)"
		notRegion = "signature does not match: SigningCertURL host is not the topic's region's SNS host"
	)
	at := func(d time.Duration) func(snsMsg) snsMsg {
		return func(m snsMsg) snsMsg {
			return m.with("Timestamp", time.Now().Add(d).UTC().Format("2006-01-02T15:04:05.000Z"))
		}
	}
	confirm := func(subscribeHost string) func(snsMsg) snsMsg {
		return func(m snsMsg) snsMsg {
			return snsMsg{"Type": "SubscriptionConfirmation", "MessageId": m["MessageId"], "TopicArn": tipserTopic,
				"Token": "tok", "Message": "confirm", "Timestamp": m["Timestamp"], "SigningCertURL": m["SigningCertURL"],
				"SubscribeURL": "https://" + subscribeHost + "/?Action=ConfirmSubscription&TopicArn=" + tipserTopic + "&Token=tok"}
		}
	}
	cases := []struct {
		name, source, host string
		edit               func(snsMsg) snsMsg
		status             int
		errText            string
		fetches            []string
	}{
		{"S3 bucket sns.s3-accelerate, default", "tipser-default", "sns.s3-accelerate.amazonaws.com", nil, 401, notAWS, nil},
		{"S3 bucket sns.s3-us-west-2, default", "tipser-default", "sns.s3-us-west-2.amazonaws.com", nil, 401, notAWS, nil},
		{"S3 bucket sns.s3-accelerate, strict: false", "tipser-loose", "sns.s3-accelerate.amazonaws.com", nil, 401, notAWS, nil},
		{"S3 bucket sns.s3-us-west-2, strict: false", "tipser-loose", "sns.s3-us-west-2.amazonaws.com", nil, 401, notAWS, nil},
		{"S3 bucket SubscribeURL, default", "tipser-default", "sns.eu-west-1.amazonaws.com", confirm("sns.s3-accelerate.amazonaws.com"), 403,
			"forbidden: SubscribeURL host is not an AWS SNS host (sns.<region>.amazonaws.com)", nil},
		{"S3 bucket SubscribeURL, strict: false", "tipser-loose", "sns.eu-west-1.amazonaws.com", confirm("sns.s3-us-west-2.amazonaws.com"), 403,
			"forbidden: SubscribeURL host is not an AWS SNS host (sns.<region>.amazonaws.com)", nil},
		{"another region's host, default", "tipser-default", "sns.us-east-1.amazonaws.com", nil, 401, notRegion, nil},
		{"over 1h old, default", "tipser-default", "sns.eu-west-1.amazonaws.com", at(-61 * time.Minute), 401,
			"stale or future timestamp: message Timestamp is older than 1h0m0s", nil},
		{"over 5 minutes ahead, default", "tipser-default", "sns.eu-west-1.amazonaws.com", at(6 * time.Minute), 401,
			"stale or future timestamp: message Timestamp is more than 5m0s in the future", nil},
		{"the topic's region's host, default", "tipser-default", "sns.eu-west-1.amazonaws.com", nil, 202, "",
			[]string{"sns.eu-west-1.amazonaws.com" + pem}},
		{"59 minutes old, default", "tipser-default", "sns.eu-west-1.amazonaws.com", at(-59 * time.Minute), 202, "", nil},
		{"4 minutes ahead, default", "tipser-default", "sns.eu-west-1.amazonaws.com", at(4 * time.Minute), 202, "", nil},
		{"another region's host, strict: false", "tipser-loose", "sns.us-east-1.amazonaws.com", nil, 202, "",
			[]string{"sns.us-east-1.amazonaws.com" + pem}},
	}
	var want []string
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("p%d", i)
			m := snsAWSNote(t, id, "https://"+tc.host+pem)
			if tc.edit != nil {
				m = snsSignWith(t, snsTestKeys()[0], tc.edit(m), "2")
			}
			before := len(fake.requests())
			status, resp := postSNS(t, f, tc.source, m)
			if status != tc.status || errorText(resp) != tc.errText {
				t.Fatalf("status %d %v, want %d %q", status, resp, tc.status, tc.errText)
			}
			if got := fake.requests()[before:]; !slices.Equal(got, tc.fetches) {
				t.Fatalf("fetched %v, want %v", got, tc.fetches)
			}
			if status == http.StatusAccepted {
				want = append(want, "tip:"+id+" "+id)
				slices.Sort(want)
			}
			if got := tipserChangeKeys(t, f); !slices.Equal(got, want) {
				t.Fatalf("Kafka holds %v, want %v", got, want)
			}
		})
	}
}

// Through the edge: concurrent and repeated deliveries naming a
// certificate URL whose fetch fails all get the same 503, with one fetch
// per snsCertFailTTL, and nothing reaches Kafka.
func TestSNSFailingCertURLThroughEdge(t *testing.T) {
	fake := newSNSAWSFake(t)
	f := snsAWSEdge(t, fake, snsAWSSources)
	var ahead atomic.Int64 // the cache's virtual clock: base plus ahead
	base := time.Now()
	f.src.Adapter.(*tipser).certs.now = func() time.Time { return base.Add(time.Duration(ahead.Load())) }
	const errText = "temporarily unavailable: SNS signing certificate fetch answered 500"
	deliver := func(round, k int) {
		t.Helper()
		var wg sync.WaitGroup
		for i := range k {
			wg.Go(func() {
				m := snsAWSNote(t, fmt.Sprintf("fail-%d-%d", round, i), snsAWSCertURL("fa11"))
				status, resp, err := snsPost(f, "tipser-default", m)
				if err != nil || status != http.StatusServiceUnavailable || errorText(resp) != errText {
					t.Errorf("delivery %d.%d: %d %v %v, want 503 %q", round, i, status, resp, err, errText)
				}
			})
		}
		wg.Wait()
	}
	deliver(0, 8)
	deliver(1, 8)
	if n := len(fake.requests()); n != 1 {
		t.Fatalf("16 deliveries made %d fetches, want 1: %v", n, fake.requests())
	}
	ahead.Store(int64(snsCertFailTTL))
	deliver(2, 8)
	if n := len(fake.requests()); n != 2 {
		t.Fatalf("after %s: %d fetches, want 2", snsCertFailTTL, n)
	}
	if n := len(f.records()); n != 0 {
		t.Fatalf("%d records written, want none", n)
	}
}

// Through the edge: deliveries naming many certificate URLs at once never
// make more than snsMaxCertFetches fetches at a time; each is accepted
// once its fetch ends, and written once.
func TestSNSCertFetchCapThroughEdge(t *testing.T) {
	fake := newSNSAWSFake(t)
	f := snsAWSEdge(t, fake, snsAWSSources)
	certs := f.src.Adapter.(*tipser).certs
	const n = 3 * snsMaxCertFetches
	fake.hold()
	var wg sync.WaitGroup
	var want []string
	for i := range n {
		id := fmt.Sprintf("cap-%d", i)
		want = append(want, "tip:"+id+" "+id)
		wg.Go(func() {
			m := snsAWSNote(t, id, snsAWSCertURL(fmt.Sprintf("51%02x", i)))
			if status, resp, err := snsPost(f, "tipser-default", m); err != nil || status != http.StatusAccepted {
				t.Errorf("%s: %d %v %v, want 202", id, status, resp, err)
			}
		})
	}
	snsWaitFor(t, "every delivery to wait for its certificate", func() bool {
		_, running, _ := fake.stats()
		return running >= snsMaxCertFetches && certs.inflightCount() == n
	})
	fake.release()
	wg.Wait()
	if reqs, _, peak := fake.stats(); reqs != n || peak != snsMaxCertFetches {
		t.Fatalf("%d fetches, %d at once; want %d, %d at once", reqs, peak, n, snsMaxCertFetches)
	}
	slices.Sort(want)
	if got := tipserChangeKeys(t, f); !slices.Equal(got, want) {
		t.Fatalf("Kafka holds %v, want %v", got, want)
	}
}
