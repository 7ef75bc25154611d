package ingest

import (
	"bytes"
	"cmp"
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/golang-lru/v2/simplelru"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/jsondepth"
)

// AWS SNS HTTP(S) delivery, as described in shared/docs/signatures.md
// ("AWS SNS"): the envelope, the string to sign, the URL rules, and the
// certificate fetch and cache. Nothing here is Tipser-specific.

// SNS message types (the envelope's Type).
const (
	snsNotification             = "Notification"
	snsSubscriptionConfirmation = "SubscriptionConfirmation"
	snsUnsubscribeConfirmation  = "UnsubscribeConfirmation"
)

// Unsigned headers SNS adds; when present they must agree with the body.
const (
	snsHeaderType        = "x-amz-sns-message-type"
	snsHeaderMessageID   = "x-amz-sns-message-id"
	snsHeaderTopicARN    = "x-amz-sns-topic-arn"
	snsHeaderRawDelivery = "x-amz-sns-rawdelivery"
)

const (
	// snsMaxCertBytes caps a certificate document (AWS's is under 2 KiB).
	snsMaxCertBytes = 64 << 10
	// snsMinKeyBits is the smallest RSA key a certificate may hold.
	snsMinKeyBits = 2048
	// snsMaxSignatureBytes bounds a decoded signature (an 8192-bit key).
	snsMaxSignatureBytes = 1024
	// snsCertCacheSize and snsCertTTL bound the certificate cache. AWS
	// uses a handful of certificate URLs at a time; an entry is fetched
	// again after a day so a withdrawn certificate does not live forever.
	snsCertCacheSize = 64
	snsCertTTL       = 24 * time.Hour
	// snsMaxCertFetches bounds the certificate fetches in flight across
	// the cache: anyone who knows an allowed TopicArn can name a
	// certificate URL, and each miss is an outbound request.
	snsMaxCertFetches = 4
	// snsCertFailTTL is how long a failed fetch is answered from the cache
	// instead of being made again: one fetch per URL per period however
	// many requests name it. It is shorter than the 20 s SNS waits between
	// retries under its default delivery policy, so each retry of a real
	// message fetches again.
	snsCertFailTTL = 15 * time.Second
	// snsCertFailCacheSize bounds the failures kept.
	snsCertFailCacheSize = 256
	// snsMaxClockSkew is how far in the future a Timestamp may be: our
	// clock and AWS's disagree a little.
	snsMaxClockSkew = 5 * time.Minute
)

// snsEnvelope is the JSON body of an SNS HTTP(S) delivery. Values are the
// JSON-decoded strings, exactly as sent. Subject is nil when absent (or
// null) and non-nil when present, even empty: the two sign differently.
type snsEnvelope struct {
	Type             string
	MessageID        string
	TopicArn         string
	Subject          *string
	Message          string
	Timestamp        string
	SignatureVersion string
	Signature        string
	SigningCertURL   string
	SubscribeURL     string
	Token            string
	UnsubscribeURL   string

	// present records which known keys the body carried.
	present map[string]bool
	// sent is the parsed Timestamp, set by validate.
	sent time.Time
	// subscribe is a SubscriptionConfirmation's SubscribeURL once its
	// checks passed (Verify), the URL Normalize visits.
	subscribe *url.URL
}

// field returns where the value of the known key k goes, or nil when k is
// not a key of the envelope. Keys match exactly (encoding/json would match
// "message" to Message).
func (e *snsEnvelope) field(k string) *string {
	for _, f := range [...]struct {
		key string
		ptr *string
	}{
		{"Type", &e.Type}, {"MessageId", &e.MessageID}, {"TopicArn", &e.TopicArn},
		{"Message", &e.Message}, {"Timestamp", &e.Timestamp},
		{"SignatureVersion", &e.SignatureVersion}, {"Signature", &e.Signature},
		{"SigningCertURL", &e.SigningCertURL}, {"SubscribeURL", &e.SubscribeURL},
		{"Token", &e.Token}, {"UnsubscribeURL", &e.UnsubscribeURL},
	} {
		if f.key == k {
			return f.ptr
		}
	}
	return nil
}

// parseSNSEnvelope parses body as one SNS envelope: a JSON object whose
// known keys (matched exactly, each at most once) hold strings. Other keys
// (MessageAttributes, say) are skipped. An envelope nesting deeper than
// jsondepth.Default is refused before it is parsed: AWS's nests 3 levels,
// and the message it carries is a string, bounded by its source's
// max_json_depth when it is parsed. Errors wrap ErrInvalidPayload.
func parseSNSEnvelope(body []byte) (*snsEnvelope, error) {
	bad := func(msg string) error { return fmt.Errorf("%w: %s", ErrInvalidPayload, msg) }
	if !utf8.Valid(body) {
		return nil, bad("body is not valid UTF-8")
	}
	if jsondepth.Exceeds(body, jsondepth.Default) {
		return nil, bad(fmt.Sprintf("SNS envelope nests deeper than %d levels", jsondepth.Default))
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, bad("body is not an SNS JSON envelope")
	}
	e := &snsEnvelope{present: map[string]bool{}}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, bad("body is not an SNS JSON envelope")
		}
		key, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, bad("body is not an SNS JSON envelope")
		}
		if key == "Subject" {
			if e.present[key] {
				return nil, bad("duplicate key Subject")
			}
			e.present[key] = true
			if string(raw) == "null" {
				continue
			}
			var s string
			if raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
				return nil, bad("field Subject must be a string")
			}
			e.Subject = &s
			continue
		}
		dst := e.field(key)
		if dst == nil {
			continue
		}
		if e.present[key] {
			return nil, bad("duplicate key " + key)
		}
		e.present[key] = true
		if raw[0] != '"' || json.Unmarshal(raw, dst) != nil {
			return nil, bad("field " + key + " must be a string")
		}
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return nil, bad("body is not an SNS JSON envelope")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, bad("trailing data after the SNS envelope")
	}
	return e, nil
}

// validate checks what can be checked of the envelope alone: a known Type,
// the fields its string to sign needs, and a parseable Timestamp, which it
// keeps in e.sent.
func (e *snsEnvelope) validate() error {
	switch e.Type {
	case snsNotification, snsSubscriptionConfirmation, snsUnsubscribeConfirmation:
	case "":
		return fmt.Errorf("%w: missing field Type", ErrInvalidPayload)
	default:
		return fmt.Errorf("%w: unknown SNS message Type %q", ErrInvalidPayload, snsClip(e.Type, 64))
	}
	for _, k := range []string{"Signature", "SignatureVersion", "SigningCertURL"} {
		if *e.field(k) == "" {
			return fmt.Errorf("%w: missing field %s", ErrMissingSignature, k)
		}
	}
	required := []string{"MessageId", "TopicArn", "Timestamp"}
	if e.Type != snsNotification {
		required = append(required, "SubscribeURL", "Token")
	}
	for _, k := range required {
		if *e.field(k) == "" {
			return fmt.Errorf("%w: missing field %s", ErrInvalidPayload, k)
		}
	}
	if !e.present["Message"] {
		return fmt.Errorf("%w: missing field Message", ErrInvalidPayload)
	}
	if len(e.MessageID) > maxIDLen {
		return fmt.Errorf("%w: field MessageId is over %d bytes", ErrInvalidPayload, maxIDLen)
	}
	ts, err := time.Parse(time.RFC3339Nano, e.Timestamp)
	if err != nil {
		return fmt.Errorf("%w: field Timestamp is not an RFC 3339 time", ErrInvalidPayload)
	}
	e.sent = ts.UTC()
	return nil
}

// checkHeaders compares SNS's unsigned headers, when present, with the
// body: they decide nothing, but a disagreement means the request was
// altered or forged.
func (e *snsEnvelope) checkHeaders(h http.Header) error {
	for _, c := range []struct{ header, key, value string }{
		{snsHeaderType, "Type", e.Type},
		{snsHeaderMessageID, "MessageId", e.MessageID},
		{snsHeaderTopicARN, "TopicArn", e.TopicArn},
	} {
		for _, v := range h.Values(c.header) {
			if v != c.value {
				return fmt.Errorf("%w: header %s disagrees with the body's %s", ErrInvalidPayload, c.header, c.key)
			}
		}
	}
	return nil
}

// stringToSign is the canonical string SNS signs: for each key in the
// order of the message's Type, key "\n" value "\n".
func (e *snsEnvelope) stringToSign() ([]byte, error) {
	var keys []string
	switch e.Type {
	case snsNotification:
		keys = []string{"Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"}
	case snsSubscriptionConfirmation, snsUnsubscribeConfirmation:
		keys = []string{"Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"}
	default:
		return nil, fmt.Errorf("%w: unknown SNS message Type", ErrInvalidPayload)
	}
	var b bytes.Buffer
	for _, k := range keys {
		var v string
		if k == "Subject" {
			if e.Subject == nil {
				continue
			}
			v = *e.Subject
		} else {
			v = *e.field(k)
		}
		b.WriteString(k)
		b.WriteByte('\n')
		b.WriteString(v)
		b.WriteByte('\n')
	}
	return b.Bytes(), nil
}

// decodeSNSSignature decodes the envelope's Signature (standard base64,
// canonical padding). It does not know the key size yet; VerifyPKCS1v15
// checks the length against it.
func decodeSNSSignature(s string) ([]byte, error) {
	if strings.ContainsAny(s, "\r\n") {
		return nil, fmt.Errorf("%w: Signature contains a line break", ErrMalformedSignature)
	}
	sig, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil || len(sig) == 0 || len(sig) > snsMaxSignatureBytes {
		return nil, fmt.Errorf("%w: Signature is not base64 of an RSA signature", ErrMalformedSignature)
	}
	return sig, nil
}

// verifySNSSignature checks sig over the string to sign with the
// certificate's key: RSA PKCS#1 v1.5 with SHA-1 for SignatureVersion "1",
// SHA-256 for "2".
func verifySNSSignature(pub *rsa.PublicKey, version string, signed, sig []byte) error {
	var h crypto.Hash
	var digest []byte
	switch version {
	case "1":
		d := sha1.Sum(signed)
		h, digest = crypto.SHA1, d[:]
	case "2":
		d := sha256.Sum256(signed)
		h, digest = crypto.SHA256, d[:]
	default:
		return fmt.Errorf("%w: SignatureVersion not accepted", ErrBadSignature)
	}
	if err := rsa.VerifyPKCS1v15(pub, h, digest, sig); err != nil {
		return fmt.Errorf("%w: SNS Signature", ErrBadSignature)
	}
	return nil
}

// snsPolicy is a source's SNS configuration, prepared for checks.
type snsPolicy struct {
	topics   []string
	versions []string
	strict   bool
	maxAge   time.Duration // always positive
	// trusted, when set, replaces the AWS host rule (tests only).
	trusted []string
}

// snsVersions are the SignatureVersions SNS defines.
var snsVersions = []string{"1", "2"}

// checkSNSConfig validates a source's SNS settings; at names their block
// ("options", or the deprecated "sns") in errors, which are relative to
// the source.
func checkSNSConfig(cfg *config.SNS, at string) error {
	field := func(f string) string { return at + "." + f }
	switch {
	case cfg == nil:
		return badField(field("topic_arns"), "an SNS source needs at least one allowed topic ARN: set options.topic_arns")
	case len(cfg.TopicARNs) == 0:
		return badField(field("topic_arns"), "an SNS source needs at least one allowed topic ARN")
	}
	for k, arn := range cfg.TopicARNs {
		if _, _, ok := snsTopicRegion(arn); !ok {
			return badField(field(fmt.Sprintf("topic_arns[%d]", k)),
				"%q is not an SNS topic ARN (arn:<partition>:sns:<region>:<account>:<name>, with an AWS region such as eu-west-1)", arn)
		}
	}
	for k, v := range cfg.SignatureVersions {
		if !slices.Contains(snsVersions, v) {
			return badField(field(fmt.Sprintf("signature_versions[%d]", k)), "%q is not an SNS SignatureVersion (want \"1\" or \"2\")", v)
		}
	}
	if cfg.MaxAge < 0 {
		return badField(field("max_age"), "must not be negative")
	}
	for k, h := range cfg.TrustedCertHosts {
		if !validHostPort(h) {
			return badField(field(fmt.Sprintf("trusted_cert_hosts[%d]", k)), "%q is not host or host:port", h)
		}
	}
	return nil
}

// validHostPort reports whether s is a bare host or host:port.
func validHostPort(s string) bool {
	if s == "" || strings.ContainsAny(s, "/@?#%\\ \t\r\n") {
		return false
	}
	if host, port, err := net.SplitHostPort(s); err == nil {
		n, err := strconv.Atoi(port)
		return host != "" && err == nil && n > 0 && n < 1<<16
	}
	return !strings.Contains(s, ":")
}

// newSNSPolicy prepares checked SNS settings. Strict and MaxAge left
// unset get config's defaults (config.Parse has already set them on a
// deprecated sns block; an options block, or one built by hand, gets them
// here): never the loose host rule or an unbounded age.
func newSNSPolicy(cfg *config.SNS) *snsPolicy {
	strict := config.DefaultSNSStrict
	if cfg.Strict != nil {
		strict = *cfg.Strict
	}
	p := &snsPolicy{
		topics:   slices.Clone(cfg.TopicARNs),
		versions: slices.Clone(cfg.SignatureVersions),
		strict:   strict,
		maxAge:   cmp.Or(cfg.MaxAge, config.DefaultSNSMaxAge),
		trusted:  slices.Clone(cfg.TrustedCertHosts),
	}
	if len(p.versions) == 0 {
		p.versions = slices.Clone(snsVersions)
	}
	return p
}

func (p *snsPolicy) acceptsVersion(v string) bool { return slices.Contains(p.versions, v) }
func (p *snsPolicy) allowsTopic(arn string) bool  { return slices.Contains(p.topics, arn) }

// checkAge refuses a message whose Timestamp, ts, is more than
// snsMaxClockSkew after received or more than maxAge before it. Errors
// wrap ErrStale.
func (p *snsPolicy) checkAge(ts, received time.Time) error {
	switch {
	case ts.Sub(received) > snsMaxClockSkew:
		return fmt.Errorf("%w: message Timestamp is more than %s in the future", ErrStale, snsMaxClockSkew)
	case received.Sub(ts) > p.maxAge:
		return fmt.Errorf("%w: message Timestamp is older than %s", ErrStale, p.maxAge)
	}
	return nil
}

// acceptWindow is how long a verified message stays acceptable after it
// is first accepted: its Timestamp may be up to snsMaxClockSkew ahead of
// our clock, and checkAge accepts it until it is maxAge old. Remembering
// an accepted message this long recognises every replay of it that would
// pass the checks.
func (p *snsPolicy) acceptWindow() time.Duration { return p.maxAge + snsMaxClockSkew }

// snsTopicRegion splits an SNS topic ARN into partition and region. The
// region must be an AWS region name (snsRegion), in China (cn-) exactly
// when the partition is aws-cn.
func snsTopicRegion(arn string) (partition, region string, ok bool) {
	parts := strings.Split(arn, ":")
	if len(parts) != 6 || parts[0] != "arn" || parts[2] != "sns" || parts[5] == "" ||
		!snsLabel.MatchString(parts[1]) || !snsRegion.MatchString(parts[3]) ||
		(parts[1] == "aws-cn") != strings.HasPrefix(parts[3], "cn-") {
		return "", "", false
	}
	return parts[1], parts[3], true
}

var (
	snsLabel = regexp.MustCompile(`^[a-z0-9-]+$`)
	// snsRegion is an AWS region name of the partitions whose SNS hosts
	// are under amazonaws.com (aws, aws-us-gov) or amazonaws.com.cn
	// (aws-cn): us-east-1, eu-central-1, ap-southeast-2, us-gov-west-1,
	// cn-north-1. No S3 endpoint label (s3-accelerate, s3-us-west-2, s3)
	// matches: sns.<that>.amazonaws.com is the S3 bucket "sns", whose
	// owner could be anyone.
	snsRegion     = regexp.MustCompile(`^([a-z]{2}|us-gov)-(central|north|south|east|west|northeast|northwest|southeast|southwest)-[1-9][0-9]?$`)
	snsStrictPath = regexp.MustCompile(`^/SimpleNotificationService-[0-9a-f]+\.pem$`)
)

// snsServiceHost is the SNS service host of region, which snsRegion
// matches: sns.<region>.amazonaws.com, or .com.cn in China.
func snsServiceHost(region string) string {
	if strings.HasPrefix(region, "cn-") {
		return "sns." + region + ".amazonaws.com.cn"
	}
	return "sns." + region + ".amazonaws.com"
}

// snsHostRegion returns the region whose SNS service host host is, if it
// is one.
func snsHostRegion(host string) (string, bool) {
	rest, ok := strings.CutPrefix(host, "sns.")
	if !ok {
		return "", false
	}
	region, _, _ := strings.Cut(rest, ".")
	return region, snsRegion.MatchString(region) && host == snsServiceHost(region)
}

// parseSNSURL parses raw and applies the rules a SigningCertURL and a
// SubscribeURL share: https, an authority without userinfo, no fragment,
// and a host that is the SNS service host of an AWS region (strict: of the
// topic's region), or with trusted hosts set, exactly one of them. A port
// is only allowed as part of a trusted value. what names the field in
// errors.
func (p *snsPolicy) parseSNSURL(what, raw, topicArn string) (*url.URL, error) {
	for _, r := range raw {
		if r <= ' ' || r >= 0x7f || r == '\\' {
			return nil, fmt.Errorf("%s holds a character outside printable ASCII", what)
		}
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%s is not a URL", what)
	case u.Scheme != "https":
		return nil, fmt.Errorf("%s must use https", what)
	case u.Opaque != "" || u.Host == "":
		return nil, fmt.Errorf("%s has no host", what)
	case u.User != nil || strings.Contains(raw, "@"):
		return nil, fmt.Errorf("%s must not carry userinfo", what)
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return nil, fmt.Errorf("%s must not carry a fragment", what)
	}
	if len(p.trusted) > 0 {
		if !slices.Contains(p.trusted, u.Host) {
			return nil, fmt.Errorf("%s host is not a trusted certificate host", what)
		}
		return u, nil
	}
	if strings.Contains(u.Host, ":") {
		return nil, fmt.Errorf("%s must not carry a port", what)
	}
	region, ok := snsHostRegion(u.Host)
	if !ok {
		return nil, fmt.Errorf("%s host is not an AWS SNS host (sns.<region>.amazonaws.com)", what)
	}
	if p.strict {
		if _, topicRegion, ok := snsTopicRegion(topicArn); !ok || region != topicRegion {
			return nil, fmt.Errorf("%s host is not the topic's region's SNS host", what)
		}
	}
	return u, nil
}

// checkCertURL applies the SigningCertURL rules (see parseSNSURL) plus no
// query, no percent-encoding and a path ending in .pem (strict:
// /SimpleNotificationService-<hex>.pem). Errors wrap ErrBadSignature: a
// certificate from anywhere else cannot vouch for an AWS signature.
func (p *snsPolicy) checkCertURL(raw, topicArn string) (*url.URL, error) {
	u, err := p.parseSNSURL("SigningCertURL", raw, topicArn)
	switch {
	case err != nil:
	case u.RawQuery != "" || u.ForceQuery || strings.Contains(raw, "?"):
		err = errors.New("SigningCertURL must not carry a query")
	case strings.Contains(raw, "%"):
		err = errors.New("SigningCertURL must not be percent-encoded")
	case !strings.HasSuffix(u.Path, ".pem"):
		err = errors.New("SigningCertURL path must end in .pem")
	case p.strict && !snsStrictPath.MatchString(u.Path):
		err = errors.New("SigningCertURL path is not /SimpleNotificationService-<hex>.pem")
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadSignature, err)
	}
	return u, nil
}

// checkSubscribeURL applies the SubscribeURL rules before it is visited:
// the host rules of parseSNSURL (403 otherwise), then path "/", and a query
// with Action=ConfirmSubscription and the envelope's own TopicArn and Token,
// each exactly once (400 otherwise).
func (p *snsPolicy) checkSubscribeURL(e *snsEnvelope) (*url.URL, error) {
	u, err := p.parseSNSURL("SubscribeURL", e.SubscribeURL, e.TopicArn)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrForbidden, err)
	}
	bad := func(msg string) (*url.URL, error) {
		return nil, fmt.Errorf("%w: SubscribeURL %s", ErrInvalidPayload, msg)
	}
	if u.Path != "/" || u.RawPath != "" {
		return bad("path must be /")
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return bad("query is malformed")
	}
	for _, c := range []struct{ key, want string }{
		{"Action", "ConfirmSubscription"},
		{"TopicArn", e.TopicArn},
		{"Token", e.Token},
	} {
		if v := q[c.key]; len(v) != 1 || v[0] != c.want {
			return bad(c.key + " does not match the message")
		}
	}
	return u, nil
}

// snsOutbound is what every SNS source of one NewSources call shares: the
// client for certificate fetches and subscription confirmations, and the
// certificate cache, whose fetch cap and failure memory therefore span
// all of them.
type snsOutbound struct {
	client *http.Client
	certs  *certCache
}

// sns returns the SNS outbound resources of d's NewSources call, built on
// first use around d.Outbound, or the hardened NewOutboundClient when it
// is nil. Whatever the client, redirects are not followed and each request
// is bounded by outboundTimeout.
func (d Deps) sns() *snsOutbound {
	if d.shared != nil && d.shared.sns != nil {
		return d.shared.sns
	}
	base := d.Outbound
	if base == nil {
		base = NewOutboundClient()
	}
	client := *base
	client.CheckRedirect = refuseRedirects
	if client.Timeout <= 0 || client.Timeout > outboundTimeout {
		client.Timeout = outboundTimeout
	}
	out := &snsOutbound{client: &client, certs: newCertCache(&client, d.log())}
	if d.shared != nil {
		d.shared.sns = out
	}
	return out
}

// certCache fetches SNS signing certificates and keeps their RSA keys by
// URL: at most snsCertCacheSize, each for snsCertTTL. A failed fetch is
// kept for snsCertFailTTL, and answered with its error again without a
// fetch. Concurrent misses of one URL share one fetch, and at most
// snsMaxCertFetches fetches run at once. Safe for concurrent use.
type certCache struct {
	client *http.Client
	now    func() time.Time
	log    *slog.Logger
	// slots holds one token per fetch running.
	slots chan struct{}

	mu       sync.Mutex
	keys     *simplelru.LRU[string, cachedKey]
	failed   *simplelru.LRU[string, cachedFailure]
	inflight map[string]*certFetch
}

type cachedKey struct {
	key     *rsa.PublicKey
	fetched time.Time
}

// cachedFailure is a failed fetch's error and when the fetch ended.
type cachedFailure struct {
	err error
	at  time.Time
}

// certFetch is one fetch of a URL, waiting for a slot or running. done is
// closed when key or err is set, or when the request leading it went away
// before a slot was free (abandoned: nothing was fetched).
type certFetch struct {
	done      chan struct{}
	key       *rsa.PublicKey
	err       error
	abandoned bool
}

func newCertCache(client *http.Client, log *slog.Logger) *certCache {
	keys, err := simplelru.NewLRU[string, cachedKey](snsCertCacheSize, nil)
	if err != nil {
		panic(err) // only for a non-positive size
	}
	failed, err := simplelru.NewLRU[string, cachedFailure](snsCertFailCacheSize, nil)
	if err != nil {
		panic(err)
	}
	return &certCache{client: client, now: time.Now, log: log, slots: make(chan struct{}, snsMaxCertFetches),
		keys: keys, failed: failed, inflight: map[string]*certFetch{}}
}

// key returns the RSA key of the certificate at certURL, which the caller
// has checked: from the cache, as the error of a fetch that failed less
// than snsCertFailTTL ago, or fetched. ctx bounds the wait for a fetch
// slot and for the fetch; running out of either wraps ErrUnavailable. The
// fetch itself runs on its own timeout so that a caller that goes away
// does not fail the others waiting for it.
func (c *certCache) key(ctx context.Context, certURL string) (*rsa.PublicKey, error) {
	for {
		c.mu.Lock()
		now := c.now()
		if k, ok := c.keys.Get(certURL); ok && now.Sub(k.fetched) < snsCertTTL {
			c.mu.Unlock()
			return k.key, nil
		}
		if f, ok := c.failed.Get(certURL); ok && now.Sub(f.at) < snsCertFailTTL {
			c.mu.Unlock()
			return nil, f.err
		}
		f, running := c.inflight[certURL]
		if !running {
			f = &certFetch{done: make(chan struct{})}
			c.inflight[certURL] = f
		}
		c.mu.Unlock()
		if !running {
			return c.lead(ctx, certURL, f)
		}
		select {
		case <-f.done:
			if !f.abandoned {
				return f.key, f.err
			}
			// Its leader went away before a slot was free: lead anew.
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: waiting for the SNS signing certificate: %w", ErrUnavailable, ctx.Err())
		}
	}
}

// lead runs f, the fetch of certURL, once a slot is free, and waits for
// it. When ctx ends first, f is abandoned without fetching anything.
func (c *certCache) lead(ctx context.Context, certURL string, f *certFetch) (*rsa.PublicKey, error) {
	err := ctx.Err()
	if err == nil {
		select {
		case c.slots <- struct{}{}:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	if err != nil {
		c.mu.Lock()
		delete(c.inflight, certURL)
		c.mu.Unlock()
		f.abandoned = true
		close(f.done)
		return nil, fmt.Errorf("%w: no free slot to fetch the SNS signing certificate: %w", ErrUnavailable, err)
	}
	go func() {
		key, err := c.fetch(context.WithoutCancel(ctx), certURL)
		<-c.slots
		c.mu.Lock()
		delete(c.inflight, certURL)
		if err == nil {
			c.keys.Add(certURL, cachedKey{key: key, fetched: c.now()})
			c.failed.Remove(certURL)
		} else {
			c.failed.Add(certURL, cachedFailure{err: err, at: c.now()})
		}
		c.mu.Unlock()
		f.key, f.err = key, err
		close(f.done)
	}()
	select {
	case <-f.done:
		return f.key, f.err
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: waiting for the SNS signing certificate: %w", ErrUnavailable, ctx.Err())
	}
}

// fetch GETs the certificate without following redirects and reads its
// RSA key. Transport failures, 5xx, 408 and 429 wrap ErrUnavailable (SNS
// retries); any other answer, or a document that is not a PEM certificate
// with an RSA key of at least snsMinKeyBits, wraps ErrBadSignature.
func (c *certCache) fetch(ctx context.Context, certURL string) (*rsa.PublicKey, error) {
	ctx, cancel := context.WithTimeout(ctx, outboundTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, certURL, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: SigningCertURL: %w", ErrBadSignature, err)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		// The cause (an address the dialer refused, a timeout) goes to the
		// log, not to the sender.
		c.log.Warn("SNS signing certificate fetch failed", "url", certURL, "err", err)
		return nil, fmt.Errorf("%w: fetching the SNS signing certificate failed", ErrUnavailable)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusOK:
	case resp.StatusCode >= 500, resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode == http.StatusRequestTimeout:
		return nil, fmt.Errorf("%w: SNS signing certificate fetch answered %d", ErrUnavailable, resp.StatusCode)
	default:
		return nil, fmt.Errorf("%w: SNS signing certificate fetch answered %d", ErrBadSignature, resp.StatusCode)
	}
	if resp.ContentLength > snsMaxCertBytes {
		return nil, fmt.Errorf("%w: SNS signing certificate is over %d bytes", ErrBadSignature, snsMaxCertBytes)
	}
	doc, err := io.ReadAll(io.LimitReader(resp.Body, snsMaxCertBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%w: reading the SNS signing certificate failed", ErrUnavailable)
	}
	if len(doc) > snsMaxCertBytes {
		return nil, fmt.Errorf("%w: SNS signing certificate is over %d bytes", ErrBadSignature, snsMaxCertBytes)
	}
	return parseSNSCert(doc)
}

// parseSNSCert reads the RSA key of the first PEM certificate in doc. The
// leaf alone is enough: the URL rules, not a chain, say it is AWS's.
func parseSNSCert(doc []byte) (*rsa.PublicKey, error) {
	bad := func(msg string) error { return fmt.Errorf("%w: SNS signing certificate %s", ErrBadSignature, msg) }
	var block *pem.Block
	for rest := doc; ; {
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, bad("is not a PEM certificate")
		}
		if block.Type == "CERTIFICATE" {
			break
		}
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, bad("is not a valid X.509 certificate")
	}
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok {
		return nil, bad("does not hold an RSA key")
	}
	if pub.N.BitLen() < snsMinKeyBits {
		return nil, bad(fmt.Sprintf("key is under %d bits", snsMinKeyBits))
	}
	return pub, nil
}

// snsClip shortens s to at most n bytes for an error message.
func snsClip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}
