// Package containerd is the agent's containerd executor: it runs Shoal tasks
// as containers through a containerd daemon (1.6 or newer) with runc, on
// overlayfs snapshots. Images are used when present, else imported from
// image tarballs in ImageDir (for air-gapped clusters); a task whose image
// cannot be found is rejected with a reason that says where it looked.
package containerd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	cg1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	cg2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	ctrd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/continuity/fs"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	"github.com/distribution/reference"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/swarm/api"
)

// Defaults for Executor fields left empty.
// DefaultInitBinaries are where a static init is looked for (Debian's tini
// package installs tini-static; Docker ships docker-init).
var DefaultInitBinaries = []string{"/usr/bin/docker-init", "/usr/bin/tini-static", "/usr/local/bin/tini-static"}

const (
	DefaultLogMaxSize  = 10 << 20
	DefaultLogMaxFiles = 3
	DefaultAddress     = "/run/containerd/containerd.sock"
	DefaultNamespace   = "shoal"
	DefaultSnapshotter = "overlayfs"
)

// Executor runs tasks through containerd. Set the fields, then Connect.
// (Its lifecycle method is Connect, not Start, because Start belongs to the
// agent.Executor interface and starts a task.)
type Executor struct {
	// Address is containerd's socket; empty means DefaultAddress.
	Address string
	// Namespace isolates this node's containers; several simulated nodes
	// can share one containerd with one namespace each.
	Namespace string
	// StateDir holds the tasks' log files; required.
	StateDir string
	// ImageDir is searched for image tarballs (`docker save` or OCI
	// layout) when an image is not present.
	ImageDir string
	// Snapshotter; empty means overlayfs.
	Snapshotter string
	// Network, when set, gives a task the network namespace (a path such
	// as /var/run/netns/NAME) and resolv.conf prepared by the network layer.
	// Without it, or with an empty path, a task gets its own namespace with
	// only loopback.
	Network func(ctx context.Context, t *api.Task) (netnsPath, resolvConf string, err error)
	// LogMaxSize and LogMaxFiles cap each task's log: past LogMaxSize bytes
	// the file rotates, keeping LogMaxFiles files. Zero means the defaults.
	LogMaxSize  int64
	LogMaxFiles int
	// Pull lets Prepare pull an image from its registry when it is neither
	// present nor in ImageDir. InsecureRegistries are hosts ("host:port")
	// reached over plain HTTP.
	Pull               bool
	InsecureRegistries []string
	// InitBinary is a static init (tini) run as PID 1 for tasks with Init
	// set; empty means the first of DefaultInitBinaries that exists.
	InitBinary string
	// Secrets gives the data of the secrets and configs tasks use.
	Secrets agent.SecretSource
	// Logger receives the executor's logs; nil discards.
	Logger *slog.Logger

	mu       sync.Mutex
	client   *ctrd.Client
	tasks    map[string]*entry
	imported map[string]time.Time // tarball path -> mtime imported
	// importMu makes the tasks that find their image missing at once
	// (50 replicas on a fresh node) wait for one import of the tarballs:
	// concurrent imports of the same blobs into containerd contend on
	// its ingest locks, and they stayed preparing for minutes.
	importMu sync.Mutex
	closed   bool
	execSeq  int
}

var (
	_ agent.Executor = (*Executor)(nil)
	_ agent.Adopter  = (*Executor)(nil)
)

type entry struct {
	container  ctrd.Container
	task       ctrd.Task
	stopSignal syscall.Signal
	logPath    string
	log        *taskLog
	done       chan struct{}
	exit       agent.ExitStatus
}

// UseSecrets sets the SecretSource when none was set: a swarm node hands
// its worker over (the worker holds what the managers sent), before any
// task starts.
func (e *Executor) UseSecrets(src agent.SecretSource) {
	if e.Secrets == nil {
		e.Secrets = src
	}
}

// UseNetwork sets the Network hook when none was set: a swarm node hands
// its network agent's over, before any task starts.
func (e *Executor) UseNetwork(hook func(ctx context.Context, t *api.Task) (netnsPath, resolvConf string, err error)) {
	if e.Network == nil {
		e.Network = hook
	}
}

// Connect connects to containerd. It is idempotent.
func (e *Executor) Connect(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return fmt.Errorf("containerd executor: %w", net.ErrClosed)
	}
	if e.client != nil {
		return nil
	}
	if e.StateDir == "" {
		return errors.New("containerd executor: StateDir is required")
	}
	for _, d := range []string{filepath.Join(e.StateDir, "logs"), e.fifoDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	if err := e.cleanExecDir(); err != nil {
		return err
	}
	addr := e.Address
	if addr == "" {
		addr = DefaultAddress
	}
	c, err := ctrd.New(addr, ctrd.WithTimeout(5*time.Second))
	if err != nil {
		return fmt.Errorf("containerd executor: connect to %s: %w (is containerd running?)", addr, err)
	}
	if _, err := c.Version(ctx); err != nil {
		c.Close()
		return fmt.Errorf("containerd executor: containerd at %s does not answer: %w", addr, err)
	}
	e.client = c
	e.tasks = map[string]*entry{}
	e.imported = map[string]time.Time{}
	return nil
}

// Close disconnects; containers keep running. A second Close returns an
// error wrapping net.ErrClosed.
func (e *Executor) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return fmt.Errorf("containerd executor: %w", net.ErrClosed)
	}
	e.closed = true
	if e.client != nil {
		return e.client.Close()
	}
	return nil
}

func (e *Executor) ns(ctx context.Context) context.Context {
	ns := e.Namespace
	if ns == "" {
		ns = DefaultNamespace
	}
	return namespaces.WithNamespace(ctx, ns)
}

func (e *Executor) snapshotter() string {
	if e.Snapshotter == "" {
		return DefaultSnapshotter
	}
	return e.Snapshotter
}

func (e *Executor) get(id string) (*entry, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if en := e.tasks[id]; en != nil {
		return en, nil
	}
	return nil, fmt.Errorf("%w: %s", agent.ErrNotFound, id)
}

// Prepare resolves the image and creates the container.
func (e *Executor) Prepare(ctx context.Context, t *api.Task) error {
	if e.client == nil {
		return errors.New("containerd executor: not connected (call Connect)")
	}
	ctx = e.ns(ctx)
	if _, err := e.get(t.ID); err == nil {
		return nil
	}
	began := time.Now()
	img, err := e.image(ctx, t.Spec.Image)
	if err != nil {
		return err
	}
	imaged := time.Now()
	specOpts, stop, err := specFor(t, img, e.volumeDir)
	if err != nil {
		return err
	}
	if t.Spec.Init != nil && *t.Spec.Init {
		initOpts, err := e.initOpts()
		if err != nil {
			return err
		}
		specOpts = append(specOpts, initOpts...)
	}
	if e.Network != nil {
		netns, resolv, err := e.Network(ctx, t)
		if err != nil {
			return fmt.Errorf("network for %s: %w", t.ID, err)
		}
		if netns != "" {
			specOpts = append(specOpts, oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: netns}))
		}
		if resolv != "" {
			specOpts = append(specOpts, oci.WithMounts([]specs.Mount{{Type: "bind", Source: resolv, Destination: "/etc/resolv.conf", Options: []string{"rbind", "ro"}}}))
		}
	}
	networked := time.Now()
	secretMounts, err := e.secretFiles(ctx, t)
	if err != nil {
		return err
	}
	if len(secretMounts) > 0 {
		specOpts = append(specOpts, oci.WithMounts(secretMounts))
	}
	labels := e.containerLabels(t, stop)
	ctr, err := e.client.NewContainer(ctx, t.ID,
		ctrd.WithImage(img),
		ctrd.WithSnapshotter(e.snapshotter()),
		ctrd.WithNewSnapshot(t.ID+"-rootfs", img),
		ctrd.WithNewSpec(specOpts...),
		ctrd.WithContainerLabels(labels))
	if err != nil {
		e.removeSecrets(t.ID)
		return fmt.Errorf("create container for %s: %w", t.ID, err)
	}
	if err := e.fillVolumes(ctx, t); err != nil {
		ctr.Delete(ctx, ctrd.WithSnapshotCleanup)
		e.removeSecrets(t.ID)
		return err
	}
	e.mu.Lock()
	e.tasks[t.ID] = &entry{container: ctr, stopSignal: stop, logPath: filepath.Join(e.StateDir, "logs", t.ID+".log"), done: make(chan struct{})}
	e.mu.Unlock()
	e.logger().Debug("containerd executor: task prepared", "task", t.ID, "image", imaged.Sub(began).Round(time.Millisecond),
		"network", networked.Sub(imaged).Round(time.Millisecond), "container", time.Since(networked).Round(time.Millisecond))
	return nil
}

// containerLabels are the task spec's labels, then the executor's own
// (agent.ReservedLabelPrefix), last so that none of the spec's can pass for
// them: spec labels with the reserved prefix are dropped (and logged), not
// merely overwritten, since a later version may read more of them.
func (e *Executor) containerLabels(t *api.Task, stop syscall.Signal) map[string]string {
	labels := make(map[string]string, len(t.Spec.Labels)+4)
	var dropped []string
	for k, v := range t.Spec.Labels {
		if strings.HasPrefix(k, agent.ReservedLabelPrefix) {
			dropped = append(dropped, k)
			continue
		}
		labels[k] = v
	}
	if len(dropped) > 0 {
		sort.Strings(dropped)
		e.logger().Warn("containerd executor: reserved labels in a task's spec dropped", "task", t.ID, "labels", dropped)
	}
	labels[taskLabel] = t.ID
	labels[serviceLabel] = t.ServiceID
	labels[taskNameLabel] = t.Annotations.Name
	labels[stopSignalLabel] = fmt.Sprint(int(stop))
	return labels
}

// specFor turns a task spec into OCI spec options, as Docker does:
// Command replaces the image's entrypoint, Args its command.
func specFor(t *api.Task, img ctrd.Image, volumeDir func(taskID, name string, i int) (string, error)) ([]oci.SpecOpts, syscall.Signal, error) {
	s := t.Spec
	opts := []oci.SpecOpts{oci.WithImageConfig(img)}
	switch {
	case len(s.Command) > 0:
		opts = append(opts, oci.WithProcessArgs(append(append([]string{}, s.Command...), s.Args...)...))
	case len(s.Args) > 0:
		opts = append(opts, oci.WithImageConfigArgs(img, s.Args))
	}
	env := append([]string{"TASK_ID=" + t.ID, "SERVICE_ID=" + t.ServiceID}, s.Env...)
	opts = append(opts, oci.WithEnv(env))
	if s.User != "" {
		opts = append(opts, oci.WithUser(s.User))
	}
	if s.Dir != "" {
		opts = append(opts, oci.WithProcessCwd(s.Dir))
	}
	hostname := s.Hostname
	if hostname == "" {
		hostname = t.ID
		if len(hostname) > 12 {
			hostname = hostname[:12]
		}
	}
	opts = append(opts, oci.WithHostname(hostname))
	if s.ReadOnly {
		opts = append(opts, oci.WithRootFSReadonly())
	}
	if r := s.Resources; r != nil && r.Limits != nil {
		if m := r.Limits.MemoryBytes; m > 0 {
			opts = append(opts, oci.WithMemoryLimit(uint64(m)))
		}
		if c := r.Limits.NanoCPUs; c > 0 {
			const period = 100000
			opts = append(opts, oci.WithCPUCFS(c*period/1e9, period))
		}
		if p := r.Limits.Pids; p > 0 {
			opts = append(opts, oci.WithPidsLimit(p))
		}
	}
	if r := s.Resources; r != nil && r.Reservations != nil {
		// A CPU reservation weighs the task's share under contention
		// (1024 shares per CPU); a memory reservation is a soft limit.
		if c := r.Reservations.NanoCPUs; c > 0 {
			opts = append(opts, oci.WithCPUShares(uint64(max(c*1024/1e9, 2))))
		}
		if m := r.Reservations.MemoryBytes; m > 0 {
			opts = append(opts, withMemoryReservation(m))
		}
	}
	var mounts []specs.Mount
	for _, m := range s.Mounts {
		switch m.Type {
		case api.MountBind:
			o := []string{"rbind", "rw"}
			if m.ReadOnly {
				o[1] = "ro"
			}
			mounts = append(mounts, specs.Mount{Type: "bind", Source: m.Source, Destination: m.Target, Options: o})
		case api.MountVolume:
			dir, err := volumeDir(t.ID, m.Source, len(mounts))
			if err != nil {
				return nil, 0, err
			}
			o := []string{"rbind", "rw"}
			if m.ReadOnly {
				o[1] = "ro"
			}
			mounts = append(mounts, specs.Mount{Type: "bind", Source: dir, Destination: m.Target, Options: o})
		case api.MountTmpfs:
			o := []string{"nosuid", "nodev", "mode=1777"}
			if m.TmpfsSizeBytes > 0 {
				o = append(o, fmt.Sprintf("size=%d", m.TmpfsSizeBytes))
			}
			mounts = append(mounts, specs.Mount{Type: "tmpfs", Source: "tmpfs", Destination: m.Target, Options: o})
		default:
			return nil, 0, fmt.Errorf("mount %s: unknown type %q (bind, volume or tmpfs)", m.Target, m.Type)
		}
	}
	if len(mounts) > 0 {
		opts = append(opts, oci.WithMounts(mounts))
	}
	stop := syscall.SIGTERM
	if s.StopSignal != "" {
		sig, err := parseSignal(s.StopSignal)
		if err != nil {
			return nil, 0, err
		}
		stop = sig
	}
	return opts, stop, nil
}

func parseSignal(s string) (syscall.Signal, error) {
	name := strings.TrimPrefix(strings.ToUpper(s), "SIG")
	for sig := syscall.Signal(1); sig < 65; sig++ {
		if strings.EqualFold(strings.TrimPrefix(strings.ToUpper(unixSignalName(sig)), "SIG"), name) {
			return sig, nil
		}
	}
	var n int
	if _, err := fmt.Sscanf(s, "%d", &n); err == nil && n > 0 && n < 65 {
		return syscall.Signal(n), nil
	}
	return 0, fmt.Errorf("stop signal %q is not a signal name (SIGTERM, SIGINT, ...) or number", s)
}

// image returns the image, importing it from ImageDir when absent.
func (e *Executor) image(ctx context.Context, ref string) (ctrd.Image, error) {
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return nil, fmt.Errorf("%w: %q is not a valid image reference: %v", agent.ErrImageNotFound, ref, err)
	}
	full := named.String()
	img, err := e.client.GetImage(ctx, full)
	if errdefs.IsNotFound(err) && e.ImageDir != "" {
		if ierr := e.importDir(ctx); ierr != nil {
			e.logger().Warn("containerd executor: importing images", "dir", e.ImageDir, "err", ierr)
		}
		img, err = e.client.GetImage(ctx, full)
	}
	var pullErr error
	if errdefs.IsNotFound(err) && e.Pull {
		if img, pullErr = e.pull(ctx, full); pullErr == nil {
			err = nil
		}
	}
	if errdefs.IsNotFound(err) {
		where := "not present in containerd"
		if e.ImageDir != "" {
			where += ", nor in a tarball in " + e.ImageDir
		}
		if pullErr != nil {
			where += ", and pulling it failed: " + pullErr.Error()
		} else {
			where += "; pulling from registries is off"
		}
		return nil, fmt.Errorf("%w: %s (%s)", agent.ErrImageNotFound, ref, where)
	}
	if err != nil {
		return nil, err
	}
	if ok, _ := img.IsUnpacked(ctx, e.snapshotter()); !ok {
		if err := img.Unpack(ctx, e.snapshotter()); err != nil {
			return nil, fmt.Errorf("unpack %s: %w", ref, err)
		}
	}
	return img, nil
}

// importDir imports every tarball in ImageDir not imported since it last
// changed.
func (e *Executor) importDir(ctx context.Context) error {
	e.importMu.Lock()
	defer e.importMu.Unlock()
	entries, err := os.ReadDir(e.ImageDir)
	if err != nil {
		return err
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	var errs []error
	for _, de := range entries {
		if de.IsDir() || !(strings.HasSuffix(de.Name(), ".tar") || strings.HasSuffix(de.Name(), ".tar.gz")) {
			continue
		}
		path := filepath.Join(e.ImageDir, de.Name())
		info, err := de.Info()
		if err != nil {
			continue
		}
		e.mu.Lock()
		seen := e.imported[path].Equal(info.ModTime())
		e.mu.Unlock()
		if seen {
			continue
		}
		if err := e.importFile(ctx, path); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", path, err))
			continue
		}
		e.mu.Lock()
		e.imported[path] = info.ModTime()
		e.mu.Unlock()
	}
	return errors.Join(errs...)
}

func (e *Executor) importFile(ctx context.Context, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	imgs, err := e.client.Import(ctx, f)
	if err != nil {
		return err
	}
	for _, i := range imgs {
		if err := ctrd.NewImage(e.client, i).Unpack(ctx, e.snapshotter()); err != nil {
			return fmt.Errorf("unpack %s: %w", i.Name, err)
		}
		e.logger().Info("containerd executor: imported image", "image", i.Name, "from", path)
	}
	return nil
}

// Start creates the task's process with its output going through FIFOs to
// the task's log file, waits on it, then starts it.
func (e *Executor) Start(ctx context.Context, id string) error {
	en, err := e.get(id)
	if err != nil {
		return err
	}
	ctx = e.ns(ctx)
	began := time.Now()
	tl, err := e.openLog(en)
	if err != nil {
		return err
	}
	task, err := en.container.NewTask(ctx, cio.NewCreator(cio.WithStreams(nil, tl.stream("stdout"), tl.stream("stderr")), cio.WithFIFODir(e.fifoDir())))
	if err != nil {
		tl.close()
		return fmt.Errorf("create task %s: %w", id, err)
	}
	created := time.Now()
	growPipes(task.IO(), e.logger())
	// Wait before Start, so a process that exits at once is not missed.
	exitCh, err := task.Wait(e.ns(context.Background()))
	if err != nil {
		task.Delete(ctx)
		return err
	}
	if err := task.Start(ctx); err != nil {
		task.Delete(ctx)
		return fmt.Errorf("start task %s: %w", id, err)
	}
	e.mu.Lock()
	en.task = task
	e.mu.Unlock()
	e.watchExit(en, exitCh)
	e.logger().Debug("containerd executor: task started", "task", id, "create", created.Sub(began).Round(time.Millisecond),
		"start", time.Since(created).Round(time.Millisecond))
	return nil
}

// Wait blocks until the process ends.
func (e *Executor) Wait(ctx context.Context, id string) (agent.ExitStatus, error) {
	en, err := e.get(id)
	if err != nil {
		return agent.ExitStatus{}, err
	}
	select {
	case <-en.done:
		e.mu.Lock()
		defer e.mu.Unlock()
		return en.exit, nil
	case <-ctx.Done():
		return agent.ExitStatus{}, ctx.Err()
	}
}

// Shutdown sends the stop signal and kills the process after grace.
func (e *Executor) Shutdown(ctx context.Context, id string, grace time.Duration) error {
	en, err := e.get(id)
	if err != nil {
		return err
	}
	if en.task == nil {
		return nil
	}
	if err := en.task.Kill(e.ns(ctx), en.stopSignal); err != nil && !errdefs.IsNotFound(err) {
		return err
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-en.done:
		return nil
	case <-t.C:
		e.logger().Info("containerd executor: grace period over, killing", "task", id, "grace", grace)
		return e.Terminate(ctx, id)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Terminate kills the process with SIGKILL and waits for it.
func (e *Executor) Terminate(ctx context.Context, id string) error {
	en, err := e.get(id)
	if err != nil {
		return err
	}
	if en.task == nil {
		return nil
	}
	if err := en.task.Kill(e.ns(ctx), syscall.SIGKILL, ctrd.WithKillAll); err != nil && !errdefs.IsNotFound(err) {
		return err
	}
	select {
	case <-en.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Remove deletes the process, container, snapshot and log file.
func (e *Executor) Remove(ctx context.Context, id string) error {
	en, err := e.get(id)
	if err != nil {
		return err
	}
	ctx = e.ns(ctx)
	if en.task != nil {
		if _, err := en.task.Delete(ctx, ctrd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("delete task %s: %w", id, err)
		}
	}
	if err := en.container.Delete(ctx, ctrd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("delete container %s: %w", id, err)
	}
	if en.log != nil {
		en.log.close()
	}
	removeLogs(en.logPath)
	os.RemoveAll(filepath.Join(e.StateDir, "volumes", "anon-"+id))
	if err := e.removeSecrets(id); err != nil {
		return err
	}
	e.mu.Lock()
	delete(e.tasks, id)
	e.mu.Unlock()
	return nil
}

// Inspect reports the container and process.
func (e *Executor) Inspect(ctx context.Context, id string) (agent.Inspection, error) {
	en, err := e.get(id)
	if err != nil {
		return agent.Inspection{}, err
	}
	in := agent.Inspection{ContainerID: en.container.ID()}
	e.mu.Lock()
	defer e.mu.Unlock()
	if en.task != nil {
		in.PID = int(en.task.Pid())
		select {
		case <-en.done:
			exit := en.exit
			in.Exit = &exit
		default:
			in.Running = true
		}
	}
	return in, nil
}

// Logs reads the task's log files (rotated ones first) and, with Follow,
// goes on with new lines until the task has ended and its output is all
// read (see readLogs).
func (e *Executor) Logs(ctx context.Context, id string, opts agent.LogOptions, fn func(agent.LogLine) error) error {
	en, err := e.get(id)
	if err != nil {
		return err
	}
	labels, _ := en.container.Labels(e.ns(ctx))
	tag := func(r logRecord) agent.LogLine {
		return agent.LogLine{Time: r.Time, Stream: r.Stream, Line: r.Line, TaskID: id, ServiceID: labels[serviceLabel]}
	}
	return readLogs(ctx, en.logPath, en.done, opts, func(r logRecord) error { return fn(tag(r)) })
}

func (e *Executor) logger() *slog.Logger {
	if e.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return e.Logger
}

// The executor's own labels (agent.ReservedLabelPrefix); taskLabel is in
// adopt.go.
const (
	stopSignalLabel = "shoal.stop-signal"
	serviceLabel    = "shoal.service.id"
	taskNameLabel   = "shoal.task.name"
)

func stopSignalOf(ctx context.Context, ctr ctrd.Container) syscall.Signal {
	labels, err := ctr.Labels(ctx)
	if err == nil {
		var n int
		if _, err := fmt.Sscanf(labels[stopSignalLabel], "%d", &n); err == nil && n > 0 {
			return syscall.Signal(n)
		}
	}
	return syscall.SIGTERM
}

// Metrics reads the task's cgroup statistics (v1 or v2).
func (e *Executor) Metrics(ctx context.Context, id string) (agent.Metrics, error) {
	en, err := e.get(id)
	if err != nil {
		return agent.Metrics{}, err
	}
	if en.task == nil {
		return agent.Metrics{}, fmt.Errorf("metrics of %s: task not started", id)
	}
	m, err := en.task.Metrics(e.ns(ctx))
	if err != nil {
		return agent.Metrics{}, err
	}
	v, err := typeurl.UnmarshalAny(m.Data)
	if err != nil {
		return agent.Metrics{}, err
	}
	var out agent.Metrics
	switch s := v.(type) {
	case *cg1.Metrics:
		if s.CPU != nil && s.CPU.Usage != nil {
			out.CPUNanos = s.CPU.Usage.Total
		}
		if s.Memory != nil && s.Memory.Usage != nil {
			out.MemoryBytes, out.MemoryLimitBytes = s.Memory.Usage.Usage, s.Memory.Usage.Limit
		}
		if s.Pids != nil {
			out.Pids = s.Pids.Current
		}
	case *cg2.Metrics:
		if s.CPU != nil {
			out.CPUNanos = s.CPU.UsageUsec * 1000
		}
		if s.Memory != nil {
			out.MemoryBytes, out.MemoryLimitBytes = s.Memory.Usage, s.Memory.UsageLimit
		}
		if s.Pids != nil {
			out.Pids = s.Pids.Current
		}
	default:
		return out, fmt.Errorf("metrics of %s: unknown format %T", id, v)
	}
	return out, nil
}

// outputPipeSize is the buffer of a task's output FIFOs: what a task can
// write while the agent is not reading (restarting, say) before it blocks.
// Linux's default is 64 KiB; 1 MiB is the largest an unprivileged process
// may set by default (fs.pipe-max-size).
const outputPipeSize = 1 << 20

// growPipes enlarges the output FIFOs' buffers. The buffer belongs to the
// pipe, so setting it through a descriptor of our own reaches the shim's
// side too.
func growPipes(io cio.IO, log *slog.Logger) {
	if io == nil {
		return
	}
	cfg := io.Config()
	for _, path := range []string{cfg.Stdout, cfg.Stderr} {
		if path == "" {
			continue
		}
		f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
		if err == nil {
			_, err = unix.FcntlInt(f.Fd(), unix.F_SETPIPE_SZ, outputPipeSize)
			f.Close()
		}
		if err != nil {
			log.Debug("containerd executor: output pipe keeps its default size", "fifo", path, "err", err)
		}
	}
}

func (e *Executor) fifoDir() string { return filepath.Join(e.StateDir, "fifo") }

// openLog opens the task's log file for its output.
func (e *Executor) openLog(en *entry) (*taskLog, error) {
	maxSize, maxFiles := e.LogMaxSize, e.LogMaxFiles
	if maxSize <= 0 {
		maxSize = DefaultLogMaxSize
	}
	if maxFiles <= 0 {
		maxFiles = DefaultLogMaxFiles
	}
	tl, err := openTaskLog(en.logPath, maxSize, maxFiles)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	en.log = tl
	e.mu.Unlock()
	return tl, nil
}

func withMemoryReservation(n int64) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		if s.Linux == nil {
			s.Linux = &specs.Linux{}
		}
		if s.Linux.Resources == nil {
			s.Linux.Resources = &specs.LinuxResources{}
		}
		if s.Linux.Resources.Memory == nil {
			s.Linux.Resources.Memory = &specs.LinuxMemory{}
		}
		s.Linux.Resources.Memory.Reservation = &n
		return nil
	}
}

// volumeDir returns the host directory of a volume: a named volume lives
// under StateDir/volumes/NAME and outlives its tasks; an anonymous one is the
// task's own and goes with it.
func (e *Executor) volumeDir(taskID, name string, i int) (string, error) {
	dir := filepath.Join(e.StateDir, "volumes", name, "_data")
	if name == "" {
		dir = filepath.Join(e.StateDir, "volumes", "anon-"+taskID, fmt.Sprint(i))
	}
	return dir, os.MkdirAll(dir, 0o755)
}

// fillVolumes copies what the image holds at each volume's target into the
// volume when the volume is empty, as Docker does for a new volume (unless
// the mount says NoCopy), so that a volume over /var/lib/app starts with the
// image's files instead of hiding them.
func (e *Executor) fillVolumes(ctx context.Context, t *api.Task) error {
	var mounts []mount.Mount
	for i, m := range t.Spec.Mounts {
		if m.Type != api.MountVolume || m.NoCopy {
			continue
		}
		dir, err := e.volumeDir(t.ID, m.Source, i)
		if err != nil {
			return err
		}
		if entries, err := os.ReadDir(dir); err != nil || len(entries) > 0 {
			continue // not new: its data is the volume's own
		}
		if mounts == nil {
			if mounts, err = e.client.SnapshotService(e.snapshotter()).Mounts(ctx, t.ID+"-rootfs"); err != nil {
				return fmt.Errorf("volume %s: image content: %w", m.Target, err)
			}
		}
		err = mount.WithReadonlyTempMount(ctx, mounts, func(root string) error {
			src, err := fs.RootPath(root, m.Target) // symlinks stay inside the image
			if err != nil {
				return err
			}
			if st, err := os.Stat(src); err != nil || !st.IsDir() {
				return nil // nothing there in the image
			}
			return fs.CopyDir(dir, src)
		})
		if err != nil {
			return fmt.Errorf("volume %s: fill from the image: %w", m.Target, err)
		}
	}
	return nil
}

// pull fetches an image from its registry and unpacks it.
func (e *Executor) pull(ctx context.Context, ref string) (ctrd.Image, error) {
	insecure := map[string]bool{}
	for _, h := range e.InsecureRegistries {
		insecure[h] = true
	}
	resolver := docker.NewResolver(docker.ResolverOptions{Hosts: docker.ConfigureDefaultRegistries(
		docker.WithPlainHTTP(func(host string) (bool, error) { return insecure[host], nil }))})
	img, err := e.client.Pull(ctx, ref, ctrd.WithPullUnpack, ctrd.WithPullSnapshotter(e.snapshotter()), ctrd.WithResolver(resolver))
	if err != nil {
		return nil, err
	}
	e.logger().Info("containerd executor: pulled image", "image", ref)
	return img, nil
}

// initOpts runs a static init as PID 1: it reaps zombies and passes signals.
func (e *Executor) initOpts() ([]oci.SpecOpts, error) {
	bin := e.InitBinary
	if bin == "" {
		for _, p := range DefaultInitBinaries {
			if _, err := os.Stat(p); err == nil {
				bin = p
				break
			}
		}
	}
	if bin == "" {
		return nil, fmt.Errorf("task asks for an init process but none is installed (apt-get install tini, or set InitBinary)")
	}
	const target = "/sbin/shoal-init"
	return []oci.SpecOpts{
		oci.WithMounts([]specs.Mount{{Type: "bind", Source: bin, Destination: target, Options: []string{"bind", "ro"}}}),
		func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
			s.Process.Args = append([]string{target, "--"}, s.Process.Args...)
			return nil
		},
	}, nil
}
