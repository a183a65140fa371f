#!/usr/bin/env bash
# Sets up and runs every Shoal test on a fresh Debian machine as root:
# installs what is missing, checks formatting, vets, runs the unit and
# integration tests (with the race detector where it matters), and runs each
# bench program briefly so that they keep working.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests need: containerd and runc for the agent's
# integration tests (each test starts its own private containerd daemon),
# tini for tasks that ask for an init process; iproute2 and nftables for
# the network-namespace test hosts (internal/nettest); iperf3 and wrk for the
# throughput and HTTP figures of examples/meshbench; util-linux's nsenter
# starts the real shoald binaries in the hosts of the end-to-end test
# (examples/shoald, which builds them itself).
packages=(containerd runc tini nftables iproute2 util-linux iperf3 wrk)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages ${missing[*]}: run as root so they can be installed" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
command -v go >/dev/null || { echo "Go is required (https://go.dev/dl); this machine image ships it in /usr/local/go" >&2; exit 1; }

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi

echo "== go vet"
go vet ./...
echo "== go build (every package and example program)"
go build ./...

echo "== go test"
go test -count=1 -timeout 15m ./...

# -short under the race detector: the long end-to-end sessions (docker CLI
# transcripts, the namespace-host clusters with real containers, the
# crash loops) ran in full just above; the race run covers every package's
# own tests.
echo "== go test -race -short (raftstore, agent, netmesh, swarm)"
go test -race -short -count=1 -timeout 15m ./raftstore/... ./agent/... ./netmesh/... ./swarm/...

echo "== benchmarks and bench programs, short runs"
# Each bench program is built once and run under a time limit: one that
# hangs (a containerd call that never returns) fails this script with a
# message naming it instead of holding CI until its own limit. SIGTERM
# first (agentbench, raftbench and clusterbench clean up their daemons on
# it, meshbench its namespaces), SIGKILL 30 s later if the program is
# still there (what a killed program leaves is swept by the next lab any
# test or bench makes).
benchbin=$(mktemp -d)
trap 'rm -rf "$benchbin"' EXIT
bench() {
  local name=$1 limit=$2
  shift 2
  go build -o "$benchbin/$name" "./examples/$name"
  local rc=0
  # --foreground: the bench stays in this script's process group, so an
  # interrupt of the script reaches it too.
  timeout --foreground --kill-after=30s "$limit" "$benchbin/$name" "$@" || rc=$?
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "examples/$name $*: still running after $limit, stopped (exit $rc)" >&2
  fi
  return "$rc"
}
go test -run '^$' -bench . -benchtime 1x -timeout 5m ./scheduler
bench schedbench 5m -suite -repeat 1
bench raftbench 5m -quick
bench agentbench 5m -tasks 5 -rounds 1 -timeout 4m
bench meshbench 8m -quick
bench clusterbench 10m -quick
# The Shoal half of the docker CLI figure only: the Docker Swarm half needs
# the docker.io package's dockerd (not installed here) and takes a minute.
if command -v docker >/dev/null; then
  bench clibench 5m -swarm=false -replicas 5
else
  echo "examples/clibench: skipped, no docker CLI on this machine"
fi
