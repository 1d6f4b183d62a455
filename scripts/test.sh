#!/usr/bin/env bash
# Runs every etcdc test on a fresh machine (a Rust toolchain and apt are all it assumes):
#  1. formatting and lints;
#  2. the Rust unit, behaviour and failover suites against real etcd members;
#  3. the library built and installed as a CMake package, then the C tests (ASan + UBSan,
#     C11 and C++17, static and shared), the C examples and the C++ examples, each a separate
#     CMake project using find_package(etcdc) against the installed package, run by ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
# A run that tested nothing must not look green: with CI set, a suite that finds no etcd
# fails instead of skipping. Set it here so the README's command behaves as CI does.
export CI=${CI:-true}
scripts/deps.sh

log=$(mktemp)
trap 'rm -f "$log"' EXIT

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked 2>&1 | tee -a "$log"

build=build/test
rm -rf "$build/prefix"
cmake -S . -B "$build/pkg" -DCMAKE_INSTALL_PREFIX="$PWD/$build/prefix" >/dev/null
cmake --build "$build/pkg"
cmake --install "$build/pkg" >/dev/null
for project in tests/c c-examples cpp-examples; do
  dir="$build/$(basename "$project")"
  cmake -S "$project" -B "$dir" -DCMAKE_PREFIX_PATH="$PWD/$build/prefix" >/dev/null
  cmake --build "$dir" -j2
  ctest --test-dir "$dir" --output-on-failure -j2 2>&1 | tee -a "$log"
done

# One closing line for every test that ran (cargo's and ctest's).
awk '
  /^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
  /tests passed, [0-9]+ tests failed out of/ { match($0, /[0-9]+ tests failed out of [0-9]+/); split(substr($0, RSTART, RLENGTH), a, " "); f += a[1]; p += a[6] - a[1] }
  END { printf "etcdc: %d passed, %d failed\n", p, f; exit (f > 0) }
' "$log"
