# Sourced by the scripts and the node smoke test: `free_port` prints a loopback TCP port
# nobody listens on (a later bind may still race; callers that start servers retry).
free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$(( 20000 + RANDOM % 40000 ))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
  echo "free_port: no free loopback port" >&2
  return 1
}
