#!/usr/bin/env bash
# Shoal's main job in one command, on a fresh Debian machine, as root:
# installs what is missing, builds shoald, shoalctl and the quickstart
# driver, then makes a cluster of 3 managers and 2 workers, each a real
# shoald on a network-namespace host of this machine with its own address
# and hostname, with a private containerd; deploys a demo stack and answers
# requests through the routing mesh on every host. The cluster keeps
# running; the command prints how to use it (docker CLI, shoalctl).
#
#   ./scripts/quickstart.sh           # make the cluster (again: says it runs, and how to use it)
#   ./scripts/quickstart.sh status    # does it run, and how to use it
#   ./scripts/quickstart.sh down      # remove every process, container, mount, namespace and file it made
#
# Flags go to examples/quickstart (-dir, default /var/lib/shoal-quickstart;
# -netns-prefix, default shoalqs; -stack FILE; -requests N).
set -euo pipefail
QUICKSTART_START=$(date +%s.%N)
export QUICKSTART_START
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "quickstart: run as root (the hosts are network namespaces)" >&2
  exit 1
fi
# containerd and runc run the tasks (the quickstart starts its own
# containerd: no containerd service needed); nftables and iproute2 make the
# hosts, the overlay and the routing mesh; util-linux has nsenter; tini is
# the init of tasks that ask for one.
packages=(containerd runc nftables iproute2 util-linux tini)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "== installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
export PATH=$PATH:/usr/local/go/bin
command -v go >/dev/null || { echo "Go is required (https://go.dev/dl); this machine image ships it in /usr/local/go" >&2; exit 1; }

bin=$(mktemp -d /tmp/shoal-quickstart-build-XXXXXX)
trap 'rm -rf "$bin"' EXIT
echo "== building shoald, shoalctl and the quickstart driver"
go build -o "$bin/shoald" ./examples/shoald
go build -o "$bin/shoalctl" ./examples/shoalctl
go build -o "$bin/quickstart" ./examples/quickstart
# The driver copies the binaries it leaves running into its directory. On
# failure or Ctrl-C it removes what it made.
"$bin/quickstart" -shoald "$bin/shoald" -shoalctl "$bin/shoalctl" "$@"
