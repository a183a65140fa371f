#!/usr/bin/env bash
# Shoal's main job in one command, on a fresh Debian machine, as root:
# installs what is missing, builds shoald and the quickstart driver, then
# runs a cluster of real shoald processes on network-namespace hosts with a
# private containerd, deploys a stack from a Compose file and answers
# requests through the routing mesh on every host. Everything it makes is
# removed at the end, also on failure or Ctrl-C.
#
#   sudo ./scripts/quickstart.sh            # run and clean up
#   sudo ./scripts/quickstart.sh -keep      # keep the cluster up until Ctrl-C
#   sudo ./scripts/quickstart.sh -nodes 5   # flags go to examples/quickstart
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "quickstart: run as root (the hosts are network namespaces): sudo $0 $*" >&2
  exit 1
fi
# containerd and runc run the tasks; nftables and iproute2 make the hosts,
# the overlay and the routing mesh; util-linux has nsenter; tini is the
# init of tasks that ask for one.
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

bin=$(mktemp -d /tmp/shoal-quickstart-XXXXXX)
trap 'rm -rf "$bin"' EXIT
echo "== building shoald, shoalctl and the quickstart driver"
go build -o "$bin/shoald" ./examples/shoald
go build -o "$bin/shoalctl" ./examples/shoalctl
go build -o "$bin/quickstart" ./examples/quickstart
# The driver removes what it made on its way out (also on Ctrl-C, which
# reaches it directly: it runs in the foreground of this shell).
"$bin/quickstart" -shoald "$bin/shoald" -shoalctl "$bin/shoalctl" "$@"
