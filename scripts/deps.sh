#!/usr/bin/env bash
# Installs what etcdc's build, tests and demo need beyond a Rust toolchain, from the OS
# package manager: cmake, a real etcd and etcdctl, a C/C++ compiler, libcurl (for the
# benchmark's v2 baseline), pkg-config, iproute2 (network namespaces for the fault tests'
# partitions), e2fsprogs (the loop-mounted file systems of their power losses), openssl
# (the certificates of the TLS tests) and curl (a member's /health over TLS). Does nothing
# when all are present.
set -euo pipefail
need=()
command -v cmake >/dev/null || need+=(cmake)
[ -x /usr/bin/etcd ] || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)
command -v cc >/dev/null || need+=(gcc)
command -v c++ >/dev/null || need+=(g++)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v ip >/dev/null || need+=(iproute2)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v openssl >/dev/null || need+=(openssl)
command -v curl >/dev/null || need+=(curl)
[ -f /usr/include/x86_64-linux-gnu/curl/curl.h ] || [ -f /usr/include/curl/curl.h ] || need+=(libcurl4-openssl-dev)
if [ ${#need[@]} -gt 0 ]; then
  echo "deps: installing ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
