#!/usr/bin/env bash
# Benchmark (not a test): put, range and watch through etcdc's C ABI at 1, 16 and 256
# concurrent callers (threads; for etcdc-async, calls in flight from one thread), side by side in one run with a plain tonic client (no etcdc
# layer) driven the same way (threads blocking on each call) and as async tasks, and with the
# path etcdc replaces, etcd's v2 HTTP API through libcurl, all against one local etcd started
# with --enable-v2. Prints a markdown table: QPS, p50 and p99 latency (microseconds),
# each the median of three rounds, and the ratios etcdc/tonic and etcdc/v2.
# A second table compares the asynchronous C API (a runtime queue and a driven queue, whose
# calls run on the caller's thread) with async tonic and v2; a third, the driven queue in an
# epoll loop (sleeping on its fd) with the same queue waited on inside etcdc_cq_next.
#   scripts/bench.sh            # 3 rounds of 2 s per cell, about 10 minutes
#   BENCH_SECONDS=5 scripts/bench.sh
#   BENCH_OPS="put range" BENCH_IMPLS="etcdc-async etcdc-driven etcdc-epoll tonic v2curl" scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
build=build/bench
cmake -S . -B "$build/pkg" -DCMAKE_INSTALL_PREFIX="$PWD/$build/prefix" >/dev/null
cmake --build "$build/pkg" >/dev/null
cmake --install "$build/pkg" >/dev/null
cmake -S bench -B "$build/c" -DCMAKE_PREFIX_PATH="$PWD/$build/prefix" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build/c" >/dev/null
cargo build --release --locked --example tonic_baseline 2>/dev/null
export BENCH_SECONDS=${BENCH_SECONDS:-2} BENCH_C="$PWD/$build/c/etcdc_bench" BENCH_TONIC="$PWD/target/release/examples/tonic_baseline"

ETCD_EXTRA_FLAGS="--enable-v2=true" scripts/with-etcd.sh bash -c '
  rows=$(mktemp)
  for op in ${BENCH_OPS:-put range srange watch}; do
    for callers in 1 16 256; do
      # Three rounds, each in a rotated order, so that neither etcd warming up nor its
      # growing database favours one implementation.
      impls=()
      for impl in ${BENCH_IMPLS:-etcdc etcdc-async etcdc-driven etcdc-epoll tonic-threads tonic v2curl}; do
        case $op/$impl in watch/v2curl) ;; *) impls+=("$impl") ;; esac
      done
      for round in 0 1 2; do
        for k in "${!impls[@]}"; do
          impl=${impls[$(( (k + round) % ${#impls[@]} ))]}
          case $impl in
            tonic) "$BENCH_TONIC" tasks "$op" "$callers" "$BENCH_SECONDS" "$ETCDC_ENDPOINTS" ;;
            tonic-threads) "$BENCH_TONIC" threads "$op" "$callers" "$BENCH_SECONDS" "$ETCDC_ENDPOINTS" ;;
            *) "$BENCH_C" "$impl" "$op" "$callers" "$BENCH_SECONDS" "$ETCDC_ENDPOINTS" ;;
          esac
        done
      done >>"$rows"
    done
  done
  echo "etcd $(etcd --version | head -1 | cut -d" " -f3), $(nproc) cores ($(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | sed "s/^ //")), median of 3 rounds of ${BENCH_SECONDS} s per cell (after 1 s warm-up each)"
  echo
  awk -f bench/summarize.awk "$rows"
  rm -f "$rows"
'
