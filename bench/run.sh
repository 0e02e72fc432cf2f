#!/usr/bin/env bash
# The performance benchmark of issue 7, in one command: redis-sidecar next to the alternatives, all
# in front of one Redis 7 on this machine, measured side by side in one run.
#
#   direct        redis-benchmark -> Redis (plaintext)
#   direct-tls    redis-benchmark -> Redis (TLS)                       <- the baseline for ratios
#   stunnel       redis-benchmark -> stunnel4 (client mode) -> Redis (TLS)
#   nutcracker    redis-benchmark -> nutcracker (twemproxy) -> Redis (plaintext)
#   sidecar       redis-benchmark -> redis-sidecar -> Redis (TLS)        (pass-through:
#                 --cache-mode=fallback, so L1 is filled from replies but never answers)
#   sidecar-off   as sidecar, without L1 (--cache-mode=off): a plain TLS-terminating proxy; what
#                 the L1 fill costs pass-through, side by side      (throughput section only)
#   sidecar-l1    redis-benchmark -> redis-sidecar serving L1 hits       (--cache-mode=ttl)
#   sidecar-bp    as sidecar, with --busy-poll-us=$BUSY_POLL_US (150)    (latency section only)
#   sidecar-l1-bp as sidecar-l1, with --busy-poll-us=$BUSY_POLL_US   (throughput: GET -P 1 only)
#   sidecar-unix  as sidecar, the app connecting over a unix socket      (latency section only)
#
# Sections (arguments; default: all of them, in this order):
#   throughput   GET and SET, -c 50 -r 100000 -d 64, -P 1 and -P 16, every target, interleaved
#                over ROUNDS rounds (each round's order rotated by one: rotated()); medians,
#                spread, p50/p99, CPU per request, every ratio and target of the issue; INFO
#                commandstats proves pass-through requests reached Redis
#   latency      GET at -c 1 -P 1 against every target: the latency each proxy adds (nutcracker over
#                direct plaintext shows what one plaintext proxy hop costs on this machine)
#   memory       idle RSS of a sidecar; RSS per L1 entry after 1,000,000 SETs through a sidecar
#                (16-byte keys, 64-byte values); the cache module's own cache_memory_bench
#   connections  1,000 app connections doing GET/SET through one sidecar: upstream connections
#   bulk         a bulk load: BULK_PAIRS SET+GET pairs of distinct keys through `redis-cli --pipe`
#                (thousands of requests in flight on one connection), direct TLS against a
#                sidecar with default flags, ROUNDS rounds interleaved
#   misses       GETs L1 cannot answer yet, a sidecar with default flags (tracking mode on this
#                Redis) against the pass-through one: a cold pipeline of MISS_KEYS GETs of
#                distinct keys through `redis-cli --pipe` (a fresh sidecar each round), and -c 50
#                GETs of 10,000 absent keys; ops/s or ms, and upstream commands per GET
#   values       GET and SET of larger values (VALUE_SIZES bytes, default 16384 and 102400) over
#                1,000 keys, -c 50 -P 1: direct TLS, stunnel4 and a pass-through sidecar of its
#                own, ROUNDS rounds interleaved; ops/s medians, ratios and the sidecar's CPU per
#                request (the keys get their 64-byte values back afterwards)
#   remote       throughput + latency again inside a network namespace whose Redis ports are
#                delayed by RTT_US (../shared/bench-tools/remote-upstream.sh, NFQUEUE delayer)
#
# Environment: N (requests per run, default 100000), N_P16 (requests per -P 16 run, default
# 10 * N: such runs go ~10x faster and are steady only over seconds), ROUNDS (default 5),
# LATENCY_N (default N/5), MEM_ENTRIES (default 1000000), CONNS (default 1000), BULK_PAIRS
# (default 200000), MISS_KEYS (default 100000), VALUE_SIZES (default "16384 102400"), VALUE_N
# (requests per values run, default N/5), RTT_US (default
# 800: with the delayer's own ~0.2 ms this gives ~1 ms), REMOTE_ROUNDS (default ROUNDS),
# BUSY_POLL_US (default 150: sidecar-bp's --busy-poll-us), REDIS_SIDECAR_BINARY (default
# build-rel/ or build/, else built), KEEP_WORK=1 keeps the temp dir.
# Quick run: QUICK=1 (ROUNDS=1, N=20000, MEM_ENTRIES=200000). PLACEMENT=split pins Redis to the
# last core and the app and the proxies to the others (see place_processes); by default the kernel
# places them, which is the issue's method.
#
# Installs what is missing with apt-get (root), picks free loopback ports, stops every process it
# started on exit. Exit status non-zero only when a run fails or a correctness check fails; the
# targets are reported, never asserted.
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$(pwd)
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"

if [[ -n ${QUICK:-} ]]; then
  : "${ROUNDS:=1}" "${N:=20000}" "${MEM_ENTRIES:=200000}"
fi
N=${N:-100000}
N_P16=${N_P16:-$((N * 10))}
ROUNDS=${ROUNDS:-5}
LATENCY_N=${LATENCY_N:-$((N / 5))}
MEM_ENTRIES=${MEM_ENTRIES:-1000000}
CONNS=${CONNS:-1000}
BULK_PAIRS=${BULK_PAIRS:-200000}
MISS_KEYS=${MISS_KEYS:-100000}
VALUE_SIZES=${VALUE_SIZES:-16384 102400}
VALUE_N=${VALUE_N:-$((N / 5))}
RTT_US=${RTT_US:-800}
REMOTE_ROUNDS=${REMOTE_ROUNDS:-$ROUNDS}
CLIENTS=50
KEYS=100000
inner=${BENCH_REMOTE_INNER:-}  # set when this is the run inside the delayed namespace

sections=("$@")
((${#sections[@]})) || sections=(throughput latency memory connections bulk misses values remote)
wants() { [[ " ${sections[*]} " == *" $1 "* ]]; }

ensure_commands redis-server:redis-server redis-benchmark:redis-tools redis-cli:redis-tools \
  stunnel4:stunnel4 nutcracker:nutcracker openssl:openssl curl:curl
wants remote && ensure_commands iptables:iptables cc:gcc
nutcracker_bin=$(command -v nutcracker || echo /usr/sbin/nutcracker)
sidecar_bin=$(find_sidecar "$repo")
ulimit -n 65536 2>/dev/null || ulimit -n 4096 2>/dev/null || true

work=$(mktemp -d "${TMPDIR:-/tmp}/sidecar-bench.XXXXXX")
mkfifo "$work/tick"
exec {tick}<>"$work/tick"  # sample_cores' clock
netns=""
cleanup() {
  cleanup_processes
  if [[ -n $netns ]]; then
    NETNS=$netns "$repo/../shared/bench-tools/remote-upstream.sh" teardown >/dev/null 2>&1 || true
  fi
  [[ -n ${KEEP_WORK:-} ]] || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pass_flags=(--cache-mode=fallback)
off_flags=(--cache-mode=off)
l1_flags=()
l1_available=0
if "$sidecar_bin" --help 2>/dev/null | grep -q -- '--cache-prefix'; then
  l1_available=1
  l1_flags=(--cache-mode=ttl --cache-prefix=key: --cache-ttl=1h --cache-max-bytes=256mb)
fi
bp_flags=()
bp_available=0
if "$sidecar_bin" --help 2>/dev/null | grep -q -- '--busy-poll-us'; then
  bp_available=1
  bp_flags=(--busy-poll-us="${BUSY_POLL_US:-150}")
fi

if [[ -z $inner ]]; then
  printf '# redis-sidecar benchmark, %s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
  printf '# machine: %s, %s cores, %s; load average at start: %s\n' "$(uname -r)" "$(nproc)" \
    "$(awk -F: '/model name/ { sub(/^ +/, "", $2); print $2; exit }' /proc/cpuinfo)" \
    "$(cut -d' ' -f1-3 /proc/loadavg)"
  printf '# binary: %s\n' "$sidecar_bin"
  [[ -z ${PLACEMENT:-} ]] || printf '# placement: %s (Redis alone on the last core)\n' "$PLACEMENT"
  printf '# redis-server %s, stunnel4 %s, nutcracker %s\n' \
    "$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')" \
    "$(stunnel4 -version 2>&1 | awk '/^stunnel/ { print $2; exit }')" \
    "$("$nutcracker_bin" --version 2>&1 | awk '{ print $NF; exit }')"
fi

# --- the shared set-up: Redis, peers, sidecars ---------------------------------------------------
log "certificates"
make_certs "$work"
if [[ -n $inner ]]; then  # the namespace's delayed ports, from remote-upstream.sh
  redis_port=$REDIS_PORT
  redis_tls_port=$REDIS_TLS_PORT
else
  redis_port=$(free_port)
  redis_tls_port=$(free_port)
fi
taken_ports+="$redis_port $redis_tls_port "

# start_l1_sidecar NAME PORT METRICS_PORT [FLAGS...]: a sidecar answering from L1 (l1_flags, then
# FLAGS), its L1 warmed with every key redis-benchmark -r will ask for, through the sidecar itself.
start_l1_sidecar() {
  local name=$1 port=$2 mport=$3
  shift 3
  log "redis-sidecar (L1 hits: ${l1_flags[*]}${*:+ $*}) on $port"
  start_sidecar "$name" "$port" "$mport" "$redis_tls_port" "${l1_flags[@]}" "$@"
  resp_sets 0 "$KEYS" | redis-cli -p "$port" --pipe >/dev/null
}

setup_targets() {
  log "redis-server on $redis_port (TLS $redis_tls_port)"
  start_redis "$redis_port" "$redis_tls_port" redis
  redis_pid=$last_pid
  log "filling Redis with $KEYS keys"
  resp_sets 0 "$KEYS" | redis-cli -p "$redis_port" --pipe >/dev/null

  stunnel_port=$(free_port)
  cat >"$work/stunnel.conf" <<EOF
foreground = yes
pid =
debug = 3
output = $work/stunnel.log
[redis]
client = yes
accept = 127.0.0.1:$stunnel_port
connect = 127.0.0.1:$redis_tls_port
CAfile = $work/ca.crt
verifyChain = yes
checkIP = 127.0.0.1
EOF
  log "stunnel4 on $stunnel_port"
  spawn stunnel4 "$work/stunnel.conf"
  stunnel_pid=$last_pid
  wait_pong -p "$stunnel_port"

  nutcracker_port=$(free_port)
  cat >"$work/nutcracker.yml" <<EOF
bench:
  listen: 127.0.0.1:$nutcracker_port
  hash: fnv1a_64
  distribution: ketama
  redis: true
  auto_eject_hosts: false
  timeout: 5000
  server_connections: 1
  servers:
    - 127.0.0.1:$redis_port:1
EOF
  log "nutcracker on $nutcracker_port"
  spawn "$nutcracker_bin" -c "$work/nutcracker.yml" -s "$(free_port)" -a 127.0.0.1 \
    -o "$work/nutcracker.log"
  nutcracker_pid=$last_pid
  wait_pong -p "$nutcracker_port"

  sidecar_port=$(free_port)
  sidecar_mport=$(free_port)
  # Pass-through: L1 is filled from replies (as always) but answers nothing while Redis is up.
  log "redis-sidecar (pass-through: ${pass_flags[*]}) on $sidecar_port"
  start_sidecar sidecar "$sidecar_port" "$sidecar_mport" "$redis_tls_port" "${pass_flags[@]}"
  sidecar_pid=$last_pid

  off_port=$(free_port)
  off_mport=$(free_port)
  log "redis-sidecar (pass-through without L1: ${off_flags[*]}) on $off_port"
  start_sidecar sidecar-off "$off_port" "$off_mport" "$redis_tls_port" "${off_flags[@]}"
  off_pid=$last_pid

  targets=(direct direct-tls stunnel nutcracker sidecar sidecar-off)
  if ((l1_available)); then
    l1_port=$(free_port)
    l1_mport=$(free_port)
    start_l1_sidecar sidecar-l1 "$l1_port" "$l1_mport"
    l1_pid=$last_pid
    targets+=(sidecar-l1)
  fi
  if ((l1_available && bp_available)); then
    # L1 hits again, the event loop busy-polling: an app that waits on each reply no longer has to
    # wake the sidecar for each request (GET -P 1 in the throughput section only).
    l1bp_port=$(free_port)
    l1bp_mport=$(free_port)
    start_l1_sidecar sidecar-l1-bp "$l1bp_port" "$l1bp_mport" "${bp_flags[@]}"
    l1bp_pid=$last_pid
    targets+=(sidecar-l1-bp)
  fi
  if ((bp_available)); then
    # Pass-through again, its event loop busy-polling: in the latency section only.
    bp_port=$(free_port)
    log "redis-sidecar (pass-through: ${pass_flags[*]} ${bp_flags[*]}) on $bp_port"
    start_sidecar sidecar-bp "$bp_port" "$(free_port)" "$redis_tls_port" "${pass_flags[@]}" \
      "${bp_flags[@]}"
    bp_pid=$last_pid
  fi
  # Pass-through again, reached over a unix socket (as apps in the sidecar's pod can reach it,
  # through a shared volume): in the latency section only.
  unix_sock=$work/sidecar.sock
  log "redis-sidecar (pass-through: ${pass_flags[*]}) on unix:$unix_sock"
  spawn "$sidecar_bin" --listen "unix:$unix_sock" --upstream "rediss://127.0.0.1:$redis_tls_port" \
    --tls-ca-file "$work/ca.crt" --metrics-listen "127.0.0.1:$(free_port)" --log-level warn \
    "${pass_flags[@]}" 2>"$work/sidecar-unix.log"
  unix_pid=$last_pid
  wait_pong -s "$unix_sock"
}

target_args() {
  case $1 in
    direct) echo "-p $redis_port" ;;
    direct-tls) echo "-p $redis_tls_port --tls --cacert $work/ca.crt" ;;
    stunnel) echo "-p $stunnel_port" ;;
    nutcracker) echo "-p $nutcracker_port" ;;
    sidecar) echo "-p $sidecar_port" ;;
    sidecar-off) echo "-p $off_port" ;;
    sidecar-l1) echo "-p $l1_port" ;;
    sidecar-l1-bp) echo "-p $l1bp_port" ;;
    sidecar-bp) echo "-p $bp_port" ;;
    sidecar-unix) echo "-s $unix_sock" ;;
  esac
}
# metrics_port TARGET: the sidecar's metrics port, for the targets the throughput tables show.
metrics_port() {
  case $1 in
    sidecar) echo "$sidecar_mport" ;;
    sidecar-off) echo "$off_mport" ;;
    sidecar-l1) echo "$l1_mport" ;;
    sidecar-l1-bp) echo "$l1bp_mport" ;;
    *) echo "" ;;
  esac
}
proxy_pid() {
  case $1 in
    stunnel) echo "$stunnel_pid" ;;
    nutcracker) echo "$nutcracker_pid" ;;
    sidecar) echo "$sidecar_pid" ;;
    sidecar-off) echo "$off_pid" ;;
    sidecar-l1) echo "$l1_pid" ;;
    sidecar-l1-bp) echo "$l1bp_pid" ;;
    sidecar-bp) echo "$bp_pid" ;;
    sidecar-unix) echo "$unix_pid" ;;
    *) echo "" ;;
  esac
}

# target,pipeline,test,rps,p50_ms,p99_ms,proxy_cpu_us,redis_cpu_us,reqs_per_upstream_write,
# client_cpu_us,cores,app_redis_shared_pct
results=$work/results.csv
: >"$results"
declare -A sent=() seen=()  # requests sent through a sidecar / calls Redis counted meanwhile

# bench TARGET PIPELINE TEST LABEL ARGS...: one redis-benchmark run of one test; appends a line.
bench() {
  local target=$1 pipeline=$2 test=$3 label=$4
  shift 4
  local cmd=${test,,} ppid mport before after out line p0=0 p1=0 r0 r1 reqs w0=0 w1=0 cc t0 t1 shared
  ppid=$(proxy_pid "$target")
  mport=$(metrics_port "$target")
  before=$(cmdstat "$redis_port" "$cmd")
  # Upstream writes: how many requests each carried goes with -P 1 throughput (RESULTS.md).
  [[ -n $mport ]] && w0=$(metric "http://127.0.0.1:$mport/metrics" redis_sidecar_upstream_writes_total)
  r0=$(cpu_ticks "$redis_pid")
  [[ -n $ppid ]] && p0=$(cpu_ticks "$ppid")
  t0=${EPOCHREALTIME/,/.}  # a locale may write "12,5"
  # The client's CPU too: `times` ends the output with the subshell's children's user and system
  # time, which is redis-benchmark's.
  # Meanwhile, whether the app and Redis share a core (sample_cores), into $work/cores. With
  # PLACEMENT=split this subshell moves to the app's cores first, so redis-benchmark starts there
  # (its first sample included).
  # shellcheck disable=SC2046  # target_args is a list of words on purpose
  if ! out=$(
    [[ -z $client_cpus ]] || taskset -pc "$client_cpus" "$BASHPID" >/dev/null
    redis-benchmark -h 127.0.0.1 $(target_args "$target") -P "$pipeline" -t "$cmd" \
      -r "$KEYS" -d 64 --csv "$@" >"$work/benchmark.out" 2>&1 &
    client=$!
    sample_cores "$tick" "$client" "$redis_pid" >"$work/cores"
    wait "$client"
    status=$?
    cat "$work/benchmark.out"
    times
    exit $status
  ); then
    die "redis-benchmark against $target failed: $out"
  fi
  t1=${EPOCHREALTIME/,/.}
  # The share of the run's samples that found the app and Redis on one core, in percent.
  shared=$(awk '$1 > 0 { printf "%.0f", $2 * 100 / $1 }' "$work/cores")
  cc=$(printf '%s\n' "$out" | tail -n 1 | awk '{
    t = 0
    for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] }
    printf "%d", t * 1000000 }')
  r1=$(cpu_ticks "$redis_pid")
  [[ -n $ppid ]] && p1=$(cpu_ticks "$ppid")
  after=$(cmdstat "$redis_port" "$cmd")
  [[ -n $mport ]] && w1=$(metric "http://127.0.0.1:$mport/metrics" redis_sidecar_upstream_writes_total)
  reqs=$(printf '%s\n' "$@" | awk 'p { print; exit } $0 == "-n" { p = 1 }')
  if [[ $target == sidecar* ]]; then
    sent[$target,$cmd]=$((${sent[$target,$cmd]:-0} + reqs))
    seen[$target,$cmd]=$((${seen[$target,$cmd]:-0} + after - before))
  fi
  # "GET","rps","avg","min","p50","p95","p99","max"
  line=$(printf '%s\n' "$out" | tr -d '"\r' | awk -F, -v t="$target" -v p="$pipeline" -v l="$label" \
    -v pc="$(((p1 - p0) * 1000000 / clk_tck))" -v rc="$(((r1 - r0) * 1000000 / clk_tck))" -v n="$reqs" \
    -v w0="${w0:-0}" -v w1="${w1:-0}" -v cc="$cc" -v t0="$t0" -v t1="$t1" -v shared="$shared" \
    '$1 == "SET" || $1 == "GET" {
      w = w1 - w0
      # Cores the three processes kept busy together: their CPU over the same wall time.
      cores = (pc + rc + cc) / ((t1 - t0) * 1000000)
      printf "%s,%s,%s,%s,%s,%s,%.2f,%.2f,%s,%.2f,%.2f,%s\n", t, p, l, $2, $5, $7, pc / n, rc / n, \
        (w > 0 ? sprintf("%.1f", n / w) : ""), cc / n, cores, shared
    }')
  [[ -n $line ]] || die "no result from redis-benchmark against $target: $out"
  printf '%s\n' "$line" >>"$results"
}

# Requests per throughput run: -P 16 runs go ~10x faster, so they get 10x the requests: a run of a
# few hundred milliseconds is dominated by its 50 connection set-ups (TLS handshakes on the TLS
# targets) and by the ramp, and its ops/s swing far more between rounds than a run of seconds.
requests() { if (($1 > 1)); then echo "$N_P16"; else echo "$N"; fi; }

run_throughput() {
  local rounds=$1 round pipeline target test order
  for round in $(seq 1 "$rounds"); do
    mapfile -t order < <(rotated "$((round - 1))" "${targets[@]}")
    for pipeline in 1 16; do
      for target in "${order[@]}"; do
        for test in SET GET; do
          [[ $target != sidecar-l1-bp || $pipeline$test == 1GET ]] || continue
          log "round $round/$rounds  -P $pipeline  $target $test"
          bench "$target" "$pipeline" "$test" "$test" -c "$CLIENTS" -n "$(requests "$pipeline")"
        done
      done
    done
  done
}

run_latency() {
  local rounds=$1 round target order
  for round in $(seq 1 "$rounds"); do
    mapfile -t order < <(rotated "$((round - 1))" direct direct-tls stunnel nutcracker sidecar \
      ${l1_port:+sidecar-l1} ${bp_port:+sidecar-bp} ${unix_sock:+sidecar-unix})
    for target in "${order[@]}"; do
      log "round $round/$rounds  -c 1 -P 1 GET  $target"
      bench "$target" 1 GET c1-GET -c 1 -n "$LATENCY_N"
    done
  done
}

# The requests that went through each sidecar, and what Redis counted meanwhile.
check_forwarded() {
  local key target cmd
  printf '\ncommandstats check (INFO commandstats on Redis, before and after each sidecar run)\n'
  for key in "${!sent[@]}"; do
    target=${key%,*}
    cmd=${key#*,}
    printf '  %-13s %-3s sent %9s   Redis counted %9s\n' "$target" "$cmd" "${sent[$key]}" "${seen[$key]}"
  done | sort
  for key in "${!sent[@]}"; do
    [[ $key == sidecar,* || $key == sidecar-off,* ]] || continue
    ((${seen[$key]} >= ${sent[$key]})) ||
      die "Redis counted fewer ${key#*,} calls than were sent through ${key%,*}"
  done
  printf '  check passed: every request sent through the pass-through sidecars reached Redis\n'
  local misses
  for target in sidecar-l1 sidecar-l1-bp; do
    [[ -n ${sent[$target,get]:-} ]] || continue
    # The sidecar's own count of GETs L1 could not answer: when Redis counted GETs in this
    # target's runs that the sidecar did not forward, something else sent them.
    misses=$(metric "http://127.0.0.1:$(metrics_port "$target")/metrics" redis_sidecar_cache_misses_total)
    printf '  %s: %s of %s GETs answered from L1 without reaching Redis (L1 misses it counted: %s)\n' \
      "$target" "$((${sent[$target,get]} - ${seen[$target,get]}))" "${sent[$target,get]}" "${misses:-?}"
  done
  if grep -q -i 'sanitizer\|runtime error' "$work"/sidecar*.log; then
    cat "$work"/sidecar*.log >&2
    die "a sidecar log has a sanitizer report"
  fi
}

report() {
  awk -f "$repo/bench/report.awk" -v mode="$1" -v rounds="$2" -v n="$N" -v latency_n="$LATENCY_N" \
    -v busy_poll="${bp_flags[*]}" \
    "$results"
  ((l1_available)) ||
    printf '  (sidecar-l1: not available yet: %s --help has no --cache-prefix)\n' "$sidecar_bin"
}

# --- memory ------------------------------------------------------------------------------------
run_memory() {
  local port mport pid idle0 rss0 rss1 entries bytes
  port=$(free_port)
  mport=$(free_port)
  printf '\n### memory\n'
  start_sidecar memory "$port" "$mport" "$redis_tls_port" --cache-max-bytes=1gb --cache-ttl=1h
  pid=$last_pid
  sleep 1
  idle0=$(rss_kb "$pid")
  printf '  idle RSS (started, upstream connected, no clients): %s KiB (%.1f MB)   target < 20 MB: %s\n' \
    "$idle0" "$(awk -v k="$idle0" 'BEGIN { print k * 1024 / 1e6 }')" \
    "$(awk -v k="$idle0" 'BEGIN { print (k * 1024 < 20e6 ? "met" : "MISSED") }')"
  rss0=$(rss_kb "$pid")
  log "memory: $MEM_ENTRIES SETs through a sidecar (16-byte keys, 64-byte values)"
  resp_sets 1000000000 "$MEM_ENTRIES" | redis-cli -p "$port" --pipe >/dev/null
  sleep 2  # the metrics gauges refresh once a second
  rss1=$(rss_kb "$pid")
  entries=$(metric "http://127.0.0.1:$mport/metrics" redis_sidecar_cache_entries)
  bytes=$(metric "http://127.0.0.1:$mport/metrics" redis_sidecar_cache_bytes)
  [[ -n $entries && $entries != 0 ]] || entries=$MEM_ENTRIES
  awk -v r0="$rss0" -v r1="$rss1" -v e="$entries" -v n="$MEM_ENTRIES" -v b="$bytes" 'BEGIN {
    per = (r1 - r0) * 1024 / e
    printf "  L1 after %d SETs: %d entries, RSS +%.1f MB = %.1f bytes per entry, %.1f beyond key+value (80)\n", n, e, (r1 - r0) * 1024 / 1e6, per, per - 80
    if (b != "") printf "  L1 accounted bytes: %.1f per entry (%.1f beyond key+value)\n", b / e, b / e - 80
    printf "  target: <= 64 bytes per entry beyond key and value: %s\n", (per - 80 <= 64 ? "met" : "MISSED")
  }'
  printf '  RSS after the fill: %s KiB\n' "$rss1"
  stop "$pid"
  local cmb
  for cmb in "$repo"/build-rel/cache/cache_memory_bench "$repo"/build*/cache/cache_memory_bench; do
    # Not from a sanitizer build: its allocator reports no heap (mallinfo2) and pads every block.
    if [[ -x $cmb ]] && ! grep -q 'REDIS_SIDECAR_SANITIZE:BOOL=ON' "${cmb%/cache/*}/CMakeCache.txt" 2>/dev/null; then
      printf '  cache module alone (%s %s):\n' "${cmb#"$repo"/}" "$MEM_ENTRIES"
      "$cmb" "$MEM_ENTRIES" 2>&1 | sed 's/^/    /' || true
      break
    fi
  done
}

# --- 1,000 connections ---------------------------------------------------------------------------
run_connections() {
  local port mport pid bpid max_up=0 max_clients=0 up cl i ports=""
  port=$(free_port)
  mport=$(free_port)
  printf '\n### %s app connections doing GET/SET through one sidecar (default flags)\n' "$CONNS"
  start_sidecar connections "$port" "$mport" "$redis_tls_port"
  pid=$last_pid
  local rss_before
  rss_before=$(awk '/^VmRSS/ { print $2 }' "/proc/$pid/status")
  spawn redis-benchmark -h 127.0.0.1 -p "$port" -c "$CONNS" -t get,set -r "$KEYS" -d 64 \
    -n $((CONNS * 200)) -q >"$work/conns.out" 2>&1
  bpid=$last_pid
  for i in $(seq 1 240); do
    kill -0 "$bpid" 2>/dev/null || break
    up=$(ss -Htnp state established "( dport = :$redis_tls_port )" 2>/dev/null | grep -c "pid=$pid," || true)
    cl=$(ss -Htn state established "( sport = :$port )" 2>/dev/null | wc -l)
    if ((up >= max_up)); then  # the last sample at the maximum: the pool is busy by then
      max_up=$up
      # The sidecar's local ports towards Redis, to find its connections in CLIENT LIST.
      ports=$(ss -Htnp state established "( dport = :$redis_tls_port )" 2>/dev/null |
        awk -v p="pid=$pid," 'index($0, p) { n = split($3, a, ":"); print a[n] }')
      redis-cli -p "$redis_port" CLIENT LIST >"$work/client-list.txt"
    fi
    ((cl > max_clients)) && max_clients=$cl
    sleep 0.25
  done
  wait "$bpid" || die "redis-benchmark -c $CONNS failed: $(tail -3 "$work/conns.out")"
  printf '  app connections open at once (max seen, ss): %s\n' "$max_clients"
  printf '  upstream connections of the sidecar (max seen, ss): %s (--pool-size 2)\n' "$max_up"
  printf '  those connections as Redis lists them (CLIENT LIST, last sample at the maximum):\n'
  for i in $ports; do
    grep -E "addr=127\.0\.0\.1:$i " "$work/client-list.txt" |
      awk '{ for (f = 1; f <= NF; f++) if ($f ~ /^(name|flags|cmd|tot-cmds)=/) printf "%s ", $f; print "" }' |
      sed 's/^/    /'
  done
  printf '  target: at most the configured pool (default at most 4): %s\n' \
    "$( ((max_up <= 4 && max_up > 0)) && echo met || echo MISSED)"
  tr '\r' '\n' <"$work/conns.out" | grep -E '^(SET|GET):.*requests per second' | sed 's/^/  /'
  # Once the clients are gone, their buffers go back to the system (the sidecar trims the heap
  # after a drop of 256 clients or more, within its 1-second sweep).
  sleep 2
  local l1_kib
  l1_kib=$(curl -s "http://127.0.0.1:$mport/metrics" |
    awk '$1 == "redis_sidecar_cache_bytes" { printf "%d", $2 / 1024 }')
  printf '  RSS of the sidecar: %s KiB before the clients, %s KiB once the %s had left (L1 now holds %s KiB)\n' \
    "$rss_before" "$(awk '/^VmRSS/ { print $2 }' "/proc/$pid/status")" "$CONNS" "${l1_kib:-?}"
  stop "$pid"
}

# --- bulk load ----------------------------------------------------------------------------------
# resp_pairs COUNT: COUNT SET+GET pairs of distinct keys ("bulk:%012d", 64-byte values), in RESP.
resp_pairs() {
  awk -v n="$1" 'BEGIN {
    v = sprintf("%064d", 0); gsub(/0/, "v", v)
    for (i = 0; i < n; i++) {
      k = sprintf("bulk:%012d", i)
      printf "*3\r\n$3\r\nSET\r\n$17\r\n%s\r\n$64\r\n%s\r\n*2\r\n$3\r\nGET\r\n$17\r\n%s\r\n", k, v, k
    }
  }'
}

# run_pipe OUT_PREFIX ARGS...: runs `redis-cli ARGS --pipe <$work/bulk.resp`; appends its wall time
# and its own CPU time (user + system), in ms, to the arrays OUT_PREFIX_ms and OUT_PREFIX_cpu.
run_pipe() {
  local -n ms_out=$1_ms cpu_out=$1_cpu
  local t real user sys
  shift
  t=$({ TIMEFORMAT='%3R %3U %3S'; time redis-cli "$@" --pipe <"$work/bulk.resp" >/dev/null 2>&1; } 2>&1)
  read -r real user sys <<<"$t"
  ms_out+=("$(awk -v r="$real" 'BEGIN { printf "%d", r * 1000 }')")
  cpu_out+=("$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%d", (u + s) * 1000 }')")
}

run_bulk() {
  local port pid r who direct_ms=() direct_cpu=() side_ms=() side_cpu=()
  local -A args
  port=$(free_port)
  printf '\n### bulk load%s: %s SET+GET pairs through redis-cli --pipe, %s rounds (ms)\n' \
    "$([[ -n $inner ]] && echo ', remote upstream')" "$BULK_PAIRS" "$ROUNDS"
  start_sidecar bulk "$port" "$(free_port)" "$redis_tls_port"
  pid=$last_pid
  args=([direct]="-p $redis_tls_port --tls --cacert $work/ca.crt" [side]="-p $port")
  resp_pairs "$BULK_PAIRS" >"$work/bulk.resp"
  for r in $(seq 1 "$ROUNDS"); do
    for who in $(rotated "$((r - 1))" direct side); do
      # shellcheck disable=SC2086  # args[...] is a list of words on purpose
      run_pipe "$who" ${args[$who]}
    done
  done
  printf '  direct TLS:              %s\n' "${direct_ms[*]}"
  printf '  sidecar (default flags): %s\n' "${side_ms[*]}"
  # The client's own CPU: redis-cli's reader slows down when many replies wait for it (README,
  # Pipeline depth), so a slow round with little sidecar CPU shows here.
  printf '  redis-cli CPU, direct TLS:  %s\n' "${direct_cpu[*]}"
  printf '  redis-cli CPU, sidecar:     %s\n' "${side_cpu[*]}"
  awk -v d="$(echo "${direct_ms[*]}" | median)" -v s="$(echo "${side_ms[*]}" | median)" 'BEGIN {
    printf "  medians: direct TLS %d ms, sidecar %d ms: sidecar takes %.2fx the time\n", d, s, s / d }'
  stop "$pid"
}

# --- misses in the near cache ------------------------------------------------------------------
# upstream_calls: every command Redis on the plaintext port's instance ran so far (commandstats).
upstream_calls() {
  redis-cli -p "$redis_port" INFO commandstats | tr -d '\r' |
    awk -F'[=,]' '/^cmdstat_/ { s += $2 } END { print s + 0 }'
}

# resp_gets FIRST COUNT: COUNT GETs of the keys resp_sets wrote, in RESP.
resp_gets() {
  awk -v first="$1" -v n="$2" 'BEGIN {
    for (i = first; i < first + n; i++) printf "*2\r\n$3\r\nGET\r\n$16\r\nkey:%012d\r\n", i
  }'
}

# Default flags (tracking on Redis 7: a miss is read in a transaction that also tracks the key)
# against pass-through (--cache-mode=fallback: one GET each), interleaved over ROUNDS rounds.
run_misses() {
  local r name port pid c0 t0 t1 out file=$work/gets.resp
  local -A ms calls ops per
  printf '\n### misses: default flags against pass-through (%s), %s rounds\n' "${pass_flags[*]}" \
    "$ROUNDS"
  resp_gets 0 "$MISS_KEYS" >"$file"
  for r in $(seq 1 "$ROUNDS"); do
    for name in $(rotated "$((r - 1))" default pass); do
      # A fresh sidecar: every key is a miss (ms to read them all, upstream commands per GET).
      port=$(free_port)
      if [[ $name == default ]]; then
        start_sidecar "miss-$name" "$port" "$(free_port)" "$redis_tls_port"
      else
        start_sidecar "miss-$name" "$port" "$(free_port)" "$redis_tls_port" "${pass_flags[@]}"
      fi
      pid=$last_pid
      sleep 0.2 # the default sidecar's invalidation channel settles its mode
      c0=$(upstream_calls)
      t0=$(date +%s%N)
      redis-cli -p "$port" --pipe <"$file" >/dev/null
      t1=$(date +%s%N)
      ms[$name]+="$(((t1 - t0) / 1000000)) "
      calls[$name]+="$(awk -v a="$c0" -v b="$(upstream_calls)" -v n="$MISS_KEYS" 'BEGIN { printf "%.2f", (b - a) / n }') "
      # GETs of absent keys, -c 50: tracking mode answers nil from L1 after the first read of each.
      c0=$(upstream_calls)
      out=$(redis-benchmark -p "$port" -c 50 -n "$N" -r 10000 -q GET 'absent:__rand_int__' 2>/dev/null |
        tr '\r' '\n' | grep 'requests per second' | tail -1)
      ops[$name]+="$(echo "$out" | awk '{ for (i = 1; i < NF; i++) if ($(i + 1) == "requests") printf "%d", $i }') "
      per[$name]+="$(awk -v a="$c0" -v b="$(upstream_calls)" -v n="$N" 'BEGIN { printf "%.2f", (b - a) / n }') "
      stop "$pid"
    done
  done
  for name in default pass; do
    printf '  %-8s cold pipeline of %s GETs: %s ms, upstream commands per GET: %s\n' \
      "$name" "$MISS_KEYS" "${ms[$name]}" "${calls[$name]}"
    printf '  %-8s absent keys, -c 50: %s ops/s, upstream commands per GET: %s\n' \
      "$name" "${ops[$name]}" "${per[$name]}"
  done
  awk -v dm="$(echo "${ms[default]}" | median)" -v pm="$(echo "${ms[pass]}" | median)" \
    -v dops="$(echo "${ops[default]}" | median)" -v pops="$(echo "${ops[pass]}" | median)" 'BEGIN {
      printf "  medians: cold pipeline %d ms against %d ms (%.2fx the time); absent keys %d against %d ops/s (%.2fx)\n",
        dm, pm, dm / pm, dops, pops, dops / pops }'
}

# --- larger values ---------------------------------------------------------------------------
# Values of VALUE_SIZES bytes on 1,000 of the keys (key:000000000000 ...), GET and SET at -c 50
# -P 1: direct TLS, stunnel4 and a pass-through sidecar started for this section (the others' L1
# keeps its 64-byte values). Each byte crosses the sidecar twice (TLS from Redis, plaintext to the
# client), as it crosses stunnel4, where direct TLS has one hop.
run_values() {
  local size r target test port pid out p0 p1 rps order
  local -A ops cpu args
  local targets=(direct-tls stunnel sidecar)
  port=$(free_port)
  start_sidecar values "$port" "$(free_port)" "$redis_tls_port" "${pass_flags[@]}"
  pid=$last_pid
  args=([direct-tls]="$(target_args direct-tls)" [stunnel]="$(target_args stunnel)" [sidecar]="-p $port")
  printf '\n### values: GET and SET of larger values, 1,000 keys, -c %s -P 1, %s rounds (ops/s medians)\n' \
    "$CLIENTS" "$ROUNDS"
  for size in $VALUE_SIZES; do
    resp_sets 0 1000 "$size" | redis-cli -p "$redis_port" --pipe >/dev/null
    for r in $(seq 1 "$ROUNDS"); do
      mapfile -t order < <(rotated "$((r - 1))" "${targets[@]}")
      for target in "${order[@]}"; do
        for test in GET SET; do
          log "values $size round $r/$ROUNDS  $target $test"
          p0=0 p1=0
          [[ $target == sidecar ]] && p0=$(cpu_ticks "$pid")
          # shellcheck disable=SC2086  # args[...] is a list of words on purpose
          out=$(redis-benchmark -h 127.0.0.1 ${args[$target]} -t "$test" -r 1000 -d "$size" \
            -n "$VALUE_N" -c "$CLIENTS" --csv 2>&1) ||
            die "redis-benchmark against $target failed: $out"
          [[ $target == sidecar ]] && p1=$(cpu_ticks "$pid")
          rps=$(printf '%s\n' "$out" | tr -d '"\r' | awk -F, '$1 == "SET" || $1 == "GET" { printf "%d", $2 }')
          [[ -n $rps ]] || die "no result from redis-benchmark against $target: $out"
          ops[$size,$test,$target]+="$rps "
          [[ $target == sidecar ]] && cpu[$size,$test]+="$(((p1 - p0) * 1000000 / clk_tck / VALUE_N)) "
        done
      done
    done
  done
  stop "$pid"
  resp_sets 0 1000 | redis-cli -p "$redis_port" --pipe >/dev/null
  printf '  %-7s %-4s %11s %11s %11s %13s %13s %14s\n' size test "direct TLS" stunnel4 sidecar \
    "/direct TLS" "/stunnel4" "sidecar CPU"
  for size in $VALUE_SIZES; do
    for test in GET SET; do
      awk -v size="$size" -v test="$test" -v d="$(echo "${ops[$size,$test,direct-tls]}" | median)" \
        -v st="$(echo "${ops[$size,$test,stunnel]}" | median)" \
        -v sc="$(echo "${ops[$size,$test,sidecar]}" | median)" \
        -v c="$(echo "${cpu[$size,$test]}" | median)" 'BEGIN {
          printf "  %-7s %-4s %11d %11d %11d %12.2fx %12.2fx %9d us/req\n", size, test, d, st, sc, sc / d, sc / st, c }'
    done
  done
  for size in $VALUE_SIZES; do
    for test in GET SET; do
      printf '  rounds %s %s: direct TLS %s| stunnel4 %s| sidecar %s\n' "$size" "$test" \
        "${ops[$size,$test,direct-tls]}" "${ops[$size,$test,stunnel]}" "${ops[$size,$test,sidecar]}"
    done
  done
}

# --- remote mode: this script again, inside a namespace with delayed Redis ports -----------------
run_remote() {
  local tools=$repo/../shared/bench-tools
  [[ -x $tools/remote-upstream.sh ]] || die "no $tools/remote-upstream.sh"
  netns=rsbench$$
  local rport=16400 rtport=16401
  log "remote mode: namespace $netns, +$RTT_US us on ports $rport/$rtport"
  NETNS=$netns RTT_US=$RTT_US REDIS_PORT=$rport REDIS_TLS_PORT=$rtport QUEUE_NUM=$((100 + $$ % 900)) \
    "$tools/remote-upstream.sh" setup 2>>"$work/remote.log" || die "remote set-up failed: $(tail -3 "$work/remote.log")"
  printf '\n### remote upstream: Redis ports delayed by RTT_US=%s us (plus ~0.2 ms of the delayer)\n' "$RTT_US"
  NETNS=$netns REDIS_PORT=$rport REDIS_TLS_PORT=$rtport "$tools/remote-upstream.sh" exec \
    env BENCH_REMOTE_INNER=1 N="$N" ROUNDS="$REMOTE_ROUNDS" LATENCY_N="$LATENCY_N" \
    BULK_PAIRS="$BULK_PAIRS" REDIS_SIDECAR_BINARY="$sidecar_bin" bash "$repo/bench/run.sh" \
    throughput latency bulk
  NETNS=$netns "$tools/remote-upstream.sh" teardown 2>>"$work/remote.log" || true
  netns=""
}

# PLACEMENT=split: Redis alone on the last core; the app (the throughput and latency sections'
# redis-benchmark) and every proxy on the others, as a remote Redis and an app's pod with its
# sidecar are placed. The other sections' clients are left to the kernel. Left to the kernel, three
# busy processes on two cores share them its way, differently from round to round (RESULTS.md).
client_cpus=""
place_processes() {
  local last pid
  last=$(($(nproc) - 1))
  ((last >= 1)) || die "PLACEMENT=split needs 2 cores or more"
  client_cpus=0-$((last - 1))
  taskset -apc "$last" "$redis_pid" >/dev/null
  for pid in "$stunnel_pid" "$nutcracker_pid" "$sidecar_pid" "$off_pid" "${l1_pid:-}" "${l1bp_pid:-}" \
    "${bp_pid:-}" "$unix_pid"; do
    [[ -z $pid ]] || taskset -apc "$client_cpus" "$pid" >/dev/null
  done
  log "placement: redis-server on core $last; redis-benchmark and the proxies on $client_cpus"
}

if wants throughput || wants latency || wants memory || wants connections || wants bulk ||
  wants misses || wants values; then
  setup_targets
  case ${PLACEMENT:-} in
    "") ;;
    split) place_processes ;;
    *) die "PLACEMENT=$PLACEMENT: only split is known" ;;
  esac
fi
wants throughput && run_throughput "$ROUNDS"
wants latency && run_latency "$ROUNDS"
if wants throughput || wants latency; then
  report "$([[ -n $inner ]] && echo remote || echo local)" "$ROUNDS"
  check_forwarded
  printf '  RSS of the pass-through sidecar after the runs: %s KiB\n' "$(rss_kb "$sidecar_pid")"
fi
wants memory && run_memory
wants connections && run_connections
wants bulk && run_bulk
wants misses && run_misses
wants values && run_values
if wants remote && [[ -z $inner ]]; then
  cleanup_processes
  run_remote
fi
[[ -n $inner ]] || printf '\n# load average at the end: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
