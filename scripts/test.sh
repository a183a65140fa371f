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

echo "== go test"
go test -count=1 -timeout 15m ./...

# -short under the race detector: the long end-to-end sessions (docker CLI
# transcripts, the namespace-host clusters with real containers, the
# crash loops) ran in full just above; the race run covers every package's
# own tests.
echo "== go test -race -short (raftstore, agent, netmesh, swarm)"
go test -race -short -count=1 -timeout 15m ./raftstore/... ./agent/... ./netmesh/... ./swarm/...

echo "== benchmarks and bench programs, short runs"
go test -run '^$' -bench . -benchtime 1x ./scheduler
go run ./examples/schedbench -suite -repeat 1
go run ./examples/raftbench -quick
go run ./examples/agentbench -tasks 5 -rounds 1
go run ./examples/meshbench -quick
go run ./examples/clusterbench -quick
# The Shoal half of the docker CLI figure only: the Docker Swarm half needs
# the docker.io package's dockerd (not installed here) and takes a minute.
if command -v docker >/dev/null; then
  go run ./examples/clibench -swarm=false -replicas 5
else
  echo "examples/clibench: skipped, no docker CLI on this machine"
fi
