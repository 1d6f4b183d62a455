#!/usr/bin/env bash
# Benchmark (not a test): backups of 100,000 keys, etcdc-node against real etcd 3.4 side by side
# in one run. The same load for both: 100 writers × 1,000 puts of 256 bytes, 100,000 keys
# (one revision each). Then, for each server:
#   save     `etcdctl snapshot save` against the member: wall time, the server's peak RSS
#            (VmHWM) before and after, the file's size;
#   restore  etcd: `etcdctl snapshot restore` (its own peak) then etcd started on that data dir;
#            node: `etcdc-node --restore-snapshot`; both until they serve every key
#            (serializable count), wall time and peak RSS of the processes;
#   across   the other's file restored the same way (etcd from the node's, the node from
#            etcd's): the time until it serves every key.
#   scripts/bench-snapshot.sh      # about a minute on 2 cores
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo build --release --locked --bin etcdc-node --example tonic_baseline 2>/dev/null
TONIC="$PWD/target/release/examples/tonic_baseline"
NODE="$PWD/target/release/etcdc-node"
KEYS=100000
dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT
. scripts/free-port.sh
hwm() { awk '/VmHWM/ { print int($2 / 1024) }' "/proc/$1/status"; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
ctl() { ETCDCTL_API=3 etcdctl --command-timeout=5s "$@"; }
keys() { # url -> how many bench/ keys it serves from its own store
  ctl --endpoints "$1" get bench/ --prefix --keys-only --limit 1 --consistency=s -w fields 2>/dev/null \
    | awk '/"Count"/ { print $3 }'
}
until_keys() { # url pid: waits until the member serves every key
  for _ in $(seq 1 1200); do
    [ "$(keys "$1")" -ge "$KEYS" ] 2>/dev/null && return
    kill -0 "$2" 2>/dev/null || { echo "the server at $1 exited" >&2; exit 1; }
    sleep 0.05
  done
  echo "the server at $1 never served $KEYS keys" >&2; exit 1
}
# Runs a command, prints its peak RSS in MB (a child's, as getrusage sees it) on stdout.
peak_of() { python3 -c 'import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)' "$@"; }
start() { # kind name datadir [flags...] -> sets $url, $pid
  local kind=$1 name=$2 data=$3; shift 3
  local bin=/usr/bin/etcd; [ "$kind" = node ] && bin=$NODE
  local c p; c=$(free_port); p=$(free_port)
  url="http://127.0.0.1:$c"
  "$bin" --name "$name" --data-dir "$data" \
    --listen-client-urls "$url" --advertise-client-urls "$url" \
    --listen-peer-urls "http://127.0.0.1:$p" --initial-advertise-peer-urls "http://127.0.0.1:$p" \
    --initial-cluster "$name=http://127.0.0.1:$p" "$@" >"$data.log" 2>&1 &
  pid=$!; pids+=("$pid")
}
stop() { kill "$1"; wait "$1" 2>/dev/null || true; }
restore() { # kind file tag -> sets rms[tag], rpeak[tag]
  local kind=$1 file=$2 tag=$3 t0 tool=0
  t0=$(now_ms)
  if [ "$kind" = etcd ]; then
    local p; p=$(free_port)
    tool=$(peak_of env ETCDCTL_API=3 etcdctl snapshot restore "$file" --name r \
      --initial-cluster "r=http://127.0.0.1:$p" --initial-advertise-peer-urls "http://127.0.0.1:$p" \
      --data-dir "$dir/$tag")
    start etcd r "$dir/$tag"
  else
    start node r "$dir/$tag" --restore-snapshot "$file"
  fi
  until_keys "$url" "$pid"
  rms[$tag]=$(( $(now_ms) - t0 ))
  rpeak[$tag]=$(hwm "$pid")
  [ "$tool" -gt "${rpeak[$tag]}" ] && rpeak[$tag]=$tool
  stop "$pid"
}

declare -A sms speak0 speak size rms rpeak
for s in etcd node; do
  start "$s" "$s" "$dir/$s"
  for _ in $(seq 1 100); do ctl --endpoints "$url" put /warm x >/dev/null 2>&1 && break; sleep 0.1; done
  BENCH_VALUE_BYTES=256 BENCH_PUTS_PER_CALLER=$((KEYS / 100)) "$TONIC" tasks put 100 300 "$url" >/dev/null
  until_keys "$url" "$pid"
  speak0[$s]=$(hwm "$pid")
  t0=$(now_ms)
  # etcdctl 3.4 wants a bare host:port for snapshot save.
  ctl --endpoints "${url#http://}" snapshot save "$dir/$s.db" >/dev/null 2>&1
  sms[$s]=$(( $(now_ms) - t0 ))
  speak[$s]=$(hwm "$pid")
  size[$s]=$(awk -v b="$(stat -c %s "$dir/$s.db")" 'BEGIN { printf "%.1f", b / 1048576 }')
  stop "$pid"
done
for s in etcd node; do restore "$s" "$dir/$s.db" "$s-own"; done
restore etcd "$dir/node.db" etcd-from-node
restore node "$dir/etcd.db" node-from-etcd

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b / a }'; }
row() { echo "| $1 | $2 | $3 | $(ratio "$2" "$3") |"; }
echo "etcd $(/usr/bin/etcd --version | head -1 | cut -d' ' -f3) vs etcdc-node, $(nproc) cores, $KEYS keys of 256 bytes"
echo
echo "| | etcd | node | node/etcd |"
echo "|---|---:|---:|---:|"
row "\`snapshot save\`, ms" "${sms[etcd]}" "${sms[node]}"
row "server peak RSS before the save, MB" "${speak0[etcd]}" "${speak0[node]}"
row "server peak RSS after the save, MB" "${speak[etcd]}" "${speak[node]}"
row "file, MB" "${size[etcd]}" "${size[node]}"
row "restore until every key is served, ms" "${rms[etcd-own]}" "${rms[node-own]}"
row "restore peak RSS, MB" "${rpeak[etcd-own]}" "${rpeak[node-own]}"
echo
echo "across: etcd from the node's file ${rms[etcd-from-node]} ms (peak ${rpeak[etcd-from-node]} MB);" \
  "the node from etcd's file ${rms[node-from-etcd]} ms (peak ${rpeak[node-from-etcd]} MB)"
