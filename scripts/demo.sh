#!/usr/bin/env bash
# The main demo: builds etcdc, installs it into build/demo/prefix, builds the chat servers
# (c-examples/login_server.c, cpp-examples/msg_server.cpp) against the installed package
# with find_package(etcdc), and runs their scenario (scripts/demo-scenario.sh): three login
# servers embedding a three-member cluster, two msg servers discovering them, a login server
# and then the Raft leader SIGKILLed, and a summary table of what each step measured.
#   scripts/demo.sh            # the embedded cluster
#   scripts/demo.sh --remote   # the same servers against a real etcd, by config only
#   scripts/demo.sh --tls      # the embedded cluster with TLS, client certificates and users
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
exec scripts/demo-scenario.sh "$build/c-examples/login_server" "$build/cpp-examples/msg_server" "$@"
