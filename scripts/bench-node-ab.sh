#!/usr/bin/env bash
# Benchmark (not a test): paired A/B of server binaries under the same put load, for changes
# smaller than the run-to-run drift of scripts/bench-node.sh. Every binary runs at once (by default
# one member each, loopback, temp data dirs); each round drives each of them in turn with
# `tonic_baseline tasks OP CALLERS SECONDS`, rotating the order, and the ratios against the
# first binary are taken within each round, where the drift of the machine cancels out.
#   scripts/bench-node-ab.sh CALLERS SECONDS ROUNDS BIN_A BIN_B [BIN...]
#   OP=range scripts/bench-node-ab.sh 16 3 8 /tmp/etcdc-node-before target/release/etcdc-node
# Prints each binary's ops/s per round and its median CPU per op (µs, from /proc), then per
# binary the median ratio of ops/s and of CPU per op against BIN_A. `MEMBERS=3`: each binary
# runs as a 3-member cluster (each member its own process), the load goes to its leader
# (`AT=follower`: to a follower) and the CPU is summed over its members.
#   MEMBERS=3 scripts/bench-node-ab.sh 1 3 8 /tmp/etcdc-node-before target/release/etcdc-node
set -euo pipefail
[ $# -ge 5 ] || { sed -n 2,10p "$0"; exit 2; }
CALLERS=$1; SECS=$2; ROUNDS=$3; shift 3
cd "$(dirname "$0")/.."
cargo build --release --locked --example tonic_baseline 2>/dev/null
TONIC="$PWD/target/release/examples/tonic_baseline"
. scripts/free-port.sh
. scripts/cluster.sh
dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT
MEMBERS=${MEMBERS:-1}
urls=(); members=()
for i in $(seq 0 $(($# - 1))); do
  read -r -a c < <(cluster "n$i-" "${*:$((i + 1)):1}")
  url=${c[0]}; [ "${AT:-leader}" = follower ] && url=${c[1]}
  urls+=("$url"); members+=("${c[*]:2}"); pids+=("${c[@]:2}")
done
cpu_ticks() { local p t=0; for p in $1; do t=$(( t + $(awk '{ print $14 + $15 }' "/proc/$p/stat") )); done; echo "$t"; }
n=${#urls[@]}
for r in $(seq 1 "$ROUNDS"); do
  for k in $(seq 0 $((n - 1))); do
    j=$(( (k + r) % n ))
    before=$(cpu_ticks "${members[$j]}")
    line=$("$TONIC" tasks "${OP:-put}" "$CALLERS" "$SECS" "${urls[$j]}")
    after=$(cpu_ticks "${members[$j]}")
    # tonic OP CALLERS OPS QPS P50 P99 ERRORS -> round binary QPS CPU-µs/op
    echo "$line" | awk -v r="$r" -v j="$j" -v cpu=$(( (after - before) * 1000000 / $(getconf CLK_TCK) )) \
      '{ printf "%d %d %s %.1f\n", r, j, $5, ($4 > 0 ? cpu / $4 : 0) }' >>"$dir/rows"
  done
done
python3 - "$dir/rows" "$@" <<'PY'
import statistics as st, sys
rows = [l.split() for l in open(sys.argv[1])]
bins = sys.argv[2:]
by = {(int(r), int(j)): (float(q), float(c)) for r, j, q, c in rows}
rounds = sorted({r for r, _ in by})
for j, b in enumerate(bins):
    qs = [by[r, j][0] for r in rounds]
    print(f"{b}: ops/s {' '.join(f'{q:.0f}' for q in qs)} | median CPU/op {st.median(by[r, j][1] for r in rounds):.1f} µs")
for j, b in enumerate(bins[1:], 1):
    q = [by[r, j][0] / by[r, 0][0] for r in rounds]
    c = [by[r, j][1] / by[r, 0][1] for r in rounds]
    print(f"{b} / {bins[0]}: per round {' '.join(f'{x:.2f}' for x in q)} | median {st.median(q):.3f}x ops/s, {st.median(c):.3f}x CPU per op")
PY
