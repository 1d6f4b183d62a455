#!/usr/bin/env bash
# Builds etcdc, installs it into build/demo/prefix, builds the C and C++ examples against the
# installed package, and runs each against a real etcd that this script starts on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
build=build/demo
cmake -S . -B "$build/pkg" -DCMAKE_INSTALL_PREFIX="$PWD/$build/prefix" >/dev/null
cmake --build "$build/pkg"
cmake --install "$build/pkg" >/dev/null
for project in c-examples cpp-examples; do
  cmake -S "$project" -B "$build/$project" -DCMAKE_PREFIX_PATH="$PWD/$build/prefix" >/dev/null
  cmake --build "$build/$project" -j2 >/dev/null
done
for example in c-examples/kv_txn c-examples/watch c-examples/lease \
               cpp-examples/cpp_kv_txn cpp-examples/cpp_watch cpp-examples/cpp_lease; do
  echo "=== $example"
  scripts/with-etcd.sh "$build/$example"
done
echo "=== all examples ran"
