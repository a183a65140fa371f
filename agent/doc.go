// Package agent runs tasks on a node. An Executor turns an assigned task
// into a running process; a Runner drives a task through ACCEPTED,
// PREPARING, READY, STARTING, RUNNING and on to COMPLETE, FAILED, SHUTDOWN
// or REJECTED, reporting every transition. The containerd executor lives in
// agent/containerd; FakeExecutor simulates one for tests.
//
//	r := &agent.Runner{Executor: exec, Report: func(u agent.StatusUpdate) { send(u) }}
//	final := r.Run(ctx, task) // cancel ctx to shut the task down
//
// A task with a health check is probed through Executor.Exec with Docker's
// semantics (interval, timeout, retries, start period); an unhealthy task is
// killed and reported FAILED so the managers replace it.
package agent
