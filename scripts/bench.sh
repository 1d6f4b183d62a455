#!/usr/bin/env bash
# Benchmark (not a test): put, range and watch through etcdc's C ABI at 1, 16 and 256
# concurrent callers, side by side in one run with a plain tonic client (no etcdc layer) and
# with the path etcdc replaces, etcd's v2 HTTP API through libcurl, all against one local etcd
# started with --enable-v2. Prints a markdown table: QPS, p50 and p99 latency (microseconds).
#   scripts/bench.sh            # 3 s per cell
#   BENCH_SECONDS=10 scripts/bench.sh
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
export BENCH_SECONDS=${BENCH_SECONDS:-3} BENCH_C="$PWD/$build/c/etcdc_bench" BENCH_TONIC="$PWD/target/release/examples/tonic_baseline"

ETCD_EXTRA_FLAGS="--enable-v2=true" scripts/with-etcd.sh bash -c '
  rows=$(mktemp)
  for op in put range watch; do
    for callers in 1 16 256; do
      "$BENCH_C" etcdc "$op" "$callers" "$BENCH_SECONDS" "$ETCDC_ENDPOINTS" >>"$rows"
      "$BENCH_TONIC" "$op" "$callers" "$BENCH_SECONDS" "$ETCDC_ENDPOINTS" >>"$rows"
      [ "$op" = watch ] || "$BENCH_C" v2curl "$op" "$callers" "$BENCH_SECONDS" "$ETCDC_ENDPOINTS" >>"$rows"
    done
  done
  echo "etcd $(etcd --version | head -1 | cut -d" " -f3), $(nproc) cores, $(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | sed "s/^ //"), ${BENCH_SECONDS} s per cell after 1 s warm-up"
  echo
  echo "| op | callers | etcdc QPS | tonic QPS | v2 QPS | etcdc/tonic | etcdc/v2 | etcdc p50 / p99 us | tonic p50 / p99 us | v2 p50 / p99 us | errors |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  awk "
    { key = \$2 \" \" \$3; order[key] = NR; qps[\$1, key] = \$5; lat[\$1, key] = \$6 \" / \" \$7; err[key] += \$8; keys[key] = 1 }
    END {
      n = 0; for (k in keys) sorted[++n] = k
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (order[sorted[j]] < order[sorted[i]]) { t = sorted[i]; sorted[i] = sorted[j]; sorted[j] = t }
      for (i = 1; i <= n; i++) {
        k = sorted[i]; split(k, p, \" \")
        e = qps[\"etcdc\", k]; t = qps[\"tonic\", k]; v = qps[\"v2curl\", k]
        printf \"| %s | %s | %d | %d | %s | %.2f | %s | %s | %s | %s | %d |\n\", p[1], p[2], e, t, (v == \"\" ? \"n/a\" : v), (t > 0 ? e / t : 0), (v > 0 ? sprintf(\"%.2f\", e / v) : \"n/a\"), lat[\"etcdc\", k], lat[\"tonic\", k], (v == \"\" ? \"n/a\" : lat[\"v2curl\", k]), err[k]
      }
    }" "$rows"
  rm -f "$rows"
'
