#!/usr/bin/env bash
# Runs every etcdc test: formatting and lints, the Rust unit and integration tests against
# real etcd members, then the C/C++ tests and examples built against the installed package.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked
