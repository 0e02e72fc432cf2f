# bench/lib.sh: shell helpers shared by bench/run.sh and bench/profile.sh (sourced, not run).
#
# Processes: every process a script starts goes through `spawn`, which records its pid in `pids`;
# `cleanup_processes` (called from the scripts' EXIT trap) stops exactly those pids, nothing else.
# Ports: `free_port` hands out loopback ports nothing listens on, below the ephemeral range and
# never twice in one run. Everything listens on 127.0.0.1 only.

log() { printf '== %s\n' "$*" >&2; }
die() {
  printf 'bench: %s\n' "$*" >&2
  exit 1
}

# ensure_commands CMD:PACKAGE ... installs the packages of missing commands with apt-get (as root).
ensure_commands() {
  local pair missing=()
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || [[ -x /usr/sbin/${pair%%:*} ]] || missing+=("${pair#*:}")
  done
  ((${#missing[@]})) || return 0
  [[ $(id -u) -eq 0 ]] || die "missing ${missing[*]}: run as root or apt-get install them"
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The redis-sidecar binary: $REDIS_SIDECAR_BINARY, else build-rel/ or build/ (Release), else a
# Release build in ./build-rel made now.
find_sidecar() {
  local repo=$1 b
  if [[ -n ${REDIS_SIDECAR_BINARY:-} ]]; then
    [[ -x $REDIS_SIDECAR_BINARY ]] || die "REDIS_SIDECAR_BINARY=$REDIS_SIDECAR_BINARY is not executable"
    echo "$REDIS_SIDECAR_BINARY"
    return
  fi
  for b in "$repo/build-rel/proxy/redis-sidecar" "$repo/build/proxy/redis-sidecar"; do
    if [[ -x $b ]]; then
      echo "$b"
      return
    fi
  done
  log "building redis-sidecar (Release) in ./build-rel"
  cmake -S "$repo" -B "$repo/build-rel" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$repo/build-rel" --target redis-sidecar -j2 >/dev/null
  echo "$repo/build-rel/proxy/redis-sidecar"
}

pids=()
# spawn CMD...: runs CMD in the background and records its pid (in $last_pid too).
spawn() {
  "$@" &
  last_pid=$!
  pids+=("$last_pid")
}
cleanup_processes() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
# stop PID: stops one process this script spawned.
stop() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

read -r ephemeral_lo _ </proc/sys/net/ipv4/ip_local_port_range || ephemeral_lo=32768
((ephemeral_lo > 12000)) || ephemeral_lo=32768
taken_ports=" "
free_port() {
  local p
  while :; do
    p=$((10000 + RANDOM % (ephemeral_lo - 10000)))
    [[ $taken_ports == *" $p "* ]] && continue
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      taken_ports+="$p "
      echo "$p"
      return
    fi
  done
}

# wait_pong ARGS...: waits until `redis-cli ARGS PING` answers PONG, or fails after 20 s.
wait_pong() {
  local i
  for i in $(seq 1 400); do
    [[ $(redis-cli "$@" PING 2>/dev/null) == PONG ]] && return 0
    sleep 0.05
  done
  tail -n 5 "$work"/*.log >&2 || true
  die "no PONG from redis-cli $*"
}

# make_certs DIR: a CA and a server certificate for 127.0.0.1 / localhost.
make_certs() {
  (
    cd "$1"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=bench-ca \
      -keyout ca.key -out ca.crt 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key \
      -out server.csr 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >san.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
      -extfile san.ext -out server.crt 2>/dev/null
  )
}

# start_redis PORT TLS_PORT LOGNAME: Redis with a plaintext and a TLS port, no persistence.
start_redis() {
  spawn redis-server --port "$1" --tls-port "$2" --bind 127.0.0.1 \
    --tls-cert-file "$work/server.crt" --tls-key-file "$work/server.key" \
    --tls-ca-cert-file "$work/ca.crt" --tls-auth-clients no \
    --save '' --appendonly no --dir "$work" --logfile "$work/$3.log"
  wait_pong -p "$1"
}

# start_sidecar NAME PORT METRICS_PORT UPSTREAM_TLS_PORT [FLAGS...]: a sidecar in front of the
# TLS port, metrics on loopback; its stderr goes to $work/NAME.log.
start_sidecar() {
  local name=$1 port=$2 mport=$3 up=$4
  shift 4
  spawn "$sidecar_bin" --listen "127.0.0.1:$port" --upstream "rediss://127.0.0.1:$up" \
    --tls-ca-file "$work/ca.crt" --metrics-listen "127.0.0.1:$mport" --log-level warn "$@" \
    2>"$work/$name.log"
  wait_pong -p "$port"
}

# metric URL NAME: the value of an unlabelled metric from a /metrics page, or empty.
metric() {
  { curl -s --max-time 2 "$1" || true; } | awk -v n="$2" '$1 == n && v == "" { v = $2 } END { print v }'
}

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
# CPU time (user + system) of a process in clock ticks.
cpu_ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
clk_tck=$(getconf CLK_TCK)

# last_core PID: sets `core` to the core PID last ran on (field 39 of /proc/PID/stat, counted
# after the name in parentheses, which may hold spaces), or to empty once PID has exited (a
# zombie's too). Sets a variable rather than printing: a $(...) per call would start a process.
last_core() {
  local line
  core=
  read -r line 2>/dev/null <"/proc/$1/stat" || return 0
  # The fields after the name, as this function's arguments (no pattern in them to expand).
  # shellcheck disable=SC2086
  set -- ${line##*) }
  [[ $1 == [ZX] ]] || core=${37}
}

# sample_cores TICK APP REDIS: every 20 ms until APP exits, which core APP and REDIS last ran on;
# prints "samples shared": how many samples there were, and how many found the two on one core.
# With three busy processes on two cores (a proxy between them), which two share one is the
# kernel's choice, often held for seconds, and -P 1 throughput through a proxy follows it
# (bench/RESULTS.md). TICK is a file descriptor open on a FIFO nobody writes: a read on it with a
# timeout spaces the samples without starting a process per sample. Each sample reads two small
# /proc files: about 2 % of a core in all.
sample_cores() {
  local tick=$1 app=$2 redis=$3 n=0 shared=0 a r
  while :; do
    last_core "$app"; a=$core
    last_core "$redis"; r=$core
    [[ -n $a && -n $r ]] || break
    n=$((n + 1))
    [[ $a == "$r" ]] && shared=$((shared + 1))
    read -r -t 0.02 -u "$tick" _ || true
  done
  echo "$n $shared"
}

# resp_sets FIRST COUNT [SIZE]: COUNT SET commands in RESP, keys "key:%012d" (16 bytes, as
# redis-benchmark -r names them) from FIRST, SIZE-byte values (default 64): for `redis-cli --pipe`.
resp_sets() {
  awk -v first="$1" -v n="$2" -v size="${3:-64}" 'BEGIN {
    v = "v"
    while (2 * length(v) <= size) v = v v
    v = v substr(v, 1, size - length(v))
    for (i = first; i < first + n; i++)
      printf "*3\r\n$3\r\nSET\r\n$16\r\nkey:%012d\r\n$%d\r\n%s\r\n", i, size, v
  }'
}

# rotated K ITEM...: the items starting at the (K mod count)-th, wrapping around, one per line.
# Each round runs its targets in the order rotated by the round's number, so that no target
# always follows the same one: on a 2-core machine the target that ran just before may move a -P 1
# result by 10 % or more (bench/RESULTS.md), and a fixed order would turn that into a bias.
rotated() {
  local k=$1
  shift
  local n=$#
  ((n)) || return 0
  local items=("$@") i
  for ((i = 0; i < n; i++)); do printf '%s\n' "${items[(i + k) % n]}"; done
}

# median: the median of the numbers on stdin (separated by spaces or newlines).
median() { tr ' ' '\n' | grep . | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# cmdstat PORT CMD: how many times Redis on PORT ran CMD (INFO commandstats).
cmdstat() {
  redis-cli -p "$1" INFO commandstats | tr -d '\r' |
    sed -n "s/^cmdstat_$2:calls=\([0-9]*\),.*/\1/p" | grep . || echo 0
}
