#!/usr/bin/env bash
# The fault soak (not a test): the fault harness (tests/support/nemesis.rs) against 3-member
# clusters of etcdc-node and of real etcd 3.4, taking turns, for MINUTES; prints a table of
# runs, faults, acknowledged writes and anomalies (lost, duplicated, stale, watch) per server
# and fault. Exits non-zero if any run found an anomaly.
#   scripts/soak-node.sh MINUTES [RUN_SECONDS]
#   NODE_BIN=/tmp/etcdc-node-old scripts/soak-node.sh 5     # another build of the node
#   SOAK_FLAGS="--snapshot-count 1000" scripts/soak-node.sh 5  # more flags for every member
set -euo pipefail
[ $# -ge 1 ] || { sed -n 2,9p "$0"; exit 2; }
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo build --release --locked --bin etcdc-node --example soak
exec target/release/examples/soak "$1" "${NODE_BIN:-$PWD/target/release/etcdc-node}" /usr/bin/etcd "${2:-20}"
