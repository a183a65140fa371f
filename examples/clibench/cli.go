package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// dockerCLI runs the docker CLI against one daemon (DOCKER_HOST).
type dockerCLI struct {
	CLI  string
	Host string
	// created, when set, is called as `service create` is sent, and
	// running once the tasks run.
	created, running func()
}

// run runs `docker ARGS...` and returns its output.
func (d *dockerCLI) run(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, d.CLI, append([]string{"-H", d.Host}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("docker %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// waitLimit bounds each wait for the tasks.
var waitLimit = 5 * time.Minute

// serviceName is the bench's service.
const serviceName = "clibench"

// timeService times `service create -d --replicas N` until N tasks run,
// then `service scale =0` until none runs, then removes the service.
func (d *dockerCLI) timeService(ctx context.Context, system, image string, replicas int) (*figures, error) {
	f := &figures{}
	logf("%s: docker service create -d --replicas %d --name %s %s", system, replicas, serviceName, image)
	if d.created != nil {
		d.created()
	}
	t0 := time.Now()
	if _, err := d.run(ctx, "service", "create", "-d", "-q", "--no-resolve-image", "--name", serviceName, "--replicas", fmt.Sprint(replicas), image); err != nil {
		return nil, err
	}
	if err := d.waitRunning(ctx, system, func(n int) bool { return n >= replicas }, true); err != nil {
		return nil, err
	}
	f.create = time.Since(t0)
	if d.running != nil {
		d.running()
	}
	logf("%s: %d running after %.2fs; docker service scale %s=0", system, replicas, f.create.Seconds(), serviceName)
	t0 = time.Now()
	if _, err := d.run(ctx, "service", "scale", "-d", serviceName+"=0"); err != nil {
		return nil, err
	}
	if err := d.waitRunning(ctx, system, func(n int) bool { return n == 0 }, false); err != nil {
		return nil, err
	}
	f.scale = time.Since(t0)
	logf("%s: 0 running after %.2fs; docker service rm %s", system, f.scale.Seconds(), serviceName)
	if _, err := d.run(ctx, "service", "rm", serviceName); err != nil {
		return nil, err
	}
	return f, nil
}

// waitRunning polls `docker service ps` (as the CLI's progress display
// polls the tasks) until done(number of tasks in state Running) holds;
// desired: only the tasks meant to run.
func (d *dockerCLI) waitRunning(ctx context.Context, system string, done func(int) bool, desired bool) error {
	args := []string{"service", "ps", serviceName, "--format", "{{.CurrentState}}"}
	if desired {
		args = append(args, "--filter", "desired-state=running")
	}
	deadline := time.Now().Add(waitLimit)
	for {
		out, err := d.run(ctx, args...)
		if err != nil {
			return err
		}
		n := 0
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, "Running") {
				n++
			}
		}
		if done(n) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %d tasks running after %v; docker %s:\n%s", system, n, waitLimit, strings.Join(args, " "), tail(out, 10))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
