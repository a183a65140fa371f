package swarm_test

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/internal/waitfor"
	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/ca"
	"github.com/shoalproject/shoal/swarm/swarmtest"
)

// tnode is a Node on loopback with a fake executor.
func tnode(t *testing.T) *swarm.Node {
	t.Helper()
	n := &swarm.Node{Dir: t.TempDir(), ListenAddr: "127.0.0.1:0", Executor: &agent.FakeExecutor{ExitCodes: map[string]int{badImage: 1, onceImage: 0}}, Logger: testLogger(t),
		HeartbeatPeriod: 300 * time.Millisecond}
	t.Cleanup(func() {
		n.Close()
		n.Executor.(*agent.FakeExecutor).ExitAll()
	})
	return n
}

// initNode is a node that made a new cluster, ready, and the cluster
// object.
func initNode(t *testing.T) (*swarm.Node, *api.Cluster) {
	t.Helper()
	n := tnode(t)
	if err := n.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	nodeReady(t, n)
	c, err := n.Client().Cluster(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n, c
}

func nodeReady(t *testing.T, n *swarm.Node) {
	t.Helper()
	select {
	case <-n.Ready():
	case <-time.After(waitfor.DefaultTimeout):
		t.Fatalf("node %s not ready", n.ID())
	}
}

func running(t *testing.T, c *swarm.Client, serviceID string) []*api.Task {
	t.Helper()
	ts, err := c.Tasks(context.Background(), swarm.Filter{Services: []string{serviceID}})
	if err != nil {
		return nil
	}
	var out []*api.Task
	for _, tk := range ts {
		if tk.Status.State == api.TaskRunning && tk.DesiredState == api.TaskRunning {
			out = append(out, tk)
		}
	}
	return out
}

// A cluster of real nodes over mutual TLS on loopback: init, workers join
// with the token, a service runs on them through the Client; wrong tokens,
// another cluster's token, a worker's certificate on the control API, a
// rotated token and a removed node are refused.
func TestNodesJoinOverTLS(t *testing.T) {
	ctx := context.Background()
	m0 := tnode(t)
	if err := m0.Init(ctx); err != nil {
		t.Fatal(err)
	}
	nodeReady(t, m0)
	cl := m0.Client()
	c, err := cl.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.RootCA.CAKeyPEM) != 0 {
		t.Fatal("the API sent the CA's key out")
	}
	if !strings.HasPrefix(c.JoinTokens.Worker, "SWMTKN-1-") || c.JoinTokens.Worker == c.JoinTokens.Manager {
		t.Fatalf("join tokens %+v", c.JoinTokens)
	}
	var workers []*swarm.Node
	for range 2 {
		w := tnode(t)
		w.ListenAddr = ""
		if err := w.Join(ctx, c.JoinTokens.Worker, m0.Addr()); err != nil {
			t.Fatal(err)
		}
		nodeReady(t, w)
		if w.Role() != "worker" || w.Addr() != "" {
			t.Fatalf("a worker joined as %s at %q", w.Role(), w.Addr())
		}
		workers = append(workers, w)
	}
	svc, err := cl.CreateService(ctx, service("web", api.Replicated(3)))
	if err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, "3 running on the 3 nodes", func() bool {
		nodes := map[string]bool{}
		for _, tk := range running(t, cl, svc.ID) {
			nodes[tk.NodeID] = true
		}
		return len(nodes) == 3
	})
	// Scale through the client.
	if _, err := cl.ScaleService(ctx, "web", 5); err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, "5 running", func() bool { return len(running(t, cl, svc.ID)) == 5 })
	// A bad spec comes back with its field path.
	_, err = cl.CreateService(ctx, api.ServiceSpec{Annotations: api.Annotations{Name: "bad!"}})
	var ve *api.ValidationError
	if !errors.As(err, &ve) || ve.Problems[0].Path != "spec.name" {
		t.Fatalf("bad spec through the client: %v", err)
	}

	// A wrong secret is refused, and the dir stays empty.
	bad := tnode(t)
	wrong := c.JoinTokens.Worker[:len(c.JoinTokens.Worker)-3] + "zzz"
	if err := bad.Join(ctx, wrong, m0.Addr()); err == nil || !strings.Contains(err.Error(), "join token is not valid") {
		t.Fatalf("join with a wrong token: %v", err)
	}
	if _, err := os.Stat(filepath.Join(bad.Dir, "node.json")); !os.IsNotExist(err) {
		t.Fatalf("a refused join left node.json: %v", err)
	}
	// Another cluster's token: the joiner does not trust this CA.
	other := tnode(t)
	if err := other.Init(ctx); err != nil {
		t.Fatal(err)
	}
	nodeReady(t, other)
	oc, _ := other.Client().Cluster(ctx)
	if err := tnode(t).Join(ctx, oc.JoinTokens.Worker, m0.Addr()); err == nil {
		t.Fatal("joined with another cluster's token")
	}
	// A worker's certificate cannot use the control API.
	if _, err := workers[0].Client().CreateService(ctx, service("x", api.Replicated(1))); err == nil || !strings.Contains(err.Error(), "for managers") {
		t.Fatalf("control API with a worker certificate: %v", err)
	}
	// Rotated: the old token is refused, joined nodes stay.
	if _, err := cl.RotateJoinToken(ctx, api.RoleWorker); err != nil {
		t.Fatal(err)
	}
	if err := tnode(t).Join(ctx, c.JoinTokens.Worker, m0.Addr()); err == nil {
		t.Fatal("joined with a rotated token")
	}
	c2, _ := cl.Cluster(ctx)
	late := tnode(t)
	if err := late.Join(ctx, c2.JoinTokens.Worker, m0.Addr()); err != nil {
		t.Fatalf("join with the new token: %v", err)
	}
	nodeReady(t, late)

	// A removed node's certificate is refused from then on.
	gone := workers[1]
	goneID := gone.ID()
	gone.Close()
	goneCert, root, err := (ca.Files{Dir: gone.Dir}).Load()
	if err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, "the stopped worker is down", func() bool {
		n, err := cl.Node(ctx, goneID)
		return err == nil && n.Status.State == api.NodeDown
	})
	// Down but not removed, its certificate still opens the API (the
	// check below is not refusing every dial).
	if took, err := firstRead(m0.Addr(), goneCert, root); err != nil {
		t.Fatalf("a down node's certificate before its removal: %v after %v", err, took)
	}
	if err := cl.RemoveNode(ctx, goneID, false); err != nil {
		t.Fatal(err)
	}
	// Removed: the manager's handshake refuses it at once.
	if took, err := firstRead(m0.Addr(), goneCert, root); !certRefused(err) || took > 2*time.Second {
		t.Fatalf("a removed node's certificate: %v after %v; want a bad-certificate refusal at once", err, took)
	}
	// The node itself, started again, cannot register: what it meets
	// until its deadline is that refusal, not silence. (It retries: the
	// alert does not say why the certificate is refused.)
	back := &swarm.Node{Dir: gone.Dir, Executor: &agent.FakeExecutor{}}
	t.Cleanup(func() { back.Close() })
	sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := back.Start(sctx); !certRefused(err) {
		t.Fatalf("a removed node started: %v; want the bad-certificate refusal", err)
	}
}

// firstRead dials the management port at addr with cert on the API
// protocol and reads: a server that takes the certificate speaks first
// (HTTP/2 opens with its settings), one that refuses it sends an alert
// or resets. It returns the read's error and how long the answer took.
func firstRead(addr string, cert tls.Certificate, root *ca.Root) (time.Duration, error) {
	start := time.Now()
	conf := ca.ClientConfig(cert, root, ca.RoleManager)
	conf.NextProtos = []string{swarm.ProtoAPI}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, conf)
	if err != nil {
		return time.Since(start), err
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = c.Read(make([]byte, 1))
	return time.Since(start), err
}

// certRefused reports whether err is a TLS server's refusal of the client's
// certificate: the "bad certificate" alert or, since the server closes the
// connection after it (and with TLS 1.3 the client's handshake ends before
// the server has checked its certificate), a reset or a broken pipe for a
// client that was still writing, or for an HTTP/2 client that was waiting
// for the server's settings, "client conn could not be established". The
// text counts as well: a node's start error carries its last attempt's
// error as text. (A server that hangs gives none of these: a timeout.)
func certRefused(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "remote error: tls: bad certificate") || strings.Contains(msg, "connection reset by peer") || strings.Contains(msg, "broken pipe") || strings.Contains(msg, "http2: client conn could not be established")
}

// Rotating the manager join token: a manager joining with the old one is
// refused (and Raft does not grow), the worker token is untouched, a
// manager joins with the new one, and the nodes joined before keep their
// certificates: a manager and a worker restarted from their dirs after
// the rotation come back ready.
func TestManagerTokenRotation(t *testing.T) {
	ctx := context.Background()
	c := swarmtest.NewTLS(t, swarmtest.TLSOptions{Managers: 2, Workers: 1})
	cl := c.Client()
	before, err := cl.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	after, err := cl.RotateJoinToken(ctx, api.RoleManager)
	if err != nil {
		t.Fatal(err)
	}
	// (Tokens are secrets: compared, not printed.)
	if after.JoinTokens.Manager == before.JoinTokens.Manager || after.JoinTokens.Worker != before.JoinTokens.Worker {
		t.Fatalf("rotating the manager token: manager token changed %t, worker token changed %t; want true, false",
			after.JoinTokens.Manager != before.JoinTokens.Manager, after.JoinTokens.Worker != before.JoinTokens.Worker)
	}
	seed := c.Node("m0").Addr()
	late := tnode(t)
	if err := late.Join(ctx, before.JoinTokens.Manager, seed); err == nil || !strings.Contains(err.Error(), "join token is not valid") {
		t.Fatalf("a manager join with the rotated token: %v", err)
	}
	if _, err := os.Stat(filepath.Join(late.Dir, "node.json")); !os.IsNotExist(err) {
		t.Fatalf("a refused join left node.json: %v", err)
	}
	if srvs, err := c.Node(c.LeaderName()).Manager().Store().Servers(ctx); err != nil || len(srvs) != 2 {
		t.Fatalf("the Raft configuration after a refused join: %v %v", srvs, err)
	}
	w := tnode(t)
	w.ListenAddr = ""
	if err := w.Join(ctx, before.JoinTokens.Worker, seed); err != nil {
		t.Fatalf("a worker join with the worker token, which did not rotate: %v", err)
	}
	nodeReady(t, w)
	m := tnode(t)
	if err := m.Join(ctx, after.JoinTokens.Manager, seed); err != nil {
		t.Fatalf("a manager join with the new token: %v", err)
	}
	nodeReady(t, m)
	if m.Role() != "manager" {
		t.Fatalf("joined with the new manager token as a %s", m.Role())
	}
	// Joined before the rotation: restarted, they register again with
	// the certificates they had (Restart fails the test otherwise), and
	// the manager takes writes.
	for _, nm := range []string{"m1", "node0"} {
		c.Kill(nm)
		c.Restart(nm)
	}
	if _, err := c.Node("m1").Client().CreateService(ctx, service("after-rotation", api.Replicated(1))); err != nil {
		t.Fatalf("a write through a manager joined before the rotation: %v", err)
	}
}

// Three managers over TLS: two join with the manager token (non-voters
// until they catch up, then voters); the Client works against any of them
// (followers pass writes to the leader); the leader dies and the others go
// on; a manager restarted from its dir comes back.
func TestManagersJoinAndFailOver(t *testing.T) {
	ctx := context.Background()
	m0, c := initNode(t)
	nodes := []*swarm.Node{m0}
	for range 2 {
		m := tnode(t)
		if err := m.Join(ctx, c.JoinTokens.Manager, m0.Addr()); err != nil {
			t.Fatal(err)
		}
		nodeReady(t, m)
		if m.Role() != "manager" || m.Manager() == nil {
			t.Fatalf("joined as %s", m.Role())
		}
		nodes = append(nodes, m)
	}
	waitfor.True(t, "3 voters", func() bool {
		srvs, err := m0.Manager().Store().Servers(ctx)
		if err != nil {
			return false
		}
		voters := 0
		for _, s := range srvs {
			if s.Voter {
				voters++
			}
		}
		return voters == 3
	})
	// Writes through a follower reach the leader.
	var follower *swarm.Node
	for _, n := range nodes {
		if !n.Manager().IsLeader() {
			follower = n
		}
	}
	svc, err := follower.Client().CreateService(ctx, service("web", api.Replicated(3)))
	if err != nil {
		t.Fatalf("create through a follower: %v", err)
	}
	waitfor.True(t, "3 running", func() bool { return len(running(t, m0.Client(), svc.ID)) == 3 })

	// The leader dies; a survivor takes writes within seconds.
	var leader *swarm.Node
	for _, n := range nodes {
		if n.Manager().IsLeader() {
			leader = n
		}
	}
	leaderDir := leader.Dir
	leader.Close()
	var alive []*swarm.Node
	for _, n := range nodes {
		if n != leader {
			alive = append(alive, n)
		}
	}
	took := waitfor.True(t, "a write through a survivor after the leader died", func() bool {
		_, err := alive[0].Client().ScaleService(ctx, "web", 4)
		return err == nil
	})
	t.Logf("write accepted %v after the leader died", took)
	waitfor.True(t, "4 running", func() bool { return len(running(t, alive[1].Client(), svc.ID)) == 4 })
	// The old leader comes back from its dir, as a follower.
	back := &swarm.Node{Dir: leaderDir, Executor: &agent.FakeExecutor{}, HeartbeatPeriod: 300 * time.Millisecond}
	t.Cleanup(func() { back.Close() })
	if err := back.Start(ctx); err != nil {
		t.Fatal(err)
	}
	nodeReady(t, back)
	if _, err := back.Client().ScaleService(ctx, "web", 2); err != nil {
		t.Fatalf("write through the restarted manager: %v", err)
	}
	waitfor.True(t, "2 running", func() bool { return len(running(t, back.Client(), svc.ID)) == 2 })
}

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("SHOAL_TEST_DEBUG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// setNodeRole makes node id a manager or a worker through cl, reading the
// node again when it changed between the read and the update.
func setNodeRole(ctx context.Context, cl *swarm.Client, id string, role api.NodeRole) error {
	for {
		n, err := cl.Node(ctx, id)
		if err != nil {
			return err
		}
		spec := n.Spec
		spec.Role = role
		_, err = cl.UpdateNode(ctx, id, n.Version, spec)
		if !errors.Is(err, raftstore.ErrConflict) { // the node changed meanwhile: read it again
			return err
		}
	}
}

// raftMember reports whether node id is in the Raft configuration as the
// manager m sees it, and whether it votes.
func raftMember(ctx context.Context, m *swarm.Node, id string) (in, votes bool) {
	srvs, err := m.Manager().Store().Servers(ctx)
	if err != nil {
		return false, false
	}
	for _, s := range srvs {
		if s.ID == id {
			return true, s.Voter
		}
	}
	return false, false
}

// Promotion and demotion: a worker promoted becomes a voting manager; a
// manager demoted leaves Raft and stops managing; demoting the last
// manager is refused.
func TestPromoteAndDemote(t *testing.T) {
	ctx := context.Background()
	m0 := tnode(t)
	if err := m0.Init(ctx); err != nil {
		t.Fatal(err)
	}
	nodeReady(t, m0)
	cl := m0.Client()
	c, _ := cl.Cluster(ctx)
	w := tnode(t) // with a listen address, so it can manage once promoted
	if err := w.Join(ctx, c.JoinTokens.Worker, m0.Addr()); err != nil {
		t.Fatal(err)
	}
	nodeReady(t, w)
	setRole := func(id string, role api.NodeRole) error { return setNodeRole(ctx, cl, id, role) }
	// The only manager cannot be demoted.
	if err := setRole(m0.ID(), api.RoleWorker); err == nil || !strings.Contains(err.Error(), "last manager") {
		t.Fatalf("demoting the last manager: %v", err)
	}
	if err := setRole(w.ID(), api.RoleManager); err != nil {
		t.Fatal(err)
	}
	voter := func(id string) (in, votes bool) { return raftMember(ctx, m0, id) }
	waitfor.True(t, "the promoted worker votes", func() bool {
		_, votes := voter(w.ID())
		return votes && w.Role() == "manager" && w.Manager() != nil
	})
	// Its new manager takes writes like any other (through it, forwarded).
	if _, err := w.Client().CreateService(ctx, service("after-promotion", api.Replicated(1))); err != nil {
		t.Fatalf("write through the promoted manager: %v", err)
	}
	// Demoted again: out of Raft, and no longer managing.
	if err := setRole(w.ID(), api.RoleWorker); err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, "the demoted manager left Raft and stopped managing", func() bool {
		in, _ := voter(w.ID())
		return !in && w.Role() == "worker" && w.Manager() == nil
	})
	if _, err := os.Stat(filepath.Join(w.Dir, "manager")); !os.IsNotExist(err) {
		var left []string
		filepath.WalkDir(filepath.Join(w.Dir, "manager"), func(p string, d os.DirEntry, err error) error {
			left = append(left, p)
			return nil
		})
		t.Fatalf("the demoted node kept its Raft data: %v %v", err, left)
	}
}

// Three managers over TLS, one stopped and seen down: demoting either of
// the two left would leave one manager up of the two voters left, short of
// a quorum, and is refused with a bad-request error saying so (nothing
// changes); once the stopped manager is back and ready, the same demotion
// goes through.
func TestDemotionRefusedShortOfQuorum(t *testing.T) {
	ctx := context.Background()
	c := swarmtest.NewTLS(t, swarmtest.TLSOptions{Managers: 3})
	leader := c.LeaderName()
	var followers []string
	for _, nm := range []string{"m0", "m1", "m2"} {
		if nm != leader {
			followers = append(followers, nm)
		}
	}
	down, demoted := followers[0], followers[1]
	downID, demotedID := c.NodeID(down), c.NodeID(demoted)
	waitfor.True(t, "3 voters", func() bool {
		for _, nm := range []string{"m0", "m1", "m2"} {
			if _, votes := raftMember(ctx, c.Node(leader), c.NodeID(nm)); !votes {
				return false
			}
		}
		return true
	})
	state := func(id string) api.NodeState {
		n, err := c.Node(leader).Client().Node(ctx, id)
		if err != nil {
			return ""
		}
		return n.Status.State
	}
	c.Kill(down)
	waitfor.True(t, "the stopped manager is seen down", func() bool { return state(downID) == api.NodeDown })

	cl := c.Node(leader).Client()
	err := setNodeRole(ctx, cl, demotedID, api.RoleWorker)
	want := fmt.Sprintf("demoting node %s would leave 1 of 2 managers up, short of a quorum of 2", demotedID)
	if !errors.Is(err, api.ErrInvalidSpec) || !strings.Contains(err.Error(), want) {
		t.Fatalf("demotion with a manager down: got %v, want api.ErrInvalidSpec saying %q", err, want)
	}
	t.Logf("refused: %v", err)
	if n, err := cl.Node(ctx, demotedID); err != nil || n.Spec.Role != api.RoleManager {
		t.Fatalf("the refused demotion changed the node: %+v %v", n, err)
	}
	if _, votes := raftMember(ctx, c.Node(leader), demotedID); !votes {
		t.Fatal("the refused demotion took the manager out of the voters")
	}

	c.Restart(down)
	waitfor.True(t, "the restarted manager is ready", func() bool { return state(downID) == api.NodeReady })
	if err := setNodeRole(ctx, cl, demotedID, api.RoleWorker); err != nil {
		t.Fatalf("demotion with the three managers up: %v", err)
	}
	waitfor.True(t, "the demoted manager left Raft", func() bool {
		in, _ := raftMember(ctx, c.Node(leader), demotedID)
		return !in && c.Node(demoted).Role() == "worker"
	})
}

// 3 managers and 5 workers over TLS: the Client drives every workflow
// against any manager: create, scale, update, rollback, remove, a global
// service that reaches a node joining later, a job, drain; certificates
// renew themselves (short validity) and the cluster goes on; a silent TCP
// client on the management port does not hold up a join.
func TestClientDrivesATLSCluster(t *testing.T) {
	ctx := context.Background()
	m0 := tnode(t)
	if err := m0.Init(ctx); err != nil {
		t.Fatal(err)
	}
	nodeReady(t, m0)
	c, _ := m0.Client().Cluster(ctx)
	managers := []*swarm.Node{m0}
	for range 2 {
		m := tnode(t)
		if err := m.Join(ctx, c.JoinTokens.Manager, m0.Addr()); err != nil {
			t.Fatal(err)
		}
		managers = append(managers, m)
	}
	for range 5 {
		w := tnode(t)
		w.ListenAddr = ""
		if err := w.Join(ctx, c.JoinTokens.Worker, managers[1].Addr()); err != nil { // any manager
			t.Fatal(err)
		}
	}
	clients := []*swarm.Client{managers[0].Client(), managers[1].Client(), managers[2].Client()}
	cl := func(i int) *swarm.Client { return clients[i%3] }
	waitfor.True(t, "8 nodes ready", func() bool {
		ns, err := cl(0).Nodes(ctx, swarm.Filter{})
		ready := 0
		for _, n := range ns {
			if n.Status.State == api.NodeReady {
				ready++
			}
		}
		return err == nil && ready == 8
	})

	svc, err := cl(1).CreateService(ctx, service("web", api.Replicated(4)))
	if err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, "4 running", func() bool { return len(running(t, cl(2), svc.ID)) == 4 })
	if _, err := cl(2).ScaleService(ctx, "web", 8); err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, "8 running", func() bool { return len(running(t, cl(0), svc.ID)) == 8 })
	cur, _ := cl(1).Service(ctx, "web")
	up := cur.Spec
	up.TaskTemplate.Image = "example/web:2"
	up.UpdateConfig = &api.UpdateConfig{Parallelism: 4, Monitor: 50 * time.Millisecond}
	up.RollbackConfig = &api.UpdateConfig{Parallelism: 4, Monitor: 50 * time.Millisecond}
	if _, err := cl(2).UpdateService(ctx, cur.ID, cur.Version, up); err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, "updated", func() bool {
		s, err := cl(0).Service(ctx, "web")
		return err == nil && s.UpdateStatus != nil && s.UpdateStatus.State == api.UpdateCompleted && clientImages(cl(1), t, svc.ID)["example/web:2"] == 8
	})
	if _, err := cl(1).RollbackService(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, "rolled back", func() bool { return clientImages(cl(2), t, svc.ID)["example/web:1"] == 8 })

	// A global service, and a node that joins later gets it.
	g, err := cl(0).CreateService(ctx, service("agent", api.Global()))
	if err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, "one per node", func() bool { return len(running(t, cl(1), g.ID)) == 8 })
	late := tnode(t)
	late.ListenAddr = ""
	if err := late.Join(ctx, c.JoinTokens.Worker, m0.Addr()); err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, "the late node runs the global service", func() bool {
		for _, tk := range running(t, cl(2), g.ID) {
			if tk.NodeID == late.ID() {
				return true
			}
		}
		return false
	})
	// A job runs to completion.
	job := service("migrate", api.ServiceMode{ReplicatedJob: &api.ReplicatedJob{MaxConcurrent: 2, TotalCompletions: 4}})
	job.TaskTemplate.RestartPolicy = nil
	job.TaskTemplate.Image = onceImage
	js, err := cl(1).CreateService(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, "4 completions", func() bool {
		ts, err := cl(2).Tasks(ctx, swarm.Filter{Services: []string{js.ID}})
		done := 0
		for _, tk := range ts {
			if tk.Status.State == api.TaskComplete {
				done++
			}
		}
		return err == nil && done == 4
	})
	// Drain: the node keeps no running task.
	getNode := func(id string) (*api.Node, error) { return cl(0).Node(ctx, id) }
	editNode(t, cl(2), getNode, late.ID(), func(s *api.NodeSpec) { s.Availability = api.NodeDrain })
	waitfor.True(t, "the drained node runs nothing", func() bool {
		ts, err := cl(0).Tasks(ctx, swarm.Filter{Nodes: []string{late.ID()}})
		if err != nil {
			return false
		}
		for _, tk := range ts {
			if tk.Status.State == api.TaskRunning && tk.DesiredState == api.TaskRunning {
				return false
			}
		}
		return true
	})
	if err := cl(0).RemoveService(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, "removed", func() bool {
		ts, err := cl(1).Tasks(ctx, swarm.Filter{Services: []string{svc.ID}})
		return err == nil && len(ts) == 0
	})

	// Short certificates renew themselves before they expire.
	cur2, _ := cl(0).Cluster(ctx)
	cs := cur2.Spec
	cs.CAConfig.NodeCertExpiry = 15 * time.Second
	if _, err := cl(0).UpdateCluster(ctx, cur2.Version, cs); err != nil {
		t.Fatal(err)
	}
	if err := late.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	first := late.Certificate()
	if v := first.NotAfter.Sub(first.NotBefore); v > 2*time.Minute {
		t.Fatalf("renewed for %v, want about 15 s", v)
	}
	waitfor.Within(t, 20*time.Second, "renewed by itself before expiry", func() bool {
		cur := late.Certificate()
		return cur.SerialNumber.Cmp(first.SerialNumber) != 0 && time.Now().Before(first.NotAfter)
	})
	// Still a member: it reports, heartbeats and can be used.
	editNode(t, cl(2), getNode, late.ID(), func(s *api.NodeSpec) { s.Availability = api.NodeActive })
	waitfor.True(t, "the renewed node runs the global service again", func() bool {
		for _, tk := range running(t, cl(2), g.ID) {
			if tk.NodeID == late.ID() {
				return true
			}
		}
		return false
	})
	// A silent client on the management port does not hold up a join.
	silent, err := net.Dial("tcp", m0.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	c3, _ := cl(0).Cluster(ctx)
	another := tnode(t)
	another.ListenAddr = ""
	jctx, cancel := context.WithTimeout(ctx, 4*time.Second) // the silent one is dropped after 5 s
	defer cancel()
	if err := another.Join(jctx, c3.JoinTokens.Worker, m0.Addr()); err != nil {
		t.Fatalf("join beside a silent client: %v", err)
	}
}

// The TLS test kit: a cluster of nodes over TLS on loopback; the leader
// killed, a manager restarted from its dir.
func TestTLSKit(t *testing.T) {
	ctx := context.Background()
	c := swarmtest.NewTLS(t, swarmtest.TLSOptions{Managers: 3, Workers: 2})
	svc, err := c.Client().CreateService(ctx, service("web", api.Replicated(4)))
	if err != nil {
		t.Fatal(err)
	}
	c.WaitFor("4 running", func() bool { return len(running(t, c.Client(), svc.ID)) == 4 })
	leader := c.LeaderName()
	c.Kill(leader)
	c.WaitFor("a write accepted after the leader was killed", func() bool {
		_, err := c.Client().ScaleService(ctx, "web", 2)
		return err == nil
	})
	c.Restart(leader)
	c.WaitFor("2 running", func() bool { return len(running(t, c.Client(), svc.ID)) == 2 })
}

// The event stream is ordered and resumable; with a quorum of managers
// gone, writes fail with a clear "no quorum" and tasks keep running; a
// worker leaves for good.
func TestEventsNoQuorumAndLeave(t *testing.T) {
	ctx := context.Background()
	c := swarmtest.NewTLS(t, swarmtest.TLSOptions{Managers: 3, Workers: 2})
	cl := c.Client()
	evctx, stop := context.WithCancel(ctx)
	defer stop()
	events, err := cl.Events(evctx, 0, "service")
	if err != nil {
		t.Fatal(err)
	}
	svc, err := cl.CreateService(ctx, service("web", api.Replicated(2)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.ScaleService(ctx, "web", 3); err != nil {
		t.Fatal(err)
	}
	var seen []swarm.Event
	waitfor.True(t, "create and update events", func() bool {
		select {
		case ev := <-events:
			seen = append(seen, ev)
		default:
		}
		return len(seen) >= 2
	})
	if seen[0].Action != "create" || seen[0].ID != svc.ID || seen[1].Action != "update" || seen[1].Index <= seen[0].Index {
		t.Fatalf("events %+v", seen)
	}
	// Resumed after the first: the second comes again, nothing before it.
	again, err := cl.Events(evctx, seen[0].Index, "service")
	if err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-again:
		if ev.Index != seen[1].Index {
			t.Fatalf("resumed at %d, got %d first", seen[0].Index, ev.Index)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a resumed stream gave nothing")
	}
	if _, err := cl.Events(evctx, 0, "bogus"); !errors.Is(err, api.ErrInvalidSpec) {
		t.Fatalf("events of an unknown type: %v", err)
	}
	c.WaitFor("3 running", func() bool { return len(running(t, cl, svc.ID)) == 3 })

	// A worker leaves: its tasks stop, its state is gone, its node is
	// down on the managers.
	w := c.Node("node1")
	wid := w.ID()
	if err := w.Leave(ctx, false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(w.Dir, "node.json")); !os.IsNotExist(err) {
		t.Fatalf("a node that left kept its state: %v", err)
	}
	c.WaitFor("the node that left is down", func() bool {
		n, err := cl.Node(ctx, wid)
		return err == nil && n.Status.State == api.NodeDown
	})
	if err := c.Node("m1").Leave(ctx, false); !errors.Is(err, api.ErrInvalidSpec) {
		t.Fatalf("a manager leaving without demotion: %v", err)
	}

	// The task that ran on the node that left is replaced first, so that
	// the count below is not taken in the middle of that move.
	before := 0
	c.WaitFor("3 tasks running again", func() bool {
		before = 0
		for _, nm := range c.Names() {
			before += runningFakes(c.Exec(nm))
		}
		return before == 3 && len(running(t, cl, svc.ID)) == 3
	})

	// Two of three managers gone: no quorum.
	leader := c.LeaderName()
	var others []string
	for _, nm := range []string{"m0", "m1", "m2"} {
		if nm != leader {
			others = append(others, nm)
		}
	}
	c.Kill(others[0])
	c.Kill(leader)
	survivor := c.Node(others[1]).Client()
	// Once the survivor has given up on the old leader (a heartbeat
	// timeout), it says why writes fail; they never hang.
	c.WaitFor("writes refused for want of a quorum", func() bool {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := survivor.ScaleService(wctx, "web", 1)
		if err == nil {
			t.Fatal("a write without quorum was accepted")
		}
		if wctx.Err() != nil {
			t.Fatal("a write without quorum hung")
		}
		return strings.Contains(err.Error(), "no quorum")
	})
	// The tasks run on (a node's tasks outlive its agent, and the others'
	// agents keep them).
	after := 0
	for _, nm := range c.Names() {
		after += runningFakes(c.Exec(nm))
	}
	if before == 0 || after != before {
		t.Fatalf("%d tasks ran before the managers lost quorum, %d after", before, after)
	}
}

// runningFakes counts the tasks a fake executor runs.
func runningFakes(e *agent.FakeExecutor) int {
	ids, _ := e.Adopt(context.Background())
	n := 0
	for _, id := range ids {
		if in, err := e.Inspect(context.Background(), id); err == nil && in.Running {
			n++
		}
	}
	return n
}

// The event stream never carries a secret's data: the API never returns
// it.
func TestEventsRedactSecrets(t *testing.T) {
	ctx := context.Background()
	c := swarmtest.NewTLS(t, swarmtest.TLSOptions{Managers: 1})
	cl := c.Client()
	evctx, stop := context.WithCancel(ctx)
	defer stop()
	events, err := cl.Events(evctx, 0, "secret")
	if err != nil {
		t.Fatal(err)
	}
	sec, err := cl.CreateSecret(ctx, api.SecretSpec{Annotations: api.Annotations{Name: "pw"}, Data: []byte("hunter2")})
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.RemoveSecret(ctx, sec.ID); err != nil {
		t.Fatal(err)
	}
	for _, action := range []string{"create", "remove"} {
		select {
		case ev := <-events:
			var got api.Secret
			if ev.Action != action || ev.ID != sec.ID || json.Unmarshal(ev.Object, &got) != nil || got.Spec.Name != "pw" {
				t.Fatalf("want the %s event of secret pw, got %+v", action, ev)
			}
			if len(got.Spec.Data) != 0 || strings.Contains(string(ev.Object), base64.StdEncoding.EncodeToString([]byte("hunter2"))) {
				t.Fatalf("the %s event holds the secret's data: %s", action, ev.Object)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("no %s event", action)
		}
	}
}

// slowStop stops tasks as a real runtime does: not at once.
type slowStop struct{ *agent.FakeExecutor }

func (s slowStop) Shutdown(ctx context.Context, id string, grace time.Duration) error {
	time.Sleep(300 * time.Millisecond)
	return s.FakeExecutor.Shutdown(ctx, id, grace)
}

// A worker that leaves takes its tasks down with it as a node that is
// gone, not as tasks that completed: a service restarted only on failure
// (the tutorials' stacks) gets them replaced elsewhere.
func TestLeaveReplacesOnFailureTasks(t *testing.T) {
	ctx := context.Background()
	m0 := tnode(t)
	if err := m0.Init(ctx); err != nil {
		t.Fatal(err)
	}
	nodeReady(t, m0)
	cl := m0.Client()
	c, err := cl.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The program exits 0 on SIGTERM, as the test app does.
	fake := &agent.FakeExecutor{StopCodes: map[string]int{"example/web:1": 0}}
	w := &swarm.Node{Dir: t.TempDir(), Executor: slowStop{fake}, Logger: testLogger(t), HeartbeatPeriod: 300 * time.Millisecond}
	t.Cleanup(func() { w.Close(); fake.ExitAll() })
	if err := w.Join(ctx, c.JoinTokens.Worker, m0.Addr()); err != nil {
		t.Fatal(err)
	}
	nodeReady(t, w)
	spec := service("web", api.Replicated(4))
	zero := time.Duration(0)
	spec.TaskTemplate.RestartPolicy = &api.RestartPolicy{Condition: api.RestartOnFailure, Delay: &zero}
	svc, err := cl.CreateService(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	wid := w.ID()
	waitfor.True(t, "4 running, some on the worker", func() bool {
		rs := running(t, cl, svc.ID)
		return len(rs) == 4 && slices.ContainsFunc(rs, func(tk *api.Task) bool { return tk.NodeID == wid })
	})
	if err := w.Leave(ctx, false); err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, "4 running again, none on the node that left", func() bool {
		rs := running(t, cl, svc.ID)
		return len(rs) == 4 && !slices.ContainsFunc(rs, func(tk *api.Task) bool { return tk.NodeID == wid })
	})
	ts, _ := cl.Tasks(ctx, swarm.Filter{Services: []string{svc.ID}})
	for _, tk := range ts {
		if tk.NodeID == wid && tk.Status.State == api.TaskComplete {
			t.Fatalf("a task of the node that left was reported complete (not replaced: restart on failure): %+v", tk.Status)
		}
	}
}

// A list answer may be larger than any request: 20 tasks that each carry
// a 1 MiB environment are 20 MB of JSON, over the 16 MiB bound on request
// bodies, and the client reads them whole. Requests stay bounded.
func TestClientReadsListsLargerThanRequests(t *testing.T) {
	ctx := context.Background()
	c := swarmtest.NewTLS(t, swarmtest.TLSOptions{})
	cl := c.Client()
	spec := service("big", api.Replicated(20))
	spec.TaskTemplate.Env = []string{"BIG=" + strings.Repeat("x", 1<<20)}
	// No node matches: the tasks stay pending, nothing needs to run them.
	spec.TaskTemplate.Placement = &api.Placement{Constraints: []string{"node.labels.nowhere==true"}}
	svc, err := cl.CreateService(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	var tasks []*api.Task
	// 20 MB through Raft takes a while under the race detector (6 s
	// without, 30 s with on two busy cores): this test is about sizes,
	// so it waits longer than the default.
	waitfor.Within(t, 3*time.Minute, "20 tasks listed", func() bool {
		tasks, err = cl.Tasks(ctx, swarm.Filter{Services: []string{svc.ID}})
		if err != nil {
			t.Fatalf("listing 20 tasks of 1 MiB each: %v", err)
		}
		return len(tasks) == 20
	})
	size := 0
	for _, tk := range tasks {
		size += len(tk.Spec.Env[0])
	}
	if size <= 16<<20 {
		t.Fatalf("the tasks' environments add up to %d bytes: not over the request bound", size)
	}
	huge := service("huge", api.Replicated(1))
	huge.TaskTemplate.Env = []string{"HUGE=" + strings.Repeat("x", 17<<20)}
	if _, err := cl.CreateService(ctx, huge); !errors.Is(err, api.ErrInvalidSpec) {
		t.Fatalf("a 17 MiB request: %v, want it refused as a bad request", err)
	}
}

// Nodes shows managers with their place in Raft, as docker node ls: the
// leader, reachable or not, the management address; workers have none.
func TestNodesShowManagerStatus(t *testing.T) {
	ctx := context.Background()
	c := swarmtest.NewTLS(t, swarmtest.TLSOptions{Managers: 3, Workers: 1})
	cl := c.Client()
	check := func(down string) bool {
		ns, err := cl.Nodes(ctx, swarm.Filter{})
		if err != nil {
			return false
		}
		byID := map[string]*api.Node{}
		for _, n := range ns {
			byID[n.ID] = n
		}
		leader := c.LeaderName()
		for _, name := range []string{"m0", "m1", "m2"} {
			n := byID[c.NodeID(name)]
			if n == nil || n.ManagerStatus == nil {
				return false
			}
			want := api.ReachabilityReachable
			if name == down {
				want = api.ReachabilityUnreachable
			}
			ms := n.ManagerStatus
			if ms.Leader != (name == leader) || ms.Reachability != want || ms.Addr != c.Node(name).Addr() {
				return false
			}
		}
		w := byID[c.NodeID("node0")]
		if w == nil || w.ManagerStatus != nil {
			t.Fatalf("the worker: %+v", w)
		}
		return true
	}
	c.WaitFor("managers with their status", func() bool { return check("") })
	var follower string
	for _, name := range []string{"m1", "m2"} {
		if name != c.LeaderName() {
			follower = name
		}
	}
	c.Kill(follower)
	cl = c.Client()
	c.WaitFor("the killed manager unreachable", func() bool { return check(follower) })
}
