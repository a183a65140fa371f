package swarm_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/nettest"
	"github.com/shoalproject/shoal/internal/testimages"
	"github.com/shoalproject/shoal/internal/waitfor"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

// meshLoad sends requests through the routing mesh from a lab host,
// each on a new connection, from a few clients at once, and counts them.
type meshLoad struct {
	mu       sync.Mutex
	ok, fail int
	errs     []string
	stop     chan struct{}
	wg       sync.WaitGroup
}

func startLoad(h *nettest.Host, url string, clients int) *meshLoad {
	l := &meshLoad{stop: make(chan struct{})}
	for range clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				_, err := getFrom(h, url)
				l.mu.Lock()
				if err != nil {
					l.fail++
					if len(l.errs) < 5 {
						l.errs = append(l.errs, time.Now().Format("15:04:05.000")+" "+err.Error())
					}
				} else {
					l.ok++
				}
				l.mu.Unlock()
			}
		}()
	}
	return l
}

func (l *meshLoad) counts() (int, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ok, l.fail
}

// during runs fn under the load and returns the requests answered per
// second and the requests that failed while it ran.
func (l *meshLoad) during(fn func()) (perSec float64, failed int) {
	ok0, f0 := l.counts()
	start := time.Now()
	fn()
	ok1, f1 := l.counts()
	return float64(ok1-ok0) / time.Since(start).Seconds(), f1 - f0
}

func (l *meshLoad) close() {
	close(l.stop)
	l.wg.Wait()
}

// The figures of the network through the cluster, on three namespace
// hosts (a manager, two workers) with real containers:
//
//   - create-to-mesh: from service create (3 replicas, a published port)
//     to the first request answered through the routing mesh on the
//     manager's host, which runs no task of it;
//   - requests per second through the mesh under steady load (4 clients,
//     a new connection each), before, during a rolling update, and during
//     a scale 3 -> 1, with the requests that failed in each phase.
//
// go test -run '^$' -bench MeshFigures -benchtime 1x ./swarm/
func BenchmarkMeshFigures(b *testing.B) {
	c := newNetCluster(b, 1, 2)
	ctx := context.Background()
	cl := c.client
	h0 := c.lab.Hosts[0]
	url := "http://" + h0.Addr.String() + ":8080/"
	for i := 0; i < b.N; i++ {
		name := fmt.Sprint("web", i)
		spec := service(name, api.Replicated(3))
		spec.TaskTemplate.Image, spec.TaskTemplate.Args = testimages.AppRef, []string{"http", ":80"}
		spec.TaskTemplate.Placement = &api.Placement{Constraints: []string{"node.role==worker"}}
		spec.TaskTemplate.Healthcheck = &api.HealthConfig{Test: []string{"CMD", "/app", "get", "http://127.0.0.1:80/"}, Interval: 250 * time.Millisecond, Retries: 3}
		spec.EndpointSpec = &api.EndpointSpec{Ports: []api.PortConfig{{TargetPort: 80, PublishedPort: 8080}}}
		start := time.Now()
		svc, err := cl.CreateService(ctx, spec)
		if err != nil {
			b.Fatal(err)
		}
		waitfor.True(b, "the first request through the mesh", func() bool {
			_, err := getFrom(h0, url)
			return err == nil
		})
		toMesh := time.Since(start)
		waitfor.True(b, "3 running and healthy", func() bool {
			ts := runningTasks(cl, svc.ID)
			for _, tk := range ts {
				if tk.Status.Health != "healthy" {
					return false
				}
			}
			return len(ts) == 3
		})
		settled := time.Now()

		load := startLoad(h0, url, 4)
		before, failedBefore := load.during(func() { time.Sleep(3 * time.Second) })
		update, failedUpdate := load.during(func() {
			cur, err := cl.Service(ctx, svc.ID)
			if err != nil {
				b.Fatal(err)
			}
			sp := cur.Spec
			sp.TaskTemplate.Env = []string{"V=2"}
			sp.UpdateConfig = &api.UpdateConfig{Parallelism: 1}
			if _, err := cl.UpdateService(ctx, cur.ID, cur.Version, sp); err != nil {
				b.Fatal(err)
			}
			waitfor.True(b, "the rolling update done", func() bool {
				s, err := cl.Service(ctx, svc.ID)
				return err == nil && s.UpdateStatus != nil && s.UpdateStatus.State == api.UpdateCompleted
			})
		})
		scale, failedScale := load.during(func() {
			if _, err := cl.ScaleService(ctx, svc.ID, 1); err != nil {
				b.Fatal(err)
			}
			waitfor.True(b, "scaled to 1, the others stopped", func() bool {
				ts, err := cl.Tasks(ctx, swarm.Filter{Services: []string{svc.ID}})
				if err != nil {
					return false
				}
				n := 0
				for _, tk := range ts {
					if tk.Status.State <= api.TaskRunning && tk.Status.State >= api.TaskAssigned {
						n++
					}
				}
				return n == 1
			})
		})
		load.close()
		b.Logf("create to first request through the mesh on a host with no task: %v", toMesh.Round(time.Millisecond))
		b.Logf("requests/s through the mesh: %.0f before (failed %d), %.0f during the rolling update (%.0f%%, failed %d), %.0f during scale 3->1 (%.0f%%, failed %d)",
			before, failedBefore, update, 100*update/before, failedUpdate, scale, 100*scale/before, failedScale)
		b.Logf("settled at %s", settled.Format("15:04:05.000"))
		if len(load.errs) > 0 {
			b.Logf("first errors: %v", load.errs)
		}
		b.ReportMetric(float64(toMesh.Milliseconds()), "create-to-mesh-ms")
		b.ReportMetric(before, "req/s-before")
		b.ReportMetric(update/before, "update-rate-ratio")
		b.ReportMetric(scale/before, "scale-rate-ratio")
		b.ReportMetric(float64(failedBefore+failedUpdate+failedScale), "failed-requests")
		if err := cl.RemoveService(ctx, svc.ID); err != nil {
			b.Fatal(err)
		}
		waitfor.True(b, "the port free again", func() bool {
			_, err := getFrom(h0, url)
			return err != nil
		})
	}
}

// runningTasks lists a service's tasks that run and should.
func runningTasks(cl *swarm.Client, serviceID string) []*api.Task {
	ts, err := cl.Tasks(context.Background(), swarm.Filter{Services: []string{serviceID}})
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
