# Sourced by the benchmark scripts: `cluster NAME BINARY` starts $MEMBERS members of etcd or
# etcdc-node (same flags) on free loopback ports with data dirs under $dir, waits until
# they take a write, and prints "LEADER-URL FOLLOWER-URL PID...". The caller stops the pids.
cluster() { # name binary -> "leader-url follower-url pid..."
  local name=$1 bin=$2 i initial="" cs=() ps=() pids=() urls=() all leader follower
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
  # etcdctl endpoint status: "HOST:PORT, ID, VERSION, DB SIZE, IS LEADER, ..."
  leader=$(ETCDCTL_API=3 etcdctl --endpoints "$all" endpoint status | awk -F', ' '$5 == "true" { print $1 }')
  follower=$(ETCDCTL_API=3 etcdctl --endpoints "$all" endpoint status | awk -F', ' '$5 == "false" { print $1; exit }')
  echo "http://${leader#http://} http://${follower#http://} ${pids[*]}"
}
