#!/usr/bin/env bash
# Peak memory at the same data: after the etcd anchor's side-by-side
# (anchors/etcd-writes/run_side_by_side.sh) has written OUTDIR, run raftbench
# once per round with -objects set to the writes etcd's in-process run made in
# that round (1, 16 and 256 writers), so both processes end up holding the
# same number of objects, and print the max RSS of both and their ratio.
#
# The side-by-side compares for equal time (5 s per writer count), so the
# faster store writes more objects and its peak RSS is not comparable; this
# is the comparison at equal objects. Rounds the side-by-side left out
# (OUTDIR/dirty-rounds) are skipped.
#
#   SHOAL=/path/to/checkout ./run_side_by_side.sh          # in anchors/etcd-writes
#   examples/raftbench/same_objects.sh OUTDIR              # from the checkout
#
# ETCD (default etcd-inproc) names the etcd run to match; GO the go command.
set -euo pipefail
OUTDIR=${1:?usage: same_objects.sh OUTDIR (the side-by-side results dir)}
ETCD=${ETCD:-etcd-inproc}
GO=${GO:-go}
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=$(mktemp -d)
trap 'rm -rf "$BIN"' EXIT
(cd "$HERE/../.." && "$GO" build -o "$BIN/raftbench" ./examples/raftbench)
# writes: "w1,w16,w256" from a run's table (rows: writers writes/s p50 p99 writes).
writes() { awk '/^ +[0-9]+ +[0-9]+ +[^ ]+ +[^ ]+ +[0-9]+/ {printf "%s%s", sep, $5; sep = ","}' "$1"; }
writers() { awk '/^ +[0-9]+ +[0-9]+ +[^ ]+ +[^ ]+ +[0-9]+/ {printf "%s%s", sep, $1; sep = ","}' "$1"; }
rss() { awk '/^maxrss_kb/ {printf "%.0f", $2 / 1024}' "$1"; }
sum() { tr , '\n' <<<"$1" | awk '{s += $1} END {print s}'; }
printf '%6s %22s %10s %10s %8s\n' round "objects (per writers)" "$ETCD MB" "shoal MB" ratio
for f in "$OUTDIR"/[0-9]*-"$ETCD".txt; do
	r=$(basename "$f" | cut -d- -f1)
	if [ -f "$OUTDIR/dirty-rounds" ] && grep -qx "$r" "$OUTDIR/dirty-rounds"; then continue; fi
	n=$(writes "$f")
	out="$OUTDIR/$r-raftbench-same.txt"
	sync
	/usr/bin/time -f "maxrss_kb %M elapsed_s %e cpu_s %U %S" -o "$out.time" \
		"$BIN/raftbench" -only writes -writers "$(writers "$f")" -objects "$n" >"$out" 2>"$OUTDIR/$r-raftbench-same.err"
	cat "$out.time" >>"$out"
	e=$(rss "$f")
	s=$(rss "$out")
	got=$(writes "$out")
	if [ "$got" != "$n" ]; then echo "round $r: raftbench wrote $got, not $n (errors? see $out)" >&2; fi
	printf '%6s %22s %10s %10s %8s\n' "$r" "$(sum "$n") ($n)" "$e" "$s" "$(awk -v s="$s" -v e="$e" 'BEGIN {printf "x%.2f", s / e}')"
done
