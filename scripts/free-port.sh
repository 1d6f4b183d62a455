# Sourced by the scripts and the node smoke test: `free_port` prints a loopback TCP port
# nobody listens on, below the kernel's ephemeral range, so that no outgoing connection can
# hold it when the server binds later. A bind may still race with another process; callers
# that start servers retry.
free_port() {
  local p low
  low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  [ "$low" -gt 11000 ] || low=32768
  for _ in $(seq 1 200); do
    p=$(( 10000 + RANDOM % (low - 10000) ))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
  echo "free_port: no free loopback port" >&2
  return 1
}
