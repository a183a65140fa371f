package stack_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/stack"
	"github.com/shoalproject/shoal/swarm/stack/stacktest"
)

func deploy(t *testing.T, b stack.Backend, st *stack.Stack, opts stack.DeployOptions) []string {
	t.Helper()
	actions, err := stack.Deploy(context.Background(), b, st, opts)
	if err != nil {
		t.Fatalf("Deploy: %v (after %v)", err, actions)
	}
	return lines(actions)
}

func lines(actions []stack.Action) []string {
	var out []string
	for _, a := range actions {
		s := a.String()
		if i := strings.Index(s, " (id:"); i > 0 {
			s = s[:i]
		}
		out = append(out, s)
	}
	return out
}

// Every tutorial deploys on the fake (which validates every spec and its
// references), and deploying it again changes nothing.
func TestDeployTutorialsTwice(t *testing.T) {
	for _, file := range []string{"seed-web-5-replicas.yml", "seed-httpd-v1.yml", "seed-httpd-v2.yml", "seed-prod-with-variables.yml", "seed-whoami.yml", "seed-pets.yml"} {
		t.Run(file, func(t *testing.T) {
			st, err := loadTutorial(t, file, "tut", tutorialEnv)
			if err != nil {
				t.Fatal(err)
			}
			b := &stacktest.FakeBackend{}
			first := deploy(t, b, st, stack.DeployOptions{})
			writes := b.Writes()
			if len(writes) != len(st.Services)+len(st.Networks) {
				t.Errorf("writes %v", writes)
			}
			for _, l := range first {
				if !strings.HasPrefix(l, "Creating ") {
					t.Errorf("first deploy: %v", first)
				}
			}
			// Deploy the file again, loaded again.
			st2, err := loadTutorial(t, file, "tut", tutorialEnv)
			if err != nil {
				t.Fatal(err)
			}
			second := deploy(t, b, st2, stack.DeployOptions{Prune: true})
			for _, l := range second {
				if !strings.HasPrefix(l, "Unchanged ") {
					t.Errorf("second deploy: %v", second)
				}
			}
			if len(second) != len(first) {
				t.Errorf("second deploy %v, first %v", second, first)
			}
			if got := b.Writes(); !slices.Equal(got, writes) {
				t.Errorf("the second deploy wrote %v", got[len(writes):])
			}
		})
	}
}

// The tutorial's rolling update: v1, then v2 updates the service in
// place (new image, update config), with the version it read.
func TestDeployHTTPDUpdateInPlace(t *testing.T) {
	b := &stacktest.FakeBackend{}
	v1, err := loadTutorial(t, "seed-httpd-v1.yml", "httpd", nil)
	if err != nil {
		t.Fatal(err)
	}
	eqs(t, "v1", deploy(t, b, v1, stack.DeployOptions{}), []string{"Creating network httpd_default", "Creating service httpd_web"})
	before, _ := b.Service(context.Background(), "httpd_web")

	v2, err := loadTutorial(t, "seed-httpd-v2.yml", "httpd", nil)
	if err != nil {
		t.Fatal(err)
	}
	eqs(t, "v2", deploy(t, b, v2, stack.DeployOptions{}), []string{"Unchanged network httpd_default", "Updating service httpd_web"})
	after, _ := b.Service(context.Background(), "httpd_web")
	eq(t, "same service", after.ID, before.ID)
	eq(t, "image", after.Spec.TaskTemplate.Image, testImage("httpd:v2"))
	eq(t, "image label", after.Spec.Labels[stack.LabelImage], "httpd:v2")
	eq(t, "parallelism", after.Spec.UpdateConfig.Parallelism, 2)
	eq(t, "previous image", after.PreviousSpec.TaskTemplate.Image, testImage("httpd:v1"))
	if after.Version <= before.Version {
		t.Errorf("version %d after %d", after.Version, before.Version)
	}
	eqs(t, "writes", b.Writes(), []string{"CreateNetwork httpd_default", "CreateService httpd_web", "UpdateService httpd_web"})
}

// An update that meets another change (a conflict on the version read) or
// a create that loses a race reads again and retries.
func TestDeployRetriesOnConflicts(t *testing.T) {
	st := mustLoad(t, "r", "services:\n  web:\n    image: web:1\n  api:\n    image: api:1\n", nil)
	var conflicts, races atomic.Int32
	b := &stacktest.FakeBackend{Fail: func(call, name string) error {
		switch {
		case call == "CreateService" && name == "r_api" && races.Add(1) <= 2:
			return fmt.Errorf("%w: service %q exists", swarm.ErrNameInUse, name)
		case call == "UpdateService" && conflicts.Add(1) <= 3:
			return fmt.Errorf("%w: version moved", raftstore.ErrConflict)
		}
		return nil
	}}
	eqs(t, "create", deploy(t, b, st, stack.DeployOptions{}), []string{"Creating network r_default", "Creating service r_api", "Creating service r_web"})
	eq(t, "create attempts", races.Load(), 3)

	st2 := mustLoad(t, "r", "services:\n  web:\n    image: web:2\n  api:\n    image: api:1\n", nil)
	eqs(t, "update", deploy(t, b, st2, stack.DeployOptions{}), []string{"Unchanged network r_default", "Unchanged service r_api", "Updating service r_web"})
	eq(t, "update attempts", conflicts.Load(), 4)

	// A service that never stops changing: Deploy gives up, saying why.
	b.Fail = func(call, name string) error {
		if call == "UpdateService" {
			return fmt.Errorf("%w: version moved", raftstore.ErrConflict)
		}
		return nil
	}
	st3 := mustLoad(t, "r", "services:\n  web:\n    image: web:3\n  api:\n    image: api:1\n", nil)
	actions, err := stack.Deploy(context.Background(), b, st3, stack.DeployOptions{})
	if !errors.Is(err, raftstore.ErrConflict) || !strings.Contains(err.Error(), "gave up after 10 attempts") {
		t.Errorf("err = %v", err)
	}
	eqs(t, "done before", lines(actions), []string{"Unchanged network r_default", "Unchanged service r_api"})
}

// A service edited by hand (service update --force) keeps its force
// counter, so a redeploy of the same file is still a no-op.
func TestDeployKeepsForceUpdate(t *testing.T) {
	ctx := context.Background()
	st := mustLoad(t, "f", "services:\n  web:\n    image: web:1\n", nil)
	b := &stacktest.FakeBackend{}
	deploy(t, b, st, stack.DeployOptions{})
	cur, _ := b.Service(ctx, "f_web")
	spec := cur.Spec
	spec.TaskTemplate.ForceUpdate = 3
	if _, err := b.UpdateService(ctx, cur.ID, cur.Version, spec); err != nil {
		t.Fatal(err)
	}
	eqs(t, "redeploy", deploy(t, b, st, stack.DeployOptions{}), []string{"Unchanged network f_default", "Unchanged service f_web"})
	// A scaled service is put back to the file's replicas.
	if _, err := b.UpdateService(ctx, cur.ID, cur.Version+1, func() api.ServiceSpec { s := spec; s.Mode = api.Replicated(9); return s }()); err != nil {
		t.Fatal(err)
	}
	eqs(t, "after a scale", deploy(t, b, st, stack.DeployOptions{}), []string{"Unchanged network f_default", "Updating service f_web"})
	cur, _ = b.Service(ctx, "f_web")
	eq(t, "replicas", cur.Spec.Mode.Replicated.Replicas, 1)
	eq(t, "force counter", cur.Spec.TaskTemplate.ForceUpdate, 3)
}

const objectsFile = `
services:
  web:
    image: web:1
    networks: [front, ext]
    secrets: [pw, ext_secret]
    configs: [conf, ext_config]
networks:
  front:
    attachable: true
  ext:
    external: true
    name: corp-net
secrets:
  pw:
    file: ./pw.txt
  ext_secret:
    external: true
configs:
  conf:
    file: ./conf.txt
  ext_config:
    external: true
`

func loadObjects(t *testing.T, name, pw, conf string) *stack.Stack {
	t.Helper()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"pw.txt": pw, "conf.txt": conf, "compose.yml": objectsFile})
	st, err := stack.Load(context.Background(), name, []stack.File{{Name: filepath.Join(dir, "compose.yml")}}, stack.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func externals(t *testing.T, b stack.Backend) {
	t.Helper()
	ctx := context.Background()
	if _, err := b.CreateNetwork(ctx, api.NetworkSpec{Annotations: api.Annotations{Name: "corp-net"}, Driver: "overlay"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.CreateSecret(ctx, api.SecretSpec{Annotations: api.Annotations{Name: "ext_secret"}, Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.CreateConfig(ctx, api.ConfigSpec{Annotations: api.Annotations{Name: "ext_config"}, Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
}

// Networks, secrets and configs are created before the services that use
// them; the external ones must exist, else nothing is done.
func TestDeployObjectsInOrder(t *testing.T) {
	st := loadObjects(t, "obj", "hunter2", "a=1")
	b := &stacktest.FakeBackend{}

	actions, err := stack.Deploy(context.Background(), b, st, stack.DeployOptions{})
	var ce *stack.ConflictError
	if !errors.As(err, &ce) || !errors.Is(err, stack.ErrNotFound) || !errors.Is(err, stack.ErrConflict) || len(actions) != 0 {
		t.Fatalf("without the external objects: %v, %v", actions, err)
	}
	for _, want := range []string{`network corp-net: is declared as external, but could not be found`, "secret ext_secret: is declared as external", "config ext_config: is declared as external"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	if w := b.Writes(); len(w) != 0 {
		t.Fatalf("wrote %v", w)
	}

	externals(t, b)
	eqs(t, "deploy", deploy(t, b, st, stack.DeployOptions{}), []string{
		"Creating network obj_front", "Creating secret obj_pw", "Creating config obj_conf", "Creating service obj_web"})
	data, _ := b.SecretData("obj_pw")
	eq(t, "secret data", string(data), "hunter2")
	eqs(t, "again", deploy(t, b, loadObjects(t, "obj", "hunter2", "a=1"), stack.DeployOptions{}), []string{
		"Unchanged network obj_front", "Unchanged secret obj_pw", "Unchanged config obj_conf", "Unchanged service obj_web"})

	// Nor can a secret: the cluster does not show its data, the update
	// with the file's data is refused, and the deploy stops there, with
	// the secret as it was.
	n := len(b.Writes())
	_, err = stack.Deploy(context.Background(), b, loadObjects(t, "obj", "hunter3", "a=1"), stack.DeployOptions{})
	if !errors.Is(err, stack.ErrConflict) || !strings.Contains(err.Error(), "secret obj_pw") || !strings.Contains(err.Error(), "a secret cannot change") {
		t.Errorf("changed secret: %v", err)
	}
	if data, _ := b.SecretData("obj_pw"); string(data) != "hunter2" || len(b.Writes()) != n {
		t.Errorf("after a refused secret change: data %q, wrote %v", data, b.Writes()[n:])
	}

	// A config cannot change in place: refused before anything changes.
	_, err = stack.Deploy(context.Background(), b, loadObjects(t, "obj", "hunter2", "a=2"), stack.DeployOptions{})
	if !errors.Is(err, stack.ErrConflict) || !strings.Contains(err.Error(), "config obj_conf: exists with other data") {
		t.Errorf("changed config: %v", err)
	}
	if len(b.Writes()) != n {
		t.Errorf("wrote %v", b.Writes()[n:])
	}
}

// Objects of the stack's names that are not the stack's, or a network
// whose spec changed, stop the deploy before any change.
func TestDeployConflicts(t *testing.T) {
	ctx := context.Background()
	st := mustLoad(t, "c", "services:\n  web:\n    image: web:1\n  api:\n    image: api:1\nnetworks:\n  default:\n    attachable: true\n", nil)

	b := &stacktest.FakeBackend{}
	if _, err := b.CreateService(ctx, api.ServiceSpec{Annotations: api.Annotations{Name: "c_web"}, Mode: api.Replicated(1), TaskTemplate: api.TaskSpec{Image: "other"}}); err != nil {
		t.Fatal(err)
	}
	_, err := stack.Deploy(ctx, b, st, stack.DeployOptions{})
	if !errors.Is(err, stack.ErrConflict) || errors.Is(err, stack.ErrNotFound) || !strings.Contains(err.Error(), "service c_web: exists and is not part of stack c") {
		t.Fatalf("foreign service: %v", err)
	}
	if len(b.Writes()) != 1 {
		t.Errorf("wrote %v", b.Writes())
	}

	b = &stacktest.FakeBackend{}
	deploy(t, b, st, stack.DeployOptions{})
	st2 := mustLoad(t, "c", "services:\n  web:\n    image: web:2\nnetworks:\n  default:\n    driver_opts:\n      encrypted: \"true\"\n", nil)
	n := len(b.Writes())
	_, err = stack.Deploy(ctx, b, st2, stack.DeployOptions{})
	want := "network c_default: exists with another spec (attachable true, the file says false, encrypted false, the file says true)"
	if !errors.Is(err, stack.ErrConflict) || !strings.Contains(err.Error(), want) {
		t.Fatalf("changed network: %v", err)
	}
	if len(b.Writes()) != n {
		t.Errorf("wrote %v", b.Writes()[n:])
	}

	// A stack built by hand that the API would refuse: nothing is written.
	bad := &stack.Stack{Name: "h", Services: []api.ServiceSpec{{Annotations: api.Annotations{Name: "h_web"}, Mode: api.Replicated(1)}}}
	if _, err := stack.Deploy(ctx, b, bad, stack.DeployOptions{}); !errors.Is(err, api.ErrInvalidSpec) || !strings.Contains(err.Error(), "service h_web") {
		t.Errorf("invalid stack: %v", err)
	}
	if _, err := stack.Deploy(ctx, b, nil, stack.DeployOptions{}); err == nil {
		t.Error("nil stack deployed")
	}
	if len(b.Writes()) != n {
		t.Errorf("wrote %v", b.Writes()[n:])
	}
}

// --prune removes the stack's services that the file no longer has, and
// only those.
func TestDeployPrune(t *testing.T) {
	b := &stacktest.FakeBackend{}
	deploy(t, b, mustLoad(t, "p", "services:\n  web:\n    image: web\n  old:\n    image: old\n", nil), stack.DeployOptions{})
	deploy(t, b, mustLoad(t, "other", "services:\n  old:\n    image: old\n", nil), stack.DeployOptions{})
	next := mustLoad(t, "p", "services:\n  web:\n    image: web\n", nil)
	eqs(t, "without prune", deploy(t, b, next, stack.DeployOptions{}), []string{"Unchanged network p_default", "Unchanged service p_web"})
	eqs(t, "with prune", deploy(t, b, next, stack.DeployOptions{Prune: true}), []string{"Unchanged network p_default", "Unchanged service p_web", "Removing service p_old"})
	if _, err := b.Service(context.Background(), "other_old"); err != nil {
		t.Errorf("another stack's service: %v", err)
	}
}

// stack rm removes everything with the stack's label, services first, and
// nothing else: not another stack's objects (even one whose name starts
// the same), not the external objects it used, not unlabelled objects.
func TestRemove(t *testing.T) {
	ctx := context.Background()
	b := &stacktest.FakeBackend{}
	externals(t, b)
	if _, err := b.CreateService(ctx, api.ServiceSpec{Annotations: api.Annotations{Name: "obj_handmade"}, Mode: api.Replicated(1), TaskTemplate: api.TaskSpec{Image: "x"}}); err != nil {
		t.Fatal(err)
	}
	deploy(t, b, loadObjects(t, "obj", "pw", "conf"), stack.DeployOptions{})
	deploy(t, b, loadObjects(t, "obj_2", "pw", "conf"), stack.DeployOptions{})

	// stack ls, services, ps
	sums, err := stack.List(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "stacks", fmt.Sprint(sums), "[{obj 1} {obj_2 1}]")
	svcs, err := stack.Services(ctx, b, "obj")
	if err != nil || len(svcs) != 1 || svcs[0].Spec.Name != "obj_web" {
		t.Fatalf("Services = %v, %v", svcs, err)
	}
	tasks, err := stack.Tasks(ctx, b, "obj")
	if err != nil || len(tasks) != 1 || tasks[0].ServiceID != svcs[0].ID {
		t.Fatalf("Tasks = %v, %v", tasks, err)
	}

	before := len(b.Writes())
	actions, err := stack.Remove(ctx, b, "obj")
	if err != nil {
		t.Fatal(err)
	}
	eqs(t, "rm", lines(actions), []string{"Removing service obj_web", "Removing secret obj_pw", "Removing config obj_conf", "Removing network obj_front"})
	eqs(t, "writes", b.Writes()[before:], []string{"RemoveService obj_web", "RemoveSecret obj_pw", "RemoveConfig obj_conf", "RemoveNetwork obj_front"})

	// What is left: the other stack, the external objects, the unlabelled service.
	var left []string
	svcAll, _ := b.Services(ctx, swarm.Filter{})
	for _, s := range svcAll {
		left = append(left, s.Spec.Name)
	}
	nets, _ := b.Networks(ctx, swarm.Filter{})
	for _, n := range nets {
		left = append(left, n.Spec.Name)
	}
	secs, _ := b.Secrets(ctx, swarm.Filter{})
	for _, s := range secs {
		left = append(left, s.Spec.Name)
	}
	cfgs, _ := b.Configs(ctx, swarm.Filter{})
	for _, c := range cfgs {
		left = append(left, c.Spec.Name)
	}
	slices.Sort(left)
	eqs(t, "left", left, []string{"corp-net", "ext_config", "ext_secret", "obj_2_conf", "obj_2_front", "obj_2_pw", "obj_2_web", "obj_handmade"})

	if _, err := stack.Remove(ctx, b, "obj"); !errors.Is(err, stack.ErrNotFound) {
		t.Errorf("second rm: %v", err)
	}
	if _, err := stack.Services(ctx, b, "obj"); !errors.Is(err, stack.ErrNotFound) {
		t.Errorf("services of a removed stack: %v", err)
	}
	if _, err := stack.Tasks(ctx, b, "obj"); !errors.Is(err, stack.ErrNotFound) {
		t.Errorf("tasks of a removed stack: %v", err)
	}
	if _, err := stack.Remove(ctx, b, "bad name"); !errors.Is(err, stack.ErrInvalidName) {
		t.Errorf("bad name: %v", err)
	}
}

// A network still in use while the tasks shut down is removed on a later
// attempt; an error that lasts is reported, and the rest is removed.
func TestRemoveRetries(t *testing.T) {
	ctx := context.Background()
	var refusals atomic.Int32
	b := &stacktest.FakeBackend{}
	deploy(t, b, mustLoad(t, "n", "services:\n  web:\n    image: web\nconfigs:\n  c:\n    content: hello\n", nil), stack.DeployOptions{})
	b.Fail = func(call, name string) error {
		if call == "RemoveNetwork" && refusals.Add(1) <= 2 {
			return errors.New("network has active endpoints")
		}
		return nil
	}
	actions, err := stack.Remove(ctx, b, "n")
	if err != nil {
		t.Fatal(err)
	}
	eqs(t, "rm", lines(actions), []string{"Removing service n_web", "Removing config n_c", "Removing network n_default"})
	eq(t, "attempts", refusals.Load(), 3)

	// A service the cluster wrote meanwhile (a version conflict) is
	// removed on a later attempt.
	deploy(t, b, mustLoad(t, "n", "services:\n  web:\n    image: web\n", nil), stack.DeployOptions{})
	var conflicts atomic.Int32
	b.Fail = func(call, name string) error {
		if call == "RemoveService" && conflicts.Add(1) <= 2 {
			return fmt.Errorf("%w: expected version 13, store has 14", raftstore.ErrConflict)
		}
		return nil
	}
	actions, err = stack.Remove(ctx, b, "n")
	if err != nil {
		t.Fatal(err)
	}
	eqs(t, "rm after conflicts", lines(actions), []string{"Removing service n_web", "Removing network n_default"})

	// An error that lasts is reported at once, and what the service still
	// uses is not waited for.
	deploy(t, b, mustLoad(t, "n", "services:\n  web:\n    image: web\n", nil), stack.DeployOptions{})
	b.Fail = func(call, name string) error {
		if call == "RemoveService" {
			return errors.New("disk full")
		}
		return nil
	}
	start := time.Now()
	actions, err = stack.Remove(ctx, b, "n")
	if err == nil || !strings.Contains(err.Error(), "removing service n_web: disk full") || !strings.Contains(err.Error(), "removing network n_default: network n_default is in use by service n_web") {
		t.Errorf("err = %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("took %v", d)
	}
	eqs(t, "rm", lines(actions), nil)
}
