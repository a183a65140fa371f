package stack_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/stack"
)

// testImage maps the images of the tutorials to local test images, as the
// end-to-end tests do (there is no registry).
func testImage(image string) string {
	return "shoal.test/" + strings.NewReplacer("/", "-", ":", "-").Replace(image) + ":test"
}

func load(t *testing.T, name, content string, env map[string]string) (*stack.Stack, error) {
	t.Helper()
	return stack.Load(context.Background(), name, []stack.File{{Name: "compose.yml", Content: []byte(content)}},
		stack.Options{Env: env, MapImage: testImage, WorkingDir: t.TempDir()})
}

func mustLoad(t *testing.T, name, content string, env map[string]string) *stack.Stack {
	t.Helper()
	st, err := load(t, name, content, env)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return st
}

func loadTutorial(t *testing.T, file, name string, env map[string]string) (*stack.Stack, error) {
	t.Helper()
	return stack.Load(context.Background(), name, []stack.File{{Name: filepath.Join("testdata", "tutorials", file)}},
		stack.Options{Env: env, MapImage: testImage})
}

// The tutorial files are kept as printed in testdata; they are the ones
// of the project's shared folder.
func TestTutorialFilesAreTheShared(t *testing.T) {
	shared := filepath.Join("..", "..", "..", "shared", "stacks")
	entries, err := os.ReadDir(shared)
	if err != nil {
		t.Skipf("no shared folder here: %v", err)
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".yml") {
			continue
		}
		want, _ := os.ReadFile(filepath.Join(shared, e.Name()))
		got, err := os.ReadFile(filepath.Join("testdata", "tutorials", e.Name()))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("testdata/tutorials/%s differs from the shared %s (copy it again): %v", e.Name(), e.Name(), err)
		}
	}
}

var tutorialEnv = map[string]string{"NGINX_REPLICAS": "2", "WEBAPP_REPLICAS": "5"}

// Every tutorial file loads as written (but the misprinted one), and every
// spec passes the API's validation.
func TestTutorialsLoadAsWritten(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("testdata", "tutorials", "*.yml"))
	if len(files) < 7 {
		t.Fatalf("found %d tutorial files", len(files))
	}
	for _, f := range files {
		base := filepath.Base(f)
		t.Run(base, func(t *testing.T) {
			st, err := loadTutorial(t, base, "tut", tutorialEnv)
			if base == "seed-pets-as-printed.yml" {
				if err == nil {
					t.Fatal("the misprinted file loaded")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(st.Services) == 0 {
				t.Fatal("no services")
			}
			for _, s := range st.Services {
				if err := s.Validate(); err != nil {
					t.Errorf("service %s: %v", s.Name, err)
				}
				if s.Labels[stack.LabelNamespace] != "tut" || s.TaskTemplate.Labels[stack.LabelNamespace] != "tut" {
					t.Errorf("service %s: labels %v, container labels %v", s.Name, s.Labels, s.TaskTemplate.Labels)
				}
				if img := s.Labels[stack.LabelImage]; s.TaskTemplate.Image != testImage(img) {
					t.Errorf("service %s runs %q for the file's %q", s.Name, s.TaskTemplate.Image, img)
				}
			}
			for _, n := range st.Networks {
				if err := n.Validate(); err != nil {
					t.Errorf("network %s: %v", n.Name, err)
				}
				if n.Labels[stack.LabelNamespace] != "tut" || n.Driver != "overlay" {
					t.Errorf("network %+v", n)
				}
			}
		})
	}
}

func replicas(t *testing.T, s *api.ServiceSpec) uint64 {
	t.Helper()
	if s.Mode.Replicated == nil {
		t.Fatalf("service %s is not replicated: %+v", s.Name, s.Mode)
	}
	return s.Mode.Replicated.Replicas
}

func svc(t *testing.T, st *stack.Stack, name string) *api.ServiceSpec {
	t.Helper()
	s := st.Service(name)
	if s == nil {
		var names []string
		for _, s := range st.Services {
			names = append(names, s.Name)
		}
		t.Fatalf("no service %s in %v", name, names)
	}
	return s
}

func networkNames(st *stack.Stack) []string {
	var out []string
	for _, n := range st.Networks {
		out = append(out, n.Name)
	}
	return out
}

func targets(s *api.ServiceSpec) []string {
	var out []string
	for _, n := range s.TaskTemplate.Networks {
		out = append(out, n.Target+"("+strings.Join(n.Aliases, ",")+")")
	}
	return out
}

func ports(s *api.ServiceSpec) []string {
	if s.EndpointSpec == nil {
		return nil
	}
	var out []string
	for _, p := range s.EndpointSpec.Ports {
		out = append(out, strings.Join([]string{itoa(p.PublishedPort), itoa(p.TargetPort), string(p.Protocol), string(p.PublishMode)}, "/"))
	}
	return out
}

func itoa(n uint32) string { return strconv.FormatUint(uint64(n), 10) }

func eq[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

func eqs[T comparable](t *testing.T, what string, got, want []T) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

func TestTutorialWeb5Replicas(t *testing.T) {
	st, err := loadTutorial(t, "seed-web-5-replicas.yml", "getstartedlab", nil)
	if err != nil {
		t.Fatal(err)
	}
	web := svc(t, st, "getstartedlab_web")
	eq(t, "replicas", replicas(t, web), 5)
	eq(t, "image", web.TaskTemplate.Image, testImage("username/repo:tag"))
	eq(t, "image label", web.Labels[stack.LabelImage], "username/repo:tag")
	lim := web.TaskTemplate.Resources.Limits
	eq(t, "cpu limit", lim.NanoCPUs, 100_000_000)
	eq(t, "memory limit", lim.MemoryBytes, 50<<20)
	eq(t, "restart", web.TaskTemplate.RestartPolicy.Condition, api.RestartOnFailure)
	eqs(t, "ports", ports(web), []string{"4000/80/tcp/ingress"})
	eqs(t, "networks", targets(web), []string{"getstartedlab_webnet(web)"})
	eqs(t, "stack networks", networkNames(st), []string{"getstartedlab_webnet"})
	if web.UpdateConfig != nil || web.TaskTemplate.Placement != nil || len(web.TaskTemplate.Secrets) > 0 {
		t.Errorf("update %+v placement %+v secrets %+v", web.UpdateConfig, web.TaskTemplate.Placement, web.TaskTemplate.Secrets)
	}
	if len(st.Warnings) != 0 {
		t.Errorf("warnings: %v", st.Warnings)
	}
}

func TestTutorialHTTPD(t *testing.T) {
	v1, err := loadTutorial(t, "seed-httpd-v1.yml", "httpd", nil)
	if err != nil {
		t.Fatal(err)
	}
	web := svc(t, v1, "httpd_web")
	eq(t, "replicas", replicas(t, web), 3)
	eq(t, "image", web.TaskTemplate.Image, testImage("httpd:v1"))
	eq(t, "mounts", len(web.TaskTemplate.Mounts), 1)
	eq(t, "mount", web.TaskTemplate.Mounts[0], api.Mount{Type: api.MountBind, Source: "/var/www/html", Target: "/usr/local/apache2/htdocs"})
	eq(t, "cpu limit", web.TaskTemplate.Resources.Limits.NanoCPUs, 500_000_000)
	eq(t, "memory limit", web.TaskTemplate.Resources.Limits.MemoryBytes, 256<<20)
	eqs(t, "ports", ports(web), []string{"7080/80/tcp/ingress"})
	eqs(t, "networks", targets(web), []string{"httpd_default(web)"})
	eqs(t, "stack networks", networkNames(v1), []string{"httpd_default"})
	if web.UpdateConfig != nil {
		t.Errorf("v1 update config %+v", web.UpdateConfig)
	}

	v2, err := loadTutorial(t, "seed-httpd-v2.yml", "httpd", nil)
	if err != nil {
		t.Fatal(err)
	}
	web2 := svc(t, v2, "httpd_web")
	eq(t, "image", web2.TaskTemplate.Image, testImage("httpd:v2"))
	eq(t, "update config", *web2.UpdateConfig, api.UpdateConfig{Parallelism: 2, Delay: 30 * time.Second})
	eq(t, "replicas", replicas(t, web2), 3)
	eq(t, "mount", web2.TaskTemplate.Mounts[0], web.TaskTemplate.Mounts[0])
}

func TestTutorialProdWithVariables(t *testing.T) {
	st, err := loadTutorial(t, "seed-prod-with-variables.yml", "frontend", tutorialEnv)
	if err != nil {
		t.Fatal(err)
	}
	webapp, proxy := svc(t, st, "frontend_webapp"), svc(t, st, "frontend_proxy")
	eq(t, "webapp replicas", replicas(t, webapp), 5)
	eq(t, "proxy replicas", replicas(t, proxy), 2)
	eqs(t, "proxy ports", ports(proxy), []string{"80/80/tcp/ingress", "443/443/tcp/ingress"})
	eqs(t, "webapp ports", ports(webapp), nil)
	eq(t, "restart", webapp.TaskTemplate.RestartPolicy.Condition, api.RestartOnFailure)
	// Docker refuses to attach services to its routing mesh's network by
	// name; Shoal attaches them to the stack's default network instead,
	// where they reach each other by name, and says so.
	eqs(t, "webapp networks", targets(webapp), []string{"frontend_default(webapp)"})
	eqs(t, "proxy networks", targets(proxy), []string{"frontend_default(proxy)"})
	eqs(t, "stack networks", networkNames(st), []string{"frontend_default"})
	eqs(t, "external networks", st.ExternalNetworks, nil)
	if len(st.Warnings) != 2 {
		t.Fatalf("warnings %v", st.Warnings)
	}
	for _, w := range st.Warnings {
		if !strings.HasSuffix(w.Path, ".networks.ingress") || !strings.Contains(w.Message, "routing mesh") || !strings.Contains(w.Message, "frontend_default") {
			t.Errorf("warning %q", w)
		}
	}

	// Without the variables: a clear error naming both.
	_, err = loadTutorial(t, "seed-prod-with-variables.yml", "frontend", nil)
	if !errors.Is(err, stack.ErrMissingVariable) {
		t.Fatalf("without variables: %v", err)
	}
	for _, want := range []string{"WEBAPP_REPLICAS", "NGINX_REPLICAS", "services.webapp.deploy.replicas", "services.proxy.deploy.replicas"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
}

func TestTutorialWhoami(t *testing.T) {
	st, err := loadTutorial(t, "seed-whoami.yml", "sample", nil)
	if err != nil {
		t.Fatal(err)
	}
	w := svc(t, st, "sample_whoami")
	eq(t, "replicas", replicas(t, w), 6)
	eq(t, "update config", *w.UpdateConfig, api.UpdateConfig{Parallelism: 2, Delay: 10 * time.Second})
	eq(t, "label app", w.Labels["app"], "sample-app")
	eq(t, "label environment", w.Labels["environment"], "prod-south")
	if _, ok := w.TaskTemplate.Labels["app"]; ok {
		t.Error("deploy labels are the service's, not the containers'")
	}
	eqs(t, "ports", ports(w), []string{"81/8000/tcp/ingress"})
	eqs(t, "networks", targets(w), []string{"sample_test-net(whoami)"})
	eqs(t, "stack networks", networkNames(st), []string{"sample_test-net"})
}

func TestTutorialPets(t *testing.T) {
	st, err := loadTutorial(t, "seed-pets.yml", "pets", nil)
	if err != nil {
		t.Fatal(err)
	}
	web, db := svc(t, st, "pets_web"), svc(t, st, "pets_db")
	eq(t, "web replicas", replicas(t, web), 3)
	eq(t, "db replicas", replicas(t, db), 1)
	eqs(t, "web ports", ports(web), []string{"3000/3000/tcp/ingress"})
	// Both on the one network, each reachable by its name in the file.
	eqs(t, "web networks", targets(web), []string{"pets_pets-net(web)"})
	eqs(t, "db networks", targets(db), []string{"pets_pets-net(db)"})
	eqs(t, "stack networks", networkNames(st), []string{"pets_pets-net"})
	eq(t, "db mount", db.TaskTemplate.Mounts[0], api.Mount{Type: api.MountVolume, Source: "pets_pets-data", Target: "/var/lib/postgresql/data"})
}

func TestTutorialPetsAsPrinted(t *testing.T) {
	_, err := loadTutorial(t, "seed-pets-as-printed.yml", "pets", nil)
	if !errors.Is(err, stack.ErrInvalidFile) {
		t.Fatalf("err = %v, want ErrInvalidFile", err)
	}
	// compose-go's message names the file and the key; Shoal adds what the
	// misprint is.
	for _, want := range []string{"seed-pets-as-printed.yml", "networks.driver must be a mapping", `"driver" is an attribute of a network, not a network name`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}
