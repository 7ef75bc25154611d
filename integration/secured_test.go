package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"
	"gopkg.in/yaml.v3"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/kafka"
	"github.com/productstream/productstream/registry"
	"github.com/productstream/productstream/securitytest"
)

// Environment variables of a broker's SASL_SSL listener (SCRAM-SHA-512)
// and of a plain registry, which `realbroker.sh start-secured` prints.
// With them set, the backend suite runs on the "secured" backend, and the
// TestSecured tests on that broker as well as on kfake.
const (
	envSecuredBrokers  = "PRODUCTSTREAM_SECURED_KAFKA_BROKERS"
	envSecuredCAFile   = "PRODUCTSTREAM_SECURED_KAFKA_CA_FILE"
	envSecuredUsername = "PRODUCTSTREAM_SECURED_KAFKA_USERNAME"
	envSecuredPassword = "PRODUCTSTREAM_SECURED_KAFKA_PASSWORD"
	envSecuredRegistry = "PRODUCTSTREAM_SECURED_SCHEMA_REGISTRY_URL"
	// envSecuredMechanisms lists the SASL mechanisms the listener enables,
	// comma separated, as its refusal of another one lists them.
	envSecuredMechanisms = "PRODUCTSTREAM_SECURED_KAFKA_MECHANISMS"
)

// securedEndpoints holds the security of every secured backend of the
// running test, by its broker list and by its registry URL, so that the
// suite's own clients (readAll, newSerde, kcatRead) and the roles'
// configuration files (startRole) reach it the way it requires, while the
// backend tests stay the same on every backend.
var securedEndpoints sync.Map // string -> *endpointSecurity

// endpointSecurity is what reaching a secured backend takes: the kafka
// and schema_registry keys of the configuration.
type endpointSecurity struct {
	kafka    config.Kafka    // TLS and SASL
	registry config.Registry // TLS and basic auth
	// oauthbearer: the listener also takes OAUTHBEARER with unsigned
	// tokens, which kcat then uses (see kcatSecurity).
	oauthbearer bool
}

// register records s for brokers and registryURL until t ends.
func (s *endpointSecurity) register(t *testing.T, brokers, registryURL string) {
	securedEndpoints.Store(brokers, s)
	securedEndpoints.Store(registryURL, s)
	t.Cleanup(func() {
		securedEndpoints.Delete(brokers)
		securedEndpoints.Delete(registryURL)
	})
}

// securityOf is the security registered for a broker list or a registry
// URL; nil for a plain one.
func securityOf(endpoint string) *endpointSecurity {
	if s, ok := securedEndpoints.Load(endpoint); ok {
		return s.(*endpointSecurity)
	}
	return nil
}

// clientOpts are the options of a test's Kafka client of brokers (comma
// separated): productstream's own, with the broker's TLS and SASL.
func clientOpts(t *testing.T, brokers string) []kgo.Opt {
	t.Helper()
	k := config.Kafka{Brokers: strings.Split(brokers, ",")}
	if s := securityOf(brokers); s != nil {
		k.TLS, k.SASL = s.kafka.TLS, s.kafka.SASL
	}
	c, err := kafka.Connect(k, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c.Options()
}

// registryClient is a test's client of the registry at url, with its TLS
// and credentials.
func registryClient(t *testing.T, url string) *sr.Client {
	t.Helper()
	r := config.Registry{URL: url}
	if s := securityOf(url); s != nil {
		r.TLS, r.BasicAuth = s.registry.TLS, s.registry.BasicAuth
	}
	c, err := registry.Connect(r)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := c.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// kcatSecurity are kcat's (librdkafka's) settings for brokers. Where the
// listener takes OAUTHBEARER, kcat authenticates with an unsigned token
// that librdkafka makes: librdkafka 2.0's SCRAM-SHA-512 is refused by
// Kafka 4.4, where 2.16's and franz-go's are taken.
func kcatSecurity(brokers string) []string {
	s := securityOf(brokers)
	if s == nil {
		return nil
	}
	args := []string{"-X", "security.protocol=SASL_SSL", "-X", "ssl.ca.location=" + s.kafka.TLS.CAFile}
	if s.oauthbearer {
		return append(args, "-X", "sasl.mechanisms=OAUTHBEARER", "-X", "enable.sasl.oauthbearer.unsecure.jwt=true",
			"-X", "sasl.oauthbearer.config=principal="+s.kafka.SASL.Username)
	}
	return append(args, "-X", "sasl.mechanisms="+s.kafka.SASL.Mechanism, "-X", "sasl.username="+s.kafka.SASL.Username,
		"-X", "sasl.password="+s.kafka.SASL.Password)
}

// secureConfigFile adds to the configuration file at path the security of
// the secured backend its kafka.brokers name: kafka.tls, kafka.sasl,
// schema_registry.tls and schema_registry.basic_auth. A file of a plain
// backend, or one that has them already (roles may share a file), is left
// as it is; the new file replaces the old at once, so a role starting
// meanwhile reads either.
func secureConfigFile(t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	k, _ := cfg["kafka"].(map[string]any)
	var brokers []string
	if list, ok := k["brokers"].([]any); ok {
		for _, b := range list {
			brokers = append(brokers, fmt.Sprint(b))
		}
	}
	s := securityOf(strings.Join(brokers, ","))
	if _, done := k["tls"]; s == nil || done {
		return
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	add := func(section, key string, v any) {
		var n yaml.Node
		if err := n.Encode(v); err != nil {
			t.Fatal(err)
		}
		top := doc.Content[0]
		for i := 0; i+1 < len(top.Content); i += 2 {
			if top.Content[i].Value == section {
				top.Content[i+1].Content = append(top.Content[i+1].Content, &yaml.Node{Kind: yaml.ScalarNode, Value: key}, &n)
				return
			}
		}
		t.Fatalf("%s has no %s section", path, section)
	}
	add("kafka", "tls", s.kafka.TLS)
	add("kafka", "sasl", s.kafka.SASL)
	add("schema_registry", "tls", s.registry.TLS)
	add("schema_registry", "basic_auth", s.registry.BasicAuth)
	out, err := yaml.Marshal(&doc)
	if err != nil {
		t.Fatal(err)
	}
	tmp := path + ".secured"
	if err := os.WriteFile(tmp, out, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// registryProxy serves the registry at target over TLS, with a
// certificate of a CA of its own, to requests with user's basic auth
// credentials; 401 to any other. It returns its URL and the CA's file.
// Apicurio 3.0's own authentication needs an OpenID Connect server, so the
// secured backend puts this in front of it.
func registryProxy(t *testing.T, target, user, pass string) (string, string) {
	t.Helper()
	to, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	proxy := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(to)
		r.Out.Header.Del("Authorization")
	}}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != user || p != pass {
			w.Header().Set("WWW-Authenticate", `Basic realm="schema registry"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"error_code":401,"message":"Unauthorized"}`)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	ca := securitytest.NewCA(t, "productstream registry proxy CA")
	srv.TLS = ca.ServerTLS(t, "127.0.0.1")
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL, ca.File
}

// randomSecret is a password made for one test.
func randomSecret(t *testing.T) string {
	t.Helper()
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// securedTarget is a Kafka listener that takes only TLS and SASL
// (SCRAM-SHA-512), and a registry behind TLS and basic auth.
type securedTarget struct {
	name     string
	brokers  string
	sec      *endpointSecurity
	registry string // https URL
	// enables are the mechanisms the broker enables, when it refuses
	// others (kfake takes every one it knows).
	enables []string
}

// realSecuredTarget is the broker and registry the PRODUCTSTREAM_SECURED_*
// variables name; ok is false when they are not set.
func realSecuredTarget(t *testing.T) (securedTarget, bool) {
	t.Helper()
	brokers := os.Getenv(envSecuredBrokers)
	if brokers == "" {
		return securedTarget{}, false
	}
	for _, v := range []string{envSecuredCAFile, envSecuredUsername, envSecuredPassword, envSecuredRegistry} {
		if os.Getenv(v) == "" {
			t.Fatalf("%s is set but %s is not", envSecuredBrokers, v)
		}
	}
	user, pass := "productstream-registry", randomSecret(t)
	regURL, regCA := registryProxy(t, os.Getenv(envSecuredRegistry), user, pass)
	sec := &endpointSecurity{
		kafka: config.Kafka{
			TLS:  config.KafkaTLS{Enabled: true, TLS: config.TLS{CAFile: os.Getenv(envSecuredCAFile)}},
			SASL: config.SASL{Mechanism: config.SASLScramSHA512, Username: os.Getenv(envSecuredUsername), Password: os.Getenv(envSecuredPassword)},
		},
		registry: config.Registry{TLS: config.TLS{CAFile: regCA}, BasicAuth: &config.Credentials{Username: user, Password: pass}},
	}
	sec.register(t, brokers, regURL)
	enables := []string{config.SASLScramSHA512}
	if m := os.Getenv(envSecuredMechanisms); m != "" {
		enables = strings.Split(m, ",")
	}
	sec.oauthbearer = slices.Contains(enables, config.SASLOAuthBearer)
	return securedTarget{name: "secured", brokers: brokers, sec: sec, registry: regURL, enables: enables}, true
}

// embeddedSecuredTarget is a kfake broker with TLS and SCRAM-SHA-512 and
// an srfake registry behind the TLS proxy, in this process.
func embeddedSecuredTarget(t *testing.T) securedTarget {
	t.Helper()
	ca := securitytest.NewCA(t, "productstream kfake CA")
	kuser, kpass := "productstream", randomSecret(t)
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.TLS(ca.ServerTLS(t, "127.0.0.1")),
		kfake.EnableSASL(), kfake.Superuser(config.SASLScramSHA512, kuser, kpass))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	reg := srfake.New()
	t.Cleanup(reg.Close)
	ruser, rpass := "productstream-registry", randomSecret(t)
	regURL, regCA := registryProxy(t, reg.URL(), ruser, rpass)
	sec := &endpointSecurity{
		kafka: config.Kafka{
			TLS:  config.KafkaTLS{Enabled: true, TLS: config.TLS{CAFile: ca.File}},
			SASL: config.SASL{Mechanism: config.SASLScramSHA512, Username: kuser, Password: kpass},
		},
		registry: config.Registry{TLS: config.TLS{CAFile: regCA}, BasicAuth: &config.Credentials{Username: ruser, Password: rpass}},
	}
	brokers := cluster.ListenAddrs()[0]
	sec.register(t, brokers, regURL)
	return securedTarget{name: "embedded-secured", brokers: brokers, sec: sec, registry: regURL}
}

// eachSecuredTarget runs fn on the embedded secured broker and, when the
// PRODUCTSTREAM_SECURED_* variables are set, on the real one.
func eachSecuredTarget(t *testing.T, fn func(t *testing.T, st securedTarget)) {
	t.Run("embedded-secured", func(t *testing.T) { fn(t, embeddedSecuredTarget(t)) })
	t.Run("secured", func(t *testing.T) {
		st, ok := realSecuredTarget(t)
		if !ok {
			t.Skipf("%s is not set: run `realbroker.sh start-secured` and eval its env", envSecuredBrokers)
		}
		fn(t, st)
	})
}

// securedBackend is the "secured" backend of eachBackend: the real
// broker's SASL_SSL listener and the registry behind the TLS proxy.
func securedBackend(t *testing.T) backend {
	t.Helper()
	st, _ := realSecuredTarget(t)
	return backend{name: "secured", brokers: st.brokers, registry: st.registry}
}

// securedConfig is a configuration file for st with its security, after
// change has altered it, and the topic prefix it names: one LiSA source,
// lisa-main (secret s1, API key k1), and extra, YAML of more top-level keys.
func securedConfig(t *testing.T, st securedTarget, change func(k *config.Kafka, r *config.Registry), extra string) (string, string) {
	t.Helper()
	k, r := st.sec.kafka, st.sec.registry
	r.URL = st.registry
	if r.BasicAuth != nil {
		ba := *r.BasicAuth
		r.BasicAuth = &ba
	}
	if change != nil {
		change(&k, &r)
	}
	prefix := uniquePrefix(t)
	doc := map[string]any{
		"kafka":           map[string]any{"brokers": strings.Split(st.brokers, ","), "topic_prefix": prefix, "tls": k.TLS, "sasl": k.SASL},
		"schema_registry": map[string]any{"url": r.URL, "tls": r.TLS, "basic_auth": r.BasicAuth},
		"sources":         []map[string]any{{"name": "lisa-main", "provider": "lisa", "secrets": []string{"s1"}, "api_keys": []string{"k1"}}},
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "productstream.yaml")
	if err := os.WriteFile(path, append(out, extra...), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, prefix
}

// runUntilExit runs the binary with args and returns its stderr and error
// once it exits; it fails the test if it runs longer than limit.
func runUntilExit(t *testing.T, limit time.Duration, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("productstream %s still ran after %s; stderr:\n%s", args[0], limit, stderr.String())
	}
	return stderr.String(), err
}

// A role whose connection its security refuses stops at start, promptly
// and with a non-zero status, printing the documented error: the
// mechanism and user of a refused password (never the password), the CA
// file that did not sign the broker's certificate, a plaintext client on
// the TLS port, a mechanism the broker does not enable with the ones it
// does, refused registry credentials.
func TestSecuredRoleStopsAtStartOnSecurityErrors(t *testing.T) {
	eachSecuredTarget(t, func(t *testing.T, st securedTarget) {
		other := securitytest.NewCA(t, "another CA")
		user := st.sec.kafka.SASL.Username
		for _, tc := range []struct {
			name   string
			change func(k *config.Kafka, r *config.Registry)
			want   []string
			skip   bool
		}{
			{
				name:   "wrong password",
				change: func(k *config.Kafka, _ *config.Registry) { k.SASL.Password = "wrong-secret-42" },
				want:   []string{fmt.Sprintf(`kafka: SASL authentication failed (mechanism SCRAM-SHA-512, user %q); check kafka.sasl.username and kafka.sasl.password: `, user)},
			},
			{
				name:   "unknown CA",
				change: func(k *config.Kafka, _ *config.Registry) { k.TLS.CAFile = other.File },
				want: []string{`kafka: TLS: the broker's certificate (issued by "CN=`,
					`) is not signed by a CA in the CA file ` + other.File + ` (kafka.tls.ca_file): `},
			},
			{
				name:   "plaintext client on the TLS port",
				change: func(k *config.Kafka, _ *config.Registry) { k.TLS = config.KafkaTLS{} },
				want:   []string{"kafka: the broker at " + st.brokers + " answers TLS on this port, but kafka.tls.enabled is false: "},
			},
			{
				name:   "a mechanism the broker does not enable",
				change: func(k *config.Kafka, _ *config.Registry) { k.SASL.Mechanism = config.SASLScramSHA256 },
				want: []string{"kafka: SASL mechanism SCRAM-SHA-256 (kafka.sasl.mechanism) is not enabled on the broker at " + st.brokers +
					"; it enables: " + strings.Join(st.enables, ", ") + ": "},
				skip: len(st.enables) == 0,
			},
			{
				name:   "wrong registry password",
				change: func(_ *config.Kafka, r *config.Registry) { r.BasicAuth.Password = "wrong-secret-42" },
				want:   []string{fmt.Sprintf("schema registry: 401 Unauthorized from %s: it refused the credentials of schema_registry.basic_auth (user %q): ", st.registry, st.sec.registry.BasicAuth.Username)},
			},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if tc.skip {
					t.Skip("kfake enables every mechanism it knows")
				}
				cfg, _ := securedConfig(t, st, tc.change, "")
				start := time.Now()
				stderr, err := runUntilExit(t, 60*time.Second, "process", "--config", cfg)
				var exit *exec.ExitError
				if !errors.As(err, &exit) || exit.ExitCode() == 0 {
					t.Fatalf("process exited with %v, want a non-zero status; stderr:\n%s", err, stderr)
				}
				for _, w := range tc.want {
					if !strings.Contains(stderr, w) {
						t.Errorf("stderr does not say %q:\n%s", w, stderr)
					}
				}
				if strings.Contains(stderr, "wrong-secret-42") || strings.Contains(stderr, st.sec.kafka.SASL.Password) {
					t.Errorf("stderr shows a password:\n%s", stderr)
				}
				t.Logf("%s: stopped after %s", st.name, time.Since(start).Round(time.Millisecond))
			})
		}
	})
}

// The ingest and process roles run over TLS and SCRAM-SHA-512 on kfake,
// with the registry behind TLS and basic auth: a signed delivery is
// accepted (ingest produced it) and becomes the product's state (the
// processor read it and wrote the state), read back over the listener.
// The backend suite does the same on the real broker.
func TestSecuredRolesRunOverTLSAndSASL(t *testing.T) {
	st := embeddedSecuredTarget(t)
	httpAddr := freeAddr(t)
	cfg, prefix := securedConfig(t, st, nil, fmt.Sprintf("http:\n  listen: %q\n  drain_delay: 0s\nprocessor:\n  quiet_period: 100ms\n  max_delay: 1s\n", httpAddr))
	startRole(t, "ingest", cfg)
	startRole(t, "process", cfg)
	body := []byte(`{"productId":"p1","price":9.5}`)
	h := http.Header{}
	h.Set("Authorization", "ApiKey k1")
	h.Set("X-Hmac-Signature", hmacHex("s1", body))
	waitFor(t, "ingest accepts a signed delivery", 30*time.Second, func() (bool, string) {
		status, err := post("http://"+httpAddr+"/webhooks/lisa-main", h, body)
		return status == http.StatusAccepted, fmt.Sprint(status, err)
	})
	products := prefix + "products"
	waitFor(t, "the product's state on "+products, 30*time.Second, func() (bool, string) {
		recs := readAll(t, st.brokers, products)
		return len(recs) == 1 && string(recs[0].Key) == "lisa-main:p1", fmt.Sprintf("%d records", len(recs))
	})
}

// `tail --config` and `sign --config` take the same file as the roles:
// tail reads a topic over TLS and SCRAM and decodes through the registry
// behind TLS and basic auth.
func TestSecuredTailAndSignTakeTheConfigFile(t *testing.T) {
	eachSecuredTarget(t, func(t *testing.T, st securedTarget) {
		cfg, _ := securedConfig(t, st, nil, "")
		topic := strings.TrimSuffix(uniquePrefix(t), ".") + "-tail"
		cl, err := kgo.NewClient(clientOpts(t, st.brokers)...)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if res, err := kadm.NewClient(cl).CreateTopic(ctx, 1, -1, nil, topic); err != nil || res.Err != nil {
			t.Fatalf("create %s: %v %v", topic, err, res.Err)
		}
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: []byte("k"), Value: []byte("plain bytes")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(binary, "tail", topic, "--from-beginning", "--exit-at-end", "--config", cfg)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("tail: %v\n%s", err, stderr.String())
		}
		if !strings.Contains(string(out), `"key":"k"`) || !strings.Contains(string(out), `"value":"plain bytes"`) {
			t.Fatalf("tail printed %q", out)
		}
		sign := exec.Command(binary, "sign", "--source", "lisa-main", "--config", cfg)
		sign.Stdin = strings.NewReader(`{"productId":"1"}`)
		if out, err := sign.Output(); err != nil || !strings.Contains(string(out), "X-Hmac-Signature: "+hmacHex("s1", []byte(`{"productId":"1"}`))) {
			t.Fatalf("sign: %v: %q", err, out)
		}
	})
}

// An OAUTHBEARER token file is read again at every authentication: a
// connection made after the file was renewed carries the new token, on
// the real broker (kfake has no OAUTHBEARER). The broker validates
// unsigned tokens (realbroker.sh's listener is for tests).
func TestSecuredOAuthBearerRereadsTheTokenFile(t *testing.T) {
	st, ok := realSecuredTarget(t)
	if !ok {
		t.Skipf("%s is not set: run `realbroker.sh start-secured` and eval its env", envSecuredBrokers)
	}
	file := filepath.Join(t.TempDir(), "token")
	write := func(token string) {
		if err := os.WriteFile(file, []byte(token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := kafka.Connect(config.Kafka{Brokers: strings.Split(st.brokers, ","), TLS: st.sec.kafka.TLS,
		SASL: config.SASL{Mechanism: config.SASLOAuthBearer, TokenFile: file}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	write(unsignedJWT("productstream", time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)))
	err = conn.Check(ctx)
	if want := "kafka: SASL authentication failed (mechanism OAUTHBEARER, token from kafka.sasl.token_file " + file + "): "; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("expired token: Check = %v, want %q...", err, want)
	}
	write(unsignedJWT("productstream", time.Now(), time.Now().Add(time.Hour)))
	if err := conn.Check(ctx); err != nil {
		t.Fatalf("renewed token: Check = %v", err)
	}
}

// unsignedJWT is a token with alg "none" for sub, valid from iat to exp:
// what Kafka's unsecured OAUTHBEARER validator takes.
func unsignedJWT(sub string, iat, exp time.Time) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"none"}`)) + "." + enc(fmt.Appendf(nil, `{"sub":%q,"iat":%d,"exp":%d}`, sub, iat.Unix(), exp.Unix())) + "."
}
