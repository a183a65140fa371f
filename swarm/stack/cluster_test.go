package stack_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/stack"
	"github.com/shoalproject/shoal/swarm/swarmtest"
)

// The tutorials deployed through the real control API (*swarm.Client) on
// a one-node cluster over TLS: created, run, deployed again with no
// change, updated in place, listed, removed.
func TestTutorialsOnACluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	ctx := context.Background()
	c := swarmtest.NewTLS(t, swarmtest.TLSOptions{})
	cl := c.Client()

	stacks := map[string]string{
		"getstartedlab": "seed-web-5-replicas.yml",
		"httpd":         "seed-httpd-v1.yml",
		"frontend":      "seed-prod-with-variables.yml",
		"sample":        "seed-whoami.yml",
		"pets":          "seed-pets.yml",
	}
	want := map[string]uint64{} // replicas by service
	for _, name := range sortedNames(stacks) {
		st, err := loadTutorial(t, stacks[name], name, tutorialEnv)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range st.Services {
			want[s.Name] = s.Mode.Replicated.Replicas
		}
		actions, err := stack.Deploy(ctx, cl, st, stack.DeployOptions{})
		if err != nil {
			t.Fatalf("deploy %s: %v (after %v)", name, err, actions)
		}
		again, err := stack.Deploy(ctx, cl, st, stack.DeployOptions{Prune: true})
		if err != nil {
			t.Fatalf("deploy %s again: %v", name, err)
		}
		for _, a := range again {
			if a.Op != stack.OpUnchanged {
				t.Errorf("deploy %s again: %v", name, again)
			}
		}
	}

	// Every service runs its replicas, its tasks on the stack's networks.
	c.WaitFor("every stack's tasks running", func() bool {
		for _, name := range sortedNames(stacks) {
			tasks, err := stack.Tasks(ctx, cl, name)
			if err != nil {
				return false
			}
			running := map[string]uint64{}
			svcs, _ := stack.Services(ctx, cl, name)
			names := map[string]string{}
			for _, s := range svcs {
				names[s.ID] = s.Spec.Name
			}
			for _, task := range tasks {
				if task.Status.State == api.TaskRunning && task.DesiredState == api.TaskRunning {
					running[names[task.ServiceID]]++
				}
			}
			for _, s := range svcs {
				if running[s.Spec.Name] != want[s.Spec.Name] {
					return false
				}
			}
		}
		return true
	})
	sums, err := stack.List(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "stacks", fmt.Sprint(sums), "[{frontend 2} {getstartedlab 1} {httpd 1} {pets 2} {sample 1}]")

	// The tutorial's rolling update, in place.
	v2, err := loadTutorial(t, "seed-httpd-v2.yml", "httpd", nil)
	if err != nil {
		t.Fatal(err)
	}
	actions, err := stack.Deploy(ctx, cl, v2, stack.DeployOptions{})
	if err != nil {
		t.Fatal(err)
	}
	eqs(t, "v2", lines(actions), []string{"Unchanged network httpd_default", "Updating service httpd_web"})
	web, err := cl.Service(ctx, "httpd_web")
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "image", web.Spec.TaskTemplate.Image, testImage("httpd:v2"))
	// parallelism 2, delay 30s: the first two tasks move at once.
	c.WaitFor("the first batch of httpd_web on v2", func() bool {
		tasks, _ := stack.Tasks(ctx, cl, "httpd")
		n := 0
		for _, task := range tasks {
			if task.Status.State == api.TaskRunning && task.DesiredState == api.TaskRunning && task.Spec.Image == testImage("httpd:v2") {
				n++
			}
		}
		return n >= 2
	})

	// A foreign network of a stack's name stops a deploy before it starts.
	if _, err := cl.CreateNetwork(ctx, api.NetworkSpec{Annotations: api.Annotations{Name: "other_default"}, Driver: "overlay"}); err != nil {
		t.Fatal(err)
	}
	st, _ := loadTutorial(t, "seed-httpd-v1.yml", "other", nil)
	if _, err := stack.Deploy(ctx, cl, st, stack.DeployOptions{}); !errors.Is(err, stack.ErrConflict) {
		t.Errorf("deploy over a foreign network: %v", err)
	}

	// stack rm removes each stack's objects, and nothing else.
	for _, name := range sortedNames(stacks) {
		if _, err := stack.Remove(ctx, cl, name); err != nil {
			t.Fatalf("rm %s: %v", name, err)
		}
	}
	svcs, err := cl.Services(ctx, swarm.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(svcs) != 0 {
		t.Errorf("services left: %d", len(svcs))
	}
	nets, err := cl.Networks(ctx, swarm.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, n := range nets {
		left = append(left, n.Spec.Name)
	}
	slices.Sort(left)
	eq(t, "networks left", strings.Join(left, " "), "ingress other_default")
}

// Secrets, configs and external objects through the real control API:
// created once, unchanged on a redeploy (secrets come back without their
// data), references resolved by the cluster, only the stack's removed.
func TestObjectsOnACluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	ctx := context.Background()
	c := swarmtest.NewTLS(t, swarmtest.TLSOptions{})
	cl := c.Client()
	st := loadObjects(t, "obj", "hunter2", "a=1")
	if _, err := stack.Deploy(ctx, cl, st, stack.DeployOptions{}); !errors.Is(err, stack.ErrNotFound) {
		t.Fatalf("without the external objects: %v", err)
	}
	externals(t, cl)
	actions, err := stack.Deploy(ctx, cl, st, stack.DeployOptions{})
	if err != nil {
		t.Fatal(err)
	}
	eqs(t, "deploy", lines(actions), []string{"Creating network obj_front", "Creating secret obj_pw", "Creating config obj_conf", "Creating service obj_web"})
	actions, err = stack.Deploy(ctx, cl, loadObjects(t, "obj", "hunter2", "a=1"), stack.DeployOptions{})
	if err != nil {
		t.Fatal(err)
	}
	eqs(t, "again", lines(actions), []string{"Unchanged network obj_front", "Unchanged secret obj_pw", "Unchanged config obj_conf", "Unchanged service obj_web"})
	if _, err := stack.Deploy(ctx, cl, loadObjects(t, "obj", "hunter2", "a=2"), stack.DeployOptions{}); !errors.Is(err, stack.ErrConflict) {
		t.Errorf("changed config: %v", err)
	}
	// A changed secret: the managers refuse the update with the file's
	// data (they never show it), so the deploy says so.
	if _, err := stack.Deploy(ctx, cl, loadObjects(t, "obj", "hunter3", "a=1"), stack.DeployOptions{}); !errors.Is(err, stack.ErrConflict) ||
		!strings.Contains(err.Error(), "secret obj_pw") || !strings.Contains(err.Error(), "only a secret's labels can change") {
		t.Errorf("changed secret: %v", err)
	}
	web, err := cl.Service(ctx, "obj_web")
	if err != nil {
		t.Fatal(err)
	}
	if s := web.Spec.TaskTemplate.Secrets; len(s) != 2 || s[0].SecretID == "" || s[0].SecretName != "obj_pw" {
		t.Errorf("secrets as stored: %+v", s)
	}
	actions, err = stack.Remove(ctx, cl, "obj")
	if err != nil {
		t.Fatal(err)
	}
	eqs(t, "rm", lines(actions), []string{"Removing service obj_web", "Removing secret obj_pw", "Removing config obj_conf", "Removing network obj_front"})
	secs, _ := cl.Secrets(ctx, swarm.Filter{})
	cfgs, _ := cl.Configs(ctx, swarm.Filter{})
	nets, _ := cl.Networks(ctx, swarm.Filter{Names: []string{"corp-net"}})
	if len(secs) != 1 || len(cfgs) != 1 || len(nets) != 1 {
		t.Errorf("external objects left: %d secrets, %d configs, %d networks", len(secs), len(cfgs), len(nets))
	}
}

func sortedNames(m map[string]string) []string {
	return slices.Sorted(maps.Keys(m))
}
