package deploy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"path"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/console"
	"github.com/productstream/productstream/ingest"
	"github.com/productstream/productstream/ops"
)

// The decoder the manifests are read with refuses what the API server's
// strict validation refuses, so a misspelt or misplaced field fails the
// tests instead of being dropped silently.
func TestStrictDecoderRefusesUnknownFields(t *testing.T) {
	const good = `apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
spec:
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      containers:
        - name: c
          image: i
          readinessProbe: {httpGet: {path: /readyz, port: ops}}
`
	if _, err := decodeStrict([]byte(good)); err != nil {
		t.Fatalf("a valid Deployment: %v", err)
	}
	for name, bad := range map[string]string{
		"unknown field":       strings.Replace(good, "readinessProbe:", "readinesProbe:", 1),
		"field of wrong case": strings.Replace(good, "readinessProbe:", "ReadinessProbe:", 1),
		"duplicate field":     strings.Replace(good, "image: i", "image: i\n          image: j", 1),
		"retired API version": strings.Replace(good, "apps/v1", "extensions/v1beta1", 1),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := decodeStrict([]byte(bad)); err == nil {
				t.Fatal("decoded without error")
			}
		})
	}
	if _, err := decodeStrict([]byte(strings.Replace(good, "readinessProbe:", "readinesProbe:", 1))); !runtime.IsStrictDecodingError(err) {
		t.Fatalf("an unknown field gave %v, want a strict decoding error", err)
	}
}

// Both kustomizations render every role, each as a Deployment whose
// container runs that role, and nothing the tests do not check.
func TestManifestsRunEveryRole(t *testing.T) {
	forEachKustomization(t, func(t *testing.T, m *manifests) {
		var got []string
		for _, d := range m.deployments {
			role := d.Spec.Template.Labels[componentLabel]
			got = append(got, role)
			c := container(t, d)
			if args := slices.Concat(c.Command, c.Args); len(args) == 0 || args[0] != role {
				t.Errorf("Deployment %s (role %s) runs %q", d.Name, role, args)
			}
		}
		if want := slices.Sorted(maps.Keys(roles)); !slices.Equal(slices.Sorted(slices.Values(got)), want) {
			t.Errorf("Deployments of roles %v, want %v", got, want)
		}
	})
}

// Every role's configuration, as its pod reads it (the ConfigMap's file
// with the Secret's files and the container's environment), loads and
// passes the checks the role makes at start.
func TestConfigLoadsForEveryRole(t *testing.T) {
	forEachKustomization(t, func(t *testing.T, m *manifests) {
		for _, d := range m.deployments {
			role := d.Spec.Template.Labels[componentLabel]
			cfg, _ := m.roleConfig(t, d)
			if err := cfg.Validate(roles[role]); err != nil {
				t.Errorf("%s: invalid for the %s role: %v", d.Name, role, err)
			}
			switch role {
			case "ingest":
				if _, err := ingest.NewSources(cfg.Sources, ingest.Deps{Log: slog.New(slog.DiscardHandler)}); err != nil {
					t.Errorf("%s: the sources do not build: %v", d.Name, err)
				}
			case "sink":
				if len(cfg.Sinks) == 0 {
					t.Errorf("%s: the sink role needs sinks in the config", d.Name)
				}
			case "console":
				if cfg.Console.Listen == "" {
					t.Errorf("%s: the console role needs console.listen", d.Name)
				} else if err := console.Check(cfg.Console); err != nil {
					t.Errorf("%s: %v", d.Name, err)
				}
			}
		}
	})
}

// secretFields are the values of the configuration that are secrets.
func secretFields(cfg *config.Config) map[string]string {
	out := map[string]string{}
	add := func(field, v string) {
		if v != "" {
			out[field] = v
		}
	}
	for i, s := range cfg.Sources {
		for j, v := range s.Secrets {
			add(fieldName("sources", i, "secrets", j), v)
		}
		for j, v := range s.APIKeys {
			add(fieldName("sources", i, "api_keys", j), v)
		}
		if s.BasicAuth != nil {
			for j, v := range s.BasicAuth.Passwords {
				add(fieldName("sources", i, "basic_auth.passwords", j), v)
			}
		}
	}
	for i, s := range cfg.Sinks {
		if s.OpenSearch != nil {
			add(fieldName("sinks", i, "opensearch.password", -1), s.OpenSearch.Password)
		}
		if s.Postgres != nil {
			add(fieldName("sinks", i, "postgres.dsn", -1), s.Postgres.DSN)
		}
		if s.Redis != nil {
			add(fieldName("sinks", i, "redis.password", -1), s.Redis.Password)
		}
		if s.Webhook != nil {
			for j, v := range s.Webhook.Secrets {
				add(fieldName("sinks", i, "webhook.secrets", j), v)
			}
		}
	}
	for i, tok := range cfg.Console.Tokens {
		add(fieldName("console.tokens", i, "token", -1), tok.Token)
	}
	return out
}

func fieldName(list string, i int, field string, j int) string {
	s := list + "[" + strconv.Itoa(i) + "]." + field
	if j >= 0 {
		s += "[" + strconv.Itoa(j) + "]"
	}
	return s
}

// Every secret of the configuration comes from the Secret through a
// ${file:...} reference, and no Secret value is anywhere else: not in a
// ConfigMap, not in a container's environment or arguments.
func TestSecretsOnlyInTheSecret(t *testing.T) {
	forEachKustomization(t, func(t *testing.T, m *manifests) {
		for _, d := range m.deployments {
			cfg, read := m.roleConfig(t, d)
			fields := secretFields(cfg)
			if len(fields) == 0 {
				t.Fatalf("%s: the configuration holds no secret: the test checks nothing", d.Name)
			}
			for field, v := range fields {
				if !slices.Contains(read, v) {
					t.Errorf("%s: %s is not a ${file:...} reference to the Secret", d.Name, field)
				}
			}
			c := container(t, d)
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
					t.Errorf("%s: env %s comes from a Secret: mount it as a file instead", d.Name, e.Name)
				}
			}
			for _, e := range c.EnvFrom {
				if e.SecretRef != nil {
					t.Errorf("%s: envFrom a Secret: mount it as a file instead", d.Name)
				}
			}
		}
		for _, s := range m.secrets {
			for k, v := range s.Data {
				if len(v) < 8 {
					t.Errorf("Secret %s: %s is too short to search for", s.Name, k)
					continue
				}
				for _, cm := range m.configMaps {
					for ck, text := range cm.Data {
						if strings.Contains(text, string(v)) {
							t.Errorf("ConfigMap %s (%s) holds the value of Secret %s's %s", cm.Name, ck, s.Name, k)
						}
					}
				}
				for _, d := range m.deployments {
					c := container(t, d)
					for _, e := range c.Env {
						if strings.Contains(e.Value, string(v)) {
							t.Errorf("%s: env %s holds the value of Secret %s's %s", d.Name, e.Name, s.Name, k)
						}
					}
					for _, a := range slices.Concat(c.Command, c.Args) {
						if strings.Contains(a, string(v)) {
							t.Errorf("%s: an argument holds the value of Secret %s's %s", d.Name, s.Name, k)
						}
					}
				}
			}
		}
	})
}

// The Secret can be rotated in place: it keeps its name (no hash suffix),
// and every pod mounts the whole Secret as a directory, never a single key
// through subPath (which the kubelet does not update), readable only by
// the owner and the pod's group. The ConfigMap's name carries a hash of its
// content, so a change of the config rolls the pods.
func TestSecretRotatesInPlace(t *testing.T) {
	base := render(t, "kubernetes/base")
	_, v := mountOf(t, base.deployments[0], container(t, base.deployments[0]), "a Secret", isSecret)
	name := v.Secret.SecretName
	forEachKustomization(t, func(t *testing.T, m *manifests) {
		for _, d := range m.deployments {
			c := container(t, d)
			vm, v := mountOf(t, d, c, "a Secret", isSecret)
			if vm.SubPath != "" || vm.SubPathExpr != "" {
				t.Errorf("%s: the Secret is mounted through subPath, which rotation does not update", d.Name)
			}
			if !vm.ReadOnly {
				t.Errorf("%s: the Secret's mount is not read-only", d.Name)
			}
			if mode := v.Secret.DefaultMode; mode == nil || *mode != 0o440 {
				t.Errorf("%s: the Secret's files have mode %s, want 0440 (%d)", d.Name, show(mode), 0o440)
			}
			if v.Secret.SecretName != name {
				t.Errorf("%s mounts Secret %q, not %q: a hash suffix makes every update a new Secret and a rollout", d.Name, v.Secret.SecretName, name)
			}
			for _, s := range m.secrets {
				if s.Name != name {
					t.Errorf("the overlay makes Secret %q, not %q", s.Name, name)
				}
			}
			cvm, cv := mountOf(t, d, c, "a ConfigMap", isConfigMap)
			if cvm.SubPath != "" {
				t.Errorf("%s: the ConfigMap is mounted through subPath", d.Name)
			}
			if !strings.HasPrefix(cv.ConfigMap.Name, "productstream-config-") {
				t.Errorf("%s mounts ConfigMap %q, without the hash suffix that rolls the pods on a change", d.Name, cv.ConfigMap.Name)
			}
		}
	})
}

// The liveness and readiness probes ask the operations listener's own
// routes, on a named container port that is the config's ops.listen port
// and not the webhook port. The routes are the ops handler's: liveness
// must stay up while a dependency is down (so Kafka being away restarts
// nothing), and readiness must fail then.
func TestProbesAskTheOpsListener(t *testing.T) {
	down := errors.New("down")
	h := ops.NewHandler(ops.NewRegistry(), ops.WithCheck("kafka", func(context.Context) error { return down }),
		ops.WithCheckTimeout(time.Second))
	healthy := ops.NewHandler(ops.NewRegistry())
	status := func(h http.Handler, path string) int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		_, _ = io.Copy(io.Discard, rec.Body)
		return rec.Code
	}
	if status(h, "/no-such-route") != http.StatusNotFound {
		t.Fatal("the ops handler answers a route it does not have: the probes' check below proves nothing")
	}
	forEachKustomization(t, func(t *testing.T, m *manifests) {
		for _, d := range m.deployments {
			c := container(t, d)
			cfg, _ := m.roleConfig(t, d)
			if config.Loopback(cfg.Ops.Listen) || cfg.Ops.Listen == "" {
				t.Fatalf("%s: ops.listen %q: the kubelet cannot reach it", d.Name, cfg.Ops.Listen)
			}
			opsPort := portOf(t, "ops.listen", cfg.Ops.Listen)
			for _, p := range []struct {
				kind  string
				probe *corev1.Probe
				// up and down: the status wanted with every check
				// passing and with one failing.
				up, down int
			}{
				{"liveness", c.LivenessProbe, http.StatusOK, http.StatusOK},
				{"readiness", c.ReadinessProbe, http.StatusOK, http.StatusServiceUnavailable},
			} {
				if p.probe == nil || p.probe.HTTPGet == nil {
					t.Errorf("%s: no HTTP %s probe", d.Name, p.kind)
					continue
				}
				g := p.probe.HTTPGet
				if got := status(healthy, g.Path); got != p.up {
					t.Errorf("%s: %s probe %s answers %d with every check passing, want %d", d.Name, p.kind, g.Path, got, p.up)
				}
				if got := status(h, g.Path); got != p.down {
					t.Errorf("%s: %s probe %s answers %d with Kafka down, want %d", d.Name, p.kind, g.Path, got, p.down)
				}
				if g.Port.Type != intstr.String {
					t.Errorf("%s: %s probe port %s is a number, not a named port", d.Name, p.kind, g.Port.String())
					continue
				}
				n, ok := containerPort(c, g.Port.StrVal)
				if !ok {
					t.Errorf("%s: %s probe port %q names no container port", d.Name, p.kind, g.Port.StrVal)
				} else if n != opsPort {
					t.Errorf("%s: %s probe port %q is %d, ops.listen is %s", d.Name, p.kind, g.Port.StrVal, n, cfg.Ops.Listen)
				}
				if d.Spec.Template.Labels[componentLabel] == "ingest" && n == portOf(t, "http.listen", cfg.HTTP.Listen) {
					t.Errorf("%s: %s probe is on the webhook port", d.Name, p.kind)
				}
			}
		}
	})
}

// The ingest Service sends the webhook port, and nothing else, to the
// ingest pods only, on the port http.listen binds; the console's Service
// is cluster-internal and sends its port to the console pods on
// console.listen's port. No Service exposes the operations listener.
func TestServicesTargetTheirPorts(t *testing.T) {
	forEachKustomization(t, func(t *testing.T, m *manifests) {
		for role, listen := range map[string]func(*config.Config) (string, string){
			"ingest":  func(c *config.Config) (string, string) { return "http.listen", c.HTTP.Listen },
			"console": func(c *config.Config) (string, string) { return "console.listen", c.Console.Listen },
		} {
			d := m.role(t, role)
			c := container(t, d)
			cfg, _ := m.roleConfig(t, d)
			field, addr := listen(cfg)
			var svcs []*corev1.Service
			for _, s := range m.services {
				if sel := m.selected(t, &metav1.LabelSelector{MatchLabels: s.Spec.Selector}); slices.Contains(sel, d.Name) {
					if len(sel) != 1 {
						t.Errorf("Service %s selects the pods of %v, want %s's only", s.Name, sel, d.Name)
					}
					svcs = append(svcs, s)
				}
			}
			if len(svcs) != 1 {
				t.Fatalf("%d Services select %s's pods, want 1", len(svcs), d.Name)
			}
			s := svcs[0]
			if s.Spec.Type != corev1.ServiceTypeClusterIP || len(s.Spec.ExternalIPs) > 0 {
				t.Errorf("Service %s is %s with external IPs %v: expose it through an ingress, not the Service", s.Name, s.Spec.Type, s.Spec.ExternalIPs)
			}
			if len(s.Spec.Ports) != 1 {
				t.Fatalf("Service %s has %d ports, want 1", s.Name, len(s.Spec.Ports))
			}
			tp := s.Spec.Ports[0].TargetPort
			n, ok := containerPort(c, tp.StrVal)
			if tp.Type != intstr.String || !ok {
				t.Fatalf("Service %s targets %s, not a named port of %s's container", s.Name, tp.String(), d.Name)
			}
			if want := portOf(t, field, addr); n != want {
				t.Errorf("Service %s targets port %q (%d), %s binds %d", s.Name, tp.StrVal, n, field, want)
			}
		}
		for _, s := range m.services {
			for _, name := range m.selected(t, &metav1.LabelSelector{MatchLabels: s.Spec.Selector}) {
				d := m.role(t, roleOf(m, name))
				cfg, _ := m.roleConfig(t, d)
				for _, p := range s.Spec.Ports {
					n, _ := containerPort(container(t, d), p.TargetPort.StrVal)
					if p.TargetPort.IntVal == portOf(t, "ops.listen", cfg.Ops.Listen) || n == portOf(t, "ops.listen", cfg.Ops.Listen) {
						t.Errorf("Service %s exposes the operations listener of %s", s.Name, name)
					}
				}
			}
		}
	})
}

// roleOf returns the role of the Deployment called name.
func roleOf(m *manifests, name string) string {
	for _, d := range m.deployments {
		if d.Name == name {
			return d.Spec.Template.Labels[componentLabel]
		}
	}
	return ""
}

// Every container runs unprivileged: not as root (as the image's numeric
// user), on a read-only root filesystem, without privilege escalation or
// capabilities, under the runtime's seccomp profile, without a service
// account token, and with resource requests and limits.
func TestPodsAreHardened(t *testing.T) {
	uid := imageUser(t)
	forEachKustomization(t, func(t *testing.T, m *manifests) {
		for _, d := range m.deployments {
			spec := d.Spec.Template.Spec
			if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
				t.Errorf("%s: mounts a service account token it never uses", d.Name)
			}
			if spec.HostNetwork || spec.HostPID || spec.HostIPC {
				t.Errorf("%s: shares a host namespace", d.Name)
			}
			for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
				sc := c.SecurityContext
				if sc == nil {
					t.Errorf("%s/%s: no securityContext", d.Name, c.Name)
					continue
				}
				checks := []struct {
					ok   bool
					what string
				}{
					{sc.RunAsNonRoot != nil && *sc.RunAsNonRoot, "runAsNonRoot: true"},
					{sc.RunAsUser != nil && *sc.RunAsUser == uid, "runAsUser: the image's user " + strconv.FormatInt(uid, 10)},
					{sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem, "readOnlyRootFilesystem: true"},
					{sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation, "allowPrivilegeEscalation: false"},
					{sc.Privileged == nil || !*sc.Privileged, "not privileged"},
					{sc.Capabilities != nil && slices.Contains(sc.Capabilities.Drop, "ALL") && len(sc.Capabilities.Add) == 0, "capabilities: drop ALL, add none"},
					{sc.SeccompProfile != nil && sc.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault, "seccompProfile: RuntimeDefault"},
				}
				for _, ch := range checks {
					if !ch.ok {
						t.Errorf("%s/%s: securityContext lacks %s", d.Name, c.Name, ch.what)
					}
				}
				for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
					req, lim := c.Resources.Requests[res], c.Resources.Limits[res]
					switch {
					case req.IsZero():
						t.Errorf("%s/%s: no %s request", d.Name, c.Name, res)
					case lim.IsZero():
						t.Errorf("%s/%s: no %s limit", d.Name, c.Name, res)
					case req.Cmp(lim) > 0:
						t.Errorf("%s/%s: %s request %s above its limit %s", d.Name, c.Name, res, req.String(), lim.String())
					}
				}
			}
		}
	})
}

// Every Deployment has exactly one PodDisruptionBudget, which selects its
// pods and no other Deployment's, and lets a node drain go on (one pod at
// a time) whatever the replicas.
func TestEveryDeploymentHasADisruptionBudget(t *testing.T) {
	forEachKustomization(t, func(t *testing.T, m *manifests) {
		for _, d := range m.deployments {
			var budgets []string
			for _, p := range m.pdbs {
				sel := m.selected(t, p.Spec.Selector)
				if !slices.Contains(sel, d.Name) {
					continue
				}
				budgets = append(budgets, p.Name)
				if len(sel) != 1 {
					t.Errorf("PodDisruptionBudget %s selects the pods of %v, want one Deployment's", p.Name, sel)
				}
				if p.Spec.MinAvailable != nil || p.Spec.MaxUnavailable == nil || p.Spec.MaxUnavailable.IntValue() < 1 {
					t.Errorf("PodDisruptionBudget %s: want maxUnavailable of at least 1, so a single replica does not block a drain", p.Name)
				}
			}
			if len(budgets) != 1 {
				t.Errorf("%s has PodDisruptionBudgets %v, want one", d.Name, budgets)
			}
		}
	})
}

// ingest scales on CPU through its HorizontalPodAutoscaler, which owns its
// replica count: the Deployment sets none (an apply would reset the
// autoscaler's choice), and its container requests CPU (utilization is a
// share of the request).
func TestIngestAutoscalesOnCPU(t *testing.T) {
	forEachKustomization(t, func(t *testing.T, m *manifests) {
		d := m.role(t, "ingest")
		var hpa *autoscalingv2.HorizontalPodAutoscaler
		for _, h := range m.hpas {
			ref := h.Spec.ScaleTargetRef
			if ref.APIVersion != "apps/v1" || ref.Kind != "Deployment" || roleOf(m, ref.Name) == "" {
				t.Errorf("HorizontalPodAutoscaler %s scales %s %s %s, which the manifests do not hold", h.Name, ref.APIVersion, ref.Kind, ref.Name)
			}
			if ref.Name == d.Name {
				hpa = h
			}
		}
		if hpa == nil {
			t.Fatalf("no HorizontalPodAutoscaler scales %s", d.Name)
		}
		if d.Spec.Replicas != nil {
			t.Errorf("%s sets replicas %d, which would fight its autoscaler", d.Name, *d.Spec.Replicas)
		}
		if min := hpa.Spec.MinReplicas; min == nil || *min < 2 || hpa.Spec.MaxReplicas < *min {
			t.Errorf("HorizontalPodAutoscaler %s: replicas %s to %d, want at least 2, up to no fewer", hpa.Name, show(min), hpa.Spec.MaxReplicas)
		}
		var cpu bool
		for _, mt := range hpa.Spec.Metrics {
			cpu = cpu || mt.Type == autoscalingv2.ResourceMetricSourceType && mt.Resource != nil && mt.Resource.Name == corev1.ResourceCPU &&
				mt.Resource.Target.Type == autoscalingv2.UtilizationMetricType && mt.Resource.Target.AverageUtilization != nil
		}
		if !cpu {
			t.Errorf("HorizontalPodAutoscaler %s does not scale on CPU utilization", hpa.Name)
		}
		if req := container(t, d).Resources.Requests[corev1.ResourceCPU]; req.IsZero() {
			t.Errorf("%s requests no CPU: its utilization is undefined", d.Name)
		}
	})
}

// The grace period before a pod is killed covers its role's shutdown: for
// ingest the preStop pause, http.drain_delay and http.shutdown_timeout of
// its config (then the producers flush within the same bound); for process
// the longest a transaction in flight may take (a minute; the at-least-once
// flush takes at most 30s); for sink the batch in flight (at most 10s) and
// its commit (10s).
func TestGracePeriodCoversShutdown(t *testing.T) {
	forEachKustomization(t, func(t *testing.T, m *manifests) {
		for role, bound := range map[string]func(*config.Config, *corev1.Container) time.Duration{
			"ingest": func(cfg *config.Config, c *corev1.Container) time.Duration {
				var pause time.Duration
				if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
					pause = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
				}
				if pause == 0 {
					t.Errorf("ingest: no preStop pause: the Service may send requests after the listener closed")
				}
				return pause + *cfg.HTTP.DrainDelay + cfg.HTTP.ShutdownTimeout
			},
			"process": func(*config.Config, *corev1.Container) time.Duration { return time.Minute },
			"sink":    func(*config.Config, *corev1.Container) time.Duration { return 20 * time.Second },
			"console": func(*config.Config, *corev1.Container) time.Duration { return 0 },
		} {
			d := m.role(t, role)
			cfg, _ := m.roleConfig(t, d)
			want := bound(cfg, container(t, d))
			g := d.Spec.Template.Spec.TerminationGracePeriodSeconds
			if g == nil || time.Duration(*g)*time.Second <= want {
				t.Errorf("%s: terminationGracePeriodSeconds %s, want above %s", d.Name, show(g), want)
			}
		}
	})
}

// The process role knows its pod's name from the downward API, for static
// group membership.
func TestProcessKnowsItsPodName(t *testing.T) {
	forEachKustomization(t, func(t *testing.T, m *manifests) {
		c := container(t, m.role(t, "process"))
		for _, e := range c.Env {
			if e.Name == "POD_NAME" {
				if e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "metadata.name" {
					t.Fatalf("POD_NAME is %+v, want the downward API's metadata.name", e)
				}
				return
			}
		}
		t.Fatal("the process container has no POD_NAME")
	})
}

// The example overlay puts everything in its namespace, which it creates
// under the restricted Pod Security Standard; runs a pinned image from a
// registry; sets the replicas it says; and holds only Secret values that
// say they are examples.
func TestExampleOverlay(t *testing.T) {
	m := render(t, "kubernetes/overlays/example")
	if len(m.namespaces) != 1 {
		t.Fatalf("%d Namespaces, want 1", len(m.namespaces))
	}
	ns := m.namespaces[0]
	if ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
		t.Errorf("Namespace %s does not enforce the restricted Pod Security Standard", ns.Name)
	}
	var objs []interface {
		GetNamespace() string
		GetName() string
	}
	for _, d := range m.deployments {
		objs = append(objs, d)
	}
	for _, o := range m.services {
		objs = append(objs, o)
	}
	for _, o := range m.configMaps {
		objs = append(objs, o)
	}
	for _, o := range m.secrets {
		objs = append(objs, o)
	}
	for _, o := range m.serviceAccounts {
		objs = append(objs, o)
	}
	for _, o := range m.hpas {
		objs = append(objs, o)
	}
	for _, o := range m.pdbs {
		objs = append(objs, o)
	}
	for _, o := range objs {
		if o.GetNamespace() != ns.Name {
			t.Errorf("%s is in namespace %q, want %q", o.GetName(), o.GetNamespace(), ns.Name)
		}
	}
	for _, d := range m.deployments {
		img := container(t, d).Image
		name, tag, ok := strings.Cut(path.Base(img), ":")
		if !strings.Contains(img, "/") || !ok || tag == "" || tag == "latest" || name != "productstream" {
			t.Errorf("%s runs image %q, want the registry's productstream at a pinned tag", d.Name, img)
		}
		if d.Spec.Template.Spec.ServiceAccountName != "productstream" {
			t.Errorf("%s runs as service account %q", d.Name, d.Spec.Template.Spec.ServiceAccountName)
		}
	}
	if r := m.role(t, "process").Spec.Replicas; r == nil || *r != 3 {
		t.Errorf("process replicas %s, want the overlay's 3", show(r))
	}
	if len(m.secrets) != 1 {
		t.Fatalf("%d Secrets, want 1", len(m.secrets))
	}
	for k, v := range m.secrets[0].Data {
		if !strings.Contains(string(v), "EXAMPLE") {
			t.Errorf("Secret value %s is not marked as an example", k)
		}
	}
}

// show prints what an optional field points at, or "unset".
func show[T any](p *T) string {
	if p == nil {
		return "unset"
	}
	return fmt.Sprint(*p)
}
