# Sourced by the benchmark scripts: `cluster NAME BINARY` starts $MEMBERS members of etcd or
# etcdc-node (same flags) on free loopback ports with data dirs under $dir, waits until
# they take a write, and prints "LEADER-URL FOLLOWER-URL PID...". The caller stops the pids.
cluster() { # name binary -> "leader-url follower-url pid..."
  local name=$1 bin=$2 i initial="" cs=() ps=() pids=() urls=() all leader follower status
  for i in $(seq 0 $((MEMBERS - 1))); do
    cs+=("$(free_port)"); ps+=("$(free_port)")
    initial+="${initial:+,}$name$i=http://127.0.0.1:${ps[$i]}"
  done
  for i in $(seq 0 $((MEMBERS - 1))); do
    "$bin" --name "$name$i" --data-dir "$dir/$name$i" --initial-cluster-token "$name" \
      --listen-client-urls "http://127.0.0.1:${cs[$i]}" --advertise-client-urls "http://127.0.0.1:${cs[$i]}" \
      --listen-peer-urls "http://127.0.0.1:${ps[$i]}" --initial-advertise-peer-urls "http://127.0.0.1:${ps[$i]}" \
      --initial-cluster "$initial" >"$dir/$name$i.log" 2>&1 &
    pids+=($!); urls+=("http://127.0.0.1:${cs[$i]}")
  done
  all=$(IFS=,; echo "${urls[*]}")
  for _ in $(seq 1 100); do
    ETCDCTL_API=3 etcdctl --endpoints "$all" --command-timeout=1s put /warm x >/dev/null 2>&1 && break
    sleep 0.1
  done
  # etcdctl endpoint status: "HOST:PORT, ID, VERSION, DB SIZE, IS LEADER, ...". Asked again
  # until one member says it leads and another that it follows (an election may still run).
  for _ in $(seq 1 100); do
    status=$(ETCDCTL_API=3 etcdctl --endpoints "$all" --command-timeout=1s endpoint status 2>/dev/null || true)
    leader=$(awk -F', ' '$5 == "true" { print $1; exit }' <<<"$status")
    follower=$(awk -F', ' '$5 == "false" { print $1; exit }' <<<"$status")
    [ -n "$leader" ] && { [ "$MEMBERS" -eq 1 ] || [ -n "$follower" ]; } && break
    sleep 0.1
  done
  [ -n "$leader" ] || { echo "cluster $name: no leader after 10 s" >&2; return 1; }
  echo "http://${leader#http://} http://${follower#http://} ${pids[*]}"
}
