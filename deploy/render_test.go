package deploy

import (
	"maps"
	"net"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"testing"

	"gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/productstream/productstream/config"
)

// kustomizations are the directories the tests render: the base on its own
// and the example overlay.
var kustomizations = []string{"kubernetes/base", "kubernetes/overlays/example"}

// manifests are the objects one kustomization renders, decoded into the
// Kubernetes API's types.
type manifests struct {
	dir             string
	deployments     []*appsv1.Deployment
	services        []*corev1.Service
	configMaps      []*corev1.ConfigMap
	secrets         []*corev1.Secret
	namespaces      []*corev1.Namespace
	serviceAccounts []*corev1.ServiceAccount
	hpas            []*autoscalingv2.HorizontalPodAutoscaler
	pdbs            []*policyv1.PodDisruptionBudget
}

// strictDecoder decodes YAML into the API types of the kinds the manifests
// may hold, and refuses unknown and duplicate fields (matched case
// sensitively), as the API server's strict field validation does. A kind or
// version not registered here (autoscaling/v1, policy/v1beta1) is an error.
var strictDecoder = func() runtime.Decoder {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme, autoscalingv2.AddToScheme} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, s, s, kjson.SerializerOptions{Yaml: true, Strict: true})
}()

// decodeStrict decodes one object's YAML.
func decodeStrict(data []byte) (runtime.Object, error) {
	obj, _, err := strictDecoder.Decode(data, nil, nil)
	return obj, err
}

// render builds the kustomization in dir and decodes every object it
// yields strictly into its API type.
func render(t *testing.T, dir string) *manifests {
	t.Helper()
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	rm, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), abs)
	if err != nil {
		t.Fatalf("render %s: %v", dir, err)
	}
	m := &manifests{dir: dir}
	for _, r := range rm.Resources() {
		data, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		obj, err := decodeStrict(data)
		if err != nil {
			t.Fatalf("%s: %s %s: %v", dir, r.GetKind(), r.GetName(), err)
		}
		switch o := obj.(type) {
		case *appsv1.Deployment:
			m.deployments = append(m.deployments, o)
		case *corev1.Service:
			m.services = append(m.services, o)
		case *corev1.ConfigMap:
			m.configMaps = append(m.configMaps, o)
		case *corev1.Secret:
			m.secrets = append(m.secrets, o)
		case *corev1.Namespace:
			m.namespaces = append(m.namespaces, o)
		case *corev1.ServiceAccount:
			m.serviceAccounts = append(m.serviceAccounts, o)
		case *autoscalingv2.HorizontalPodAutoscaler:
			m.hpas = append(m.hpas, o)
		case *policyv1.PodDisruptionBudget:
			m.pdbs = append(m.pdbs, o)
		default:
			t.Fatalf("%s: %s %s: a kind the tests do not check", dir, r.GetKind(), r.GetName())
		}
	}
	return m
}

// forEachKustomization runs f on each rendered kustomization as a subtest.
func forEachKustomization(t *testing.T, f func(t *testing.T, m *manifests)) {
	for _, dir := range kustomizations {
		t.Run(dir, func(t *testing.T) { f(t, render(t, dir)) })
	}
}

// roles are the roles the manifests run, each with what its configuration
// must hold, as the role checks it at start.
var roles = map[string]config.Needs{
	"ingest":  {Brokers: true, Registry: true, Sources: true},
	"process": {Brokers: true, Registry: true},
	"sink":    {Brokers: true, Registry: true},
	"console": {Brokers: true, Registry: true},
}

// componentLabel names a pod's role.
const componentLabel = "app.kubernetes.io/component"

// role returns the Deployment of the role, failing the test without one.
func (m *manifests) role(t *testing.T, name string) *appsv1.Deployment {
	t.Helper()
	for _, d := range m.deployments {
		if d.Spec.Template.Labels[componentLabel] == name {
			return d
		}
	}
	t.Fatalf("%s: no Deployment of the %s role", m.dir, name)
	return nil
}

// container returns the Deployment's one container.
func container(t *testing.T, d *appsv1.Deployment) *corev1.Container {
	t.Helper()
	if n := len(d.Spec.Template.Spec.Containers); n != 1 {
		t.Fatalf("Deployment %s has %d containers, want 1", d.Name, n)
	}
	return &d.Spec.Template.Spec.Containers[0]
}

// mountOf returns the container's mount of the pod volume that vol
// selects, failing the test without exactly one.
func mountOf(t *testing.T, d *appsv1.Deployment, c *corev1.Container, what string, vol func(corev1.Volume) bool) (corev1.VolumeMount, corev1.Volume) {
	t.Helper()
	var found []corev1.VolumeMount
	var volume corev1.Volume
	for _, v := range d.Spec.Template.Spec.Volumes {
		if !vol(v) {
			continue
		}
		for _, vm := range c.VolumeMounts {
			if vm.Name == v.Name {
				found, volume = append(found, vm), v
			}
		}
	}
	if len(found) != 1 {
		t.Fatalf("Deployment %s: container %s has %d mounts of %s, want 1", d.Name, c.Name, len(found), what)
	}
	return found[0], volume
}

func isConfigMap(v corev1.Volume) bool { return v.ConfigMap != nil }
func isSecret(v corev1.Volume) bool    { return v.Secret != nil }

// configArg returns the path the container's --config flag names.
func configArg(t *testing.T, c *corev1.Container) string {
	t.Helper()
	args := slices.Concat(c.Command, c.Args)
	i := slices.Index(args, "--config")
	if i < 0 || i+1 == len(args) {
		t.Fatalf("container %s: no --config FILE in %q", c.Name, args)
	}
	return args[i+1]
}

// configText returns the text of the configuration file the Deployment's
// container reads: the key of the mounted ConfigMap that --config names.
func (m *manifests) configText(t *testing.T, d *appsv1.Deployment) string {
	t.Helper()
	c := container(t, d)
	file := configArg(t, c)
	vm, v := mountOf(t, d, c, "a ConfigMap", isConfigMap)
	if path.Dir(file) != vm.MountPath {
		t.Fatalf("Deployment %s: --config %s is not in the ConfigMap's mount %s", d.Name, file, vm.MountPath)
	}
	for _, cm := range m.configMaps {
		if cm.Name == v.ConfigMap.Name {
			text, ok := cm.Data[path.Base(file)]
			if !ok {
				t.Fatalf("Deployment %s: ConfigMap %s has no key %s (--config %s)", d.Name, cm.Name, path.Base(file), file)
			}
			return text
		}
	}
	t.Fatalf("Deployment %s mounts ConfigMap %s, which the manifests do not hold", d.Name, v.ConfigMap.Name)
	return ""
}

// fileRef is a ${file:PATH} reference of the configuration.
var fileRef = regexp.MustCompile(`\$\{file:([^}]*)\}`)

// secretValues returns the values of the Secret the Deployment mounts, by
// key. The base holds no Secret (an overlay does): there each key the
// configuration references gets a dummy value, long enough for a console
// token.
func (m *manifests) secretValues(t *testing.T, d *appsv1.Deployment) map[string]string {
	t.Helper()
	_, v := mountOf(t, d, container(t, d), "a Secret", isSecret)
	for _, s := range m.secrets {
		if s.Name == v.Secret.SecretName {
			out := map[string]string{}
			for k, b := range s.Data {
				out[k] = string(b)
			}
			maps.Copy(out, s.StringData)
			return out
		}
	}
	if len(m.secrets) > 0 {
		t.Fatalf("Deployment %s mounts Secret %s, which the manifests do not hold", d.Name, v.Secret.SecretName)
	}
	out := map[string]string{}
	rewriteRefs(t, m.configText(t, d), func(p string) string {
		key := path.Base(p)
		out[key] = "dummy-" + key + "-0123456789abcdef0123456789abcdef"
		return p
	})
	return out
}

// rewriteRefs returns the configuration text with the path of every
// ${file:PATH} reference in a value (not in a comment, as the loader reads
// them) replaced by what rewrite returns for it.
func rewriteRefs(t *testing.T, text string, rewrite func(path string) string) string {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		t.Fatalf("the configuration is not YAML: %v", err)
	}
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if n.Kind == yaml.ScalarNode {
			n.Value = fileRef.ReplaceAllStringFunc(n.Value, func(ref string) string {
				return "${file:" + rewrite(fileRef.FindStringSubmatch(ref)[1]) + "}"
			})
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(&doc)
	out, err := yaml.Marshal(&doc)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// roleConfig loads the configuration the Deployment's container reads, as
// it would in the pod: its ${file:...} references read the Secret's
// values from files (written to a directory that stands for the Secret's
// mount), and its ${NAME} references the container's environment. It
// fails the test when a reference names a file outside the Secret's mount
// or a key the Secret does not hold, or an environment variable the
// container does not set. It returns the configuration and the values the
// references read.
func (m *manifests) roleConfig(t *testing.T, d *appsv1.Deployment) (*config.Config, []string) {
	t.Helper()
	c := container(t, d)
	text := m.configText(t, d)
	vm, _ := mountOf(t, d, c, "a Secret", isSecret)
	values := m.secretValues(t, d)
	dir := t.TempDir()
	for k, v := range values {
		if err := os.WriteFile(filepath.Join(dir, k), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var read []string
	bad := false
	text = rewriteRefs(t, text, func(p string) string {
		if path.Dir(p) != vm.MountPath {
			bad = true
			t.Errorf("Deployment %s: ${file:%s} is not in the Secret's mount %s", d.Name, p, vm.MountPath)
			return p
		}
		v, ok := values[path.Base(p)]
		if !ok {
			bad = true
			t.Errorf("Deployment %s: ${file:%s} names no key of the Secret (keys: %v)", d.Name, p, slices.Sorted(maps.Keys(values)))
			return p
		}
		read = append(read, v)
		return filepath.Join(dir, path.Base(p))
	})
	if bad {
		t.FailNow()
	}
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
		if e.ValueFrom != nil {
			env[e.Name] = "set-by-kubernetes"
		}
	}
	cfg, err := config.Parse([]byte(text), func(name string) (string, bool) {
		v, ok := env[name]
		return v, ok
	})
	if err != nil {
		t.Fatalf("Deployment %s: the configuration does not load: %v", d.Name, err)
	}
	return cfg, read
}

// portOf returns the port of a host:port address.
func portOf(t *testing.T, field, addr string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s %q: %v", field, addr, err)
	}
	n, err := strconv.ParseInt(p, 10, 32)
	if err != nil {
		t.Fatalf("%s %q: %v", field, addr, err)
	}
	return int32(n)
}

// containerPort returns the number of the container's port called name.
func containerPort(c *corev1.Container, name string) (int32, bool) {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort, true
		}
	}
	return 0, false
}

// selects reports whether the label selector sel matches the pods of d.
func selects(t *testing.T, sel *metav1.LabelSelector, d *appsv1.Deployment) bool {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatal(err)
	}
	return !s.Empty() && s.Matches(labels.Set(d.Spec.Template.Labels))
}

// selected returns the Deployments whose pods a selector matches.
func (m *manifests) selected(t *testing.T, sel *metav1.LabelSelector) []string {
	t.Helper()
	var out []string
	for _, d := range m.deployments {
		if selects(t, sel, d) {
			out = append(out, d.Name)
		}
	}
	return out
}
