package deploy

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/ingest"
)

// composeFile is docker-compose.yml, every key it may hold named, so that
// a misspelt key fails the decode.
type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]yaml.Node      `yaml:"volumes"`
}

type composeService struct {
	Image string `yaml:"image"`
	Build *struct {
		Context    string `yaml:"context"`
		Dockerfile string `yaml:"dockerfile"`
	} `yaml:"build"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Ports       []string          `yaml:"ports"`
	Volumes     []string          `yaml:"volumes"`
	ReadOnly    bool              `yaml:"read_only"`
	CapDrop     []string          `yaml:"cap_drop"`
	SecurityOpt []string          `yaml:"security_opt"`
	Healthcheck yaml.Node         `yaml:"healthcheck"`
	DependsOn   map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Restart string `yaml:"restart"`
}

// composeRoles are the productstream services of docker-compose.yml and
// the roles they run.
var composeRoles = map[string]string{"ingest": "ingest", "process": "process"}

// composeVar is compose's ${NAME:-default} (or ${NAME}) in a value.
var composeVar = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}`)

func readCompose(t *testing.T) composeFile {
	t.Helper()
	data, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var f composeFile
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return f
}

// composePorts splits a ports entry, [HOST_IP:]HOST_PORT:CONTAINER_PORT.
func composePorts(t *testing.T, p string) (hostIP, container string) {
	t.Helper()
	parts := strings.Split(p, ":")
	switch len(parts) {
	case 2:
		return "", parts[1]
	case 3:
		return parts[0], parts[2]
	}
	t.Fatalf("ports entry %q: want [HOST_IP:]HOST_PORT:CONTAINER_PORT", p)
	return "", ""
}

// docker-compose.yml runs each role from the image deploy/Dockerfile builds
// with the config file it mounts, and that config, with the environment
// the service passes (the defaults compose gives), loads and passes the
// role's checks. The ports it publishes are the config's: the webhook port
// of http.listen, and the operations listener of ops.listen on the host's
// loopback only. The containers run read-only, without capabilities.
func TestComposeRunsItsConfig(t *testing.T) {
	f := readCompose(t)
	for svcName, role := range composeRoles {
		t.Run(svcName, func(t *testing.T) {
			s, ok := f.Services[svcName]
			if !ok {
				t.Fatalf("docker-compose.yml has no service %s", svcName)
			}
			if s.Build == nil || filepath.Join(s.Build.Context, s.Build.Dockerfile) != "deploy/Dockerfile" {
				t.Errorf("builds %+v, want deploy/Dockerfile", s.Build)
			}
			if len(s.Command) == 0 || s.Command[0] != role {
				t.Errorf("command %q, want the %s role", s.Command, role)
			}
			i := slices.Index(s.Command, "--config")
			if i < 0 || i+1 == len(s.Command) {
				t.Fatalf("command %q has no --config FILE", s.Command)
			}
			var source string
			for _, v := range s.Volumes {
				parts := strings.Split(v, ":")
				if len(parts) >= 2 && parts[1] == s.Command[i+1] {
					source = parts[0]
					if len(parts) != 3 || parts[2] != "ro" {
						t.Errorf("volume %q: mount the config read-only", v)
					}
				}
			}
			if source == "" {
				t.Fatalf("no volume mounts %s, the file --config names", s.Command[i+1])
			}
			data, err := os.ReadFile(filepath.Join("..", source))
			if err != nil {
				t.Fatal(err)
			}
			env := map[string]string{}
			for k, v := range s.Environment {
				env[k] = composeVar.ReplaceAllStringFunc(v, func(ref string) string {
					return composeVar.FindStringSubmatch(ref)[2]
				})
			}
			cfg, err := config.Parse(data, func(name string) (string, bool) {
				v, ok := env[name]
				return v, ok
			})
			if err != nil {
				t.Fatalf("%s with the service's environment: %v", source, err)
			}
			if err := cfg.Validate(roles[role]); err != nil {
				t.Fatalf("%s: invalid for the %s role: %v", source, role, err)
			}
			if role == "ingest" {
				if _, err := ingest.NewSources(cfg.Sources, ingest.Deps{Log: slog.New(slog.DiscardHandler)}); err != nil {
					t.Fatalf("%s: the sources do not build: %v", source, err)
				}
			}
			for _, b := range cfg.Kafka.Brokers {
				if host := strings.Split(b, ":")[0]; f.Services[host].Image == "" {
					t.Errorf("kafka.brokers names %s, which is not a service of docker-compose.yml", b)
				}
				if _, ok := s.DependsOn[strings.Split(b, ":")[0]]; !ok {
					t.Errorf("%s does not wait for %s", svcName, b)
				}
			}
			ops := strconv.Itoa(int(portOf(t, "ops.listen", cfg.Ops.Listen)))
			webhook := strconv.Itoa(int(portOf(t, "http.listen", cfg.HTTP.Listen)))
			want := map[string]bool{ops: true}
			if role == "ingest" {
				want[webhook] = true
			}
			got := map[string]bool{}
			for _, p := range s.Ports {
				hostIP, container := composePorts(t, p)
				got[container] = true
				switch container {
				case ops:
					if hostIP != "127.0.0.1" {
						t.Errorf("ports %q publishes the operations listener beyond the host's loopback", p)
					}
				case webhook:
				default:
					t.Errorf("ports %q: container port %s is neither http.listen's nor ops.listen's", p, container)
				}
			}
			for p := range want {
				if !got[p] {
					t.Errorf("port %s of the config is not published (ports %q)", p, s.Ports)
				}
			}
			if !s.ReadOnly || !slices.Contains(s.CapDrop, "ALL") || !slices.Contains(s.SecurityOpt, "no-new-privileges:true") {
				t.Errorf("read_only %v, cap_drop %q, security_opt %q: want read-only, ALL dropped and no-new-privileges", s.ReadOnly, s.CapDrop, s.SecurityOpt)
			}
		})
	}
}
