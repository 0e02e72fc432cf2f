#!/usr/bin/env bash
# Throughput and latency of redis-sidecar next to the alternatives, all in front of one local Redis:
#
#   direct        redis-benchmark -> Redis (plaintext)
#   direct-tls    redis-benchmark -> Redis (TLS)                      <- the baseline for ratios
#   stunnel       redis-benchmark -> stunnel4 (client mode) -> Redis (TLS)
#   nutcracker    redis-benchmark -> nutcracker (twemproxy) -> Redis (plaintext)
#   sidecar       redis-benchmark -> redis-sidecar -> Redis (TLS)
#
# Each round runs every target once per pipeline depth (-P 1, -P 16), so slow drifts of the machine
# hit all targets alike; the table shows medians over the rounds. Then a single-connection GET
# latency run (-c 1 -P 1) compares direct TLS, stunnel and the sidecar. Finally it checks, with
# INFO commandstats on Redis, that the sidecar's GETs really reached Redis.
#
# Usage: bench/run.sh            (env: N requests per test and run, default 100000;
#                                       ROUNDS, default 3; LATENCY_N, default N/5;
#                                       REDIS_SIDECAR_BINARY, default ./build/proxy/redis-sidecar;
#                                       KEEP_WORK=1 keeps the temp dir with certs and logs)
# Needs: redis-server, redis-benchmark, redis-cli (7.x), stunnel4, nutcracker, openssl; installed
# with apt-get when missing (as root). Everything runs on 127.0.0.1 on free ports.
set -euo pipefail

N=${N:-100000}
ROUNDS=${ROUNDS:-3}
LATENCY_N=${LATENCY_N:-$((N / 5))}
CLIENTS=50
cd "$(dirname "$0")/.."
repo=$(pwd)

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

# --- dependencies ------------------------------------------------------------------------------
missing=()
for pair in redis-server:redis-server redis-benchmark:redis-tools redis-cli:redis-tools \
            stunnel4:stunnel4 nutcracker:nutcracker openssl:openssl; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if ((${#missing[@]})); then
  [[ $(id -u) -eq 0 ]] || die "missing ${missing[*]}: run as root or apt-get install them"
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Debian installs nutcracker in /usr/sbin, which a non-login shell may not have on PATH.
nutcracker_bin=$(command -v nutcracker || echo /usr/sbin/nutcracker)

sidecar_bin=${REDIS_SIDECAR_BINARY:-$repo/build/proxy/redis-sidecar}
if [[ ! -x $sidecar_bin ]]; then
  [[ -z ${REDIS_SIDECAR_BINARY:-} ]] || die "REDIS_SIDECAR_BINARY=$sidecar_bin is not executable"
  log "building redis-sidecar (Release) in ./build"
  cmake -S "$repo" -B "$repo/build" -DCMAKE_BUILD_TYPE=Release -DREDIS_SIDECAR_TESTS=OFF >/dev/null
  cmake --build "$repo/build" --target redis-sidecar -j"$(nproc)" >/dev/null
fi

# --- processes and cleanup ---------------------------------------------------------------------
work=$(mktemp -d /tmp/sidecar-bench.XXXXXX)
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  [[ -n ${KEEP_WORK:-} ]] || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A loopback port nothing listens on (and that this script has not handed out yet), below the
# kernel's ephemeral range so that no outgoing connection holds it either.
read -r ephemeral_lo _ </proc/sys/net/ipv4/ip_local_port_range || ephemeral_lo=32768
((ephemeral_lo > 12000)) || ephemeral_lo=32768
taken=" "
free_port() {
  local p
  while :; do
    p=$((10000 + RANDOM % (ephemeral_lo - 10000)))
    [[ $taken == *" $p "* ]] && continue
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      taken+="$p "
      echo "$p"
      return
    fi
  done
}

# Waits until redis-cli gets PONG through `$@` (connection arguments), or fails after 10 s.
wait_pong() {
  local i
  for i in $(seq 1 200); do
    [[ $(redis-cli "$@" PING 2>/dev/null) == PONG ]] && return 0
    sleep 0.05
  done
  tail -n 5 "$work"/*.log >&2 || true
  die "no PONG from redis-cli $*"
}

log "certificates"
(
  cd "$work"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=bench-ca \
    -keyout ca.key -out ca.crt 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key -out server.csr 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >san.ext
  openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
    -extfile san.ext -out server.crt 2>/dev/null
)

redis_port=$(free_port)
redis_tls_port=$(free_port)
stunnel_port=$(free_port)
nutcracker_port=$(free_port)
nutcracker_stats_port=$(free_port)
sidecar_port=$(free_port)

log "redis-server on $redis_port (TLS $redis_tls_port)"
redis-server --port "$redis_port" --tls-port "$redis_tls_port" --bind 127.0.0.1 \
  --tls-cert-file "$work/server.crt" --tls-key-file "$work/server.key" \
  --tls-ca-cert-file "$work/ca.crt" --tls-auth-clients no \
  --save '' --appendonly no --dir "$work" --logfile "$work/redis.log" &
pids+=($!)
wait_pong -p "$redis_port"

log "stunnel4 (client mode) on $stunnel_port"
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
stunnel4 "$work/stunnel.conf" &
pids+=($!)
wait_pong -p "$stunnel_port"

log "nutcracker on $nutcracker_port"
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
"$nutcracker_bin" -c "$work/nutcracker.yml" -s "$nutcracker_stats_port" -a 127.0.0.1 \
  -o "$work/nutcracker.log" &
pids+=($!)
wait_pong -p "$nutcracker_port"

log "redis-sidecar on $sidecar_port ($sidecar_bin)"
"$sidecar_bin" --listen "127.0.0.1:$sidecar_port" --upstream "rediss://127.0.0.1:$redis_tls_port" \
  --tls-ca-file "$work/ca.crt" --log-level warn 2>"$work/sidecar.log" &
pids+=($!)
wait_pong -p "$sidecar_port"

# --- runs --------------------------------------------------------------------------------------
targets=(direct direct-tls stunnel nutcracker sidecar)
target_args() {
  case $1 in
    direct) echo "-p $redis_port" ;;
    direct-tls) echo "-p $redis_tls_port --tls --cacert $work/ca.crt" ;;
    stunnel) echo "-p $stunnel_port" ;;
    nutcracker) echo "-p $nutcracker_port" ;;
    sidecar) echo "-p $sidecar_port" ;;
  esac
}

get_calls() {
  redis-cli -p "$redis_port" INFO commandstats | tr -d '\r' |
    sed -n 's/^cmdstat_get:calls=\([0-9]*\),.*/\1/p' | grep . || echo 0
}

results=$work/results.csv   # target,pipeline,test,rps,p50_ms,p99_ms
: >"$results"
sidecar_gets_sent=0
sidecar_gets_seen=0

# Runs redis-benchmark against target $1 with the remaining arguments; appends to $results.
bench() {
  local target=$1 pipeline=$2
  shift 2
  local before=0 after out
  [[ $target == sidecar ]] && before=$(get_calls)
  # shellcheck disable=SC2046  # target_args is a list of words on purpose
  if ! out=$(redis-benchmark -h 127.0.0.1 $(target_args "$target") -P "$pipeline" --csv "$@" 2>&1); then
    die "redis-benchmark against $target failed: $out"
  fi
  if [[ $target == sidecar ]]; then
    after=$(get_calls)
    sidecar_gets_seen=$((sidecar_gets_seen + after - before))
  fi
  # "GET","rps","avg","min","p50","p95","p99","max"
  printf '%s\n' "$out" | tr -d '"\r' | awk -F, -v t="$target" -v p="$pipeline" -v tag="$TAG" \
    '$1 == "SET" || $1 == "GET" { print t "," p "," tag $1 "," $2 "," $5 "," $7 }' >>"$results"
  local got
  got=$(printf '%s\n' "$out" | grep -c '^"\(GET\|SET\)"' || true)
  [[ $got -ge 1 ]] || die "no results from redis-benchmark against $target: $out"
}

TAG=""
for round in $(seq 1 "$ROUNDS"); do
  for pipeline in 1 16; do
    for target in "${targets[@]}"; do
      log "round $round/$ROUNDS  -P $pipeline  $target"
      bench "$target" "$pipeline" -t get,set -c "$CLIENTS" -r 100000 -d 64 -n "$N"
      [[ $target == sidecar ]] && sidecar_gets_sent=$((sidecar_gets_sent + N))
    done
  done
done

TAG="c1-"
for round in $(seq 1 "$ROUNDS"); do
  for target in direct-tls stunnel sidecar; do
    log "round $round/$ROUNDS  -c 1 -P 1 GET  $target"
    bench "$target" 1 -t get -c 1 -r 100000 -d 64 -n "$LATENCY_N"
    [[ $target == sidecar ]] && sidecar_gets_sent=$((sidecar_gets_sent + LATENCY_N))
  done
done

# --- report ------------------------------------------------------------------------------------
# Median over rounds of rps, p50 and p99 per (target, pipeline, test); spread = (max-min)/median.
summary=$work/summary.csv
awk -F, '
  function median(list,   a, n, i, j, x) {
    n = split(list, a, " ")
    for (i = 2; i <= n; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > x + 0; j--) a[j + 1] = a[j]; a[j + 1] = x }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  function lo(list,   a, n, i, m) { n = split(list, a, " "); m = a[1]; for (i = 2; i <= n; i++) if (a[i] + 0 < m + 0) m = a[i]; return m }
  function hi(list,   a, n, i, m) { n = split(list, a, " "); m = a[1]; for (i = 2; i <= n; i++) if (a[i] + 0 > m + 0) m = a[i]; return m }
  {
    k = $1 "," $2 "," $3
    if (!(k in rps)) order[++nk] = k
    rps[k] = rps[k] " " $4; p50[k] = p50[k] " " $5; p99[k] = p99[k] " " $6
  }
  END {
    for (i = 1; i <= nk; i++) {
      k = order[i]; m = median(rps[k])
      printf "%s,%.0f,%.1f,%.3f,%.3f\n", k, m, (m > 0 ? (hi(rps[k]) - lo(rps[k])) * 100 / m : 0), median(p50[k]), median(p99[k])
    }
  }' "$results" >"$summary"

printf '\nredis-benchmark: -c %s -r 100000 -d 64 -n %s per test, %s rounds, medians over rounds\n' \
  "$CLIENTS" "$N" "$ROUNDS"
printf 'spread = (max - min) / median of ops/s over the rounds; vs tls = ops/s / direct-tls ops/s\n\n'
awk -F, '
  { key[NR] = $0; rps[$1 "," $2 "," $3] = $4 }
  END {
    printf "%-11s %3s %-5s %11s %7s %9s %9s %8s\n", "target", "-P", "test", "ops/s", "spread", "p50 ms", "p99 ms", "vs tls"
    for (pass = 1; pass <= 2; pass++)
      for (i = 1; i <= NR; i++) {
        split(key[i], f, ",")
        if (f[3] ~ /^c1-/) continue
        if ((pass == 1) != (f[3] == "SET")) continue
        base = rps["direct-tls," f[2] "," f[3]]
        printf "%-11s %3s %-5s %11s %6s%% %9s %9s %7.2fx\n", f[1], f[2], f[3], f[4], f[5], f[6], f[7], (base > 0 ? f[4] / base : 0)
      }
    printf "\nsidecar compared with the other proxies (ops/s ratio, >1 means the sidecar is faster)\n"
    for (i = 1; i <= NR; i++) {
      split(key[i], f, ",")
      if (f[1] != "sidecar" || f[3] ~ /^c1-/) continue
      s = rps["stunnel," f[2] "," f[3]]; n = rps["nutcracker," f[2] "," f[3]]
      printf "  -P %-2s %-4s  sidecar/stunnel %.2fx   sidecar/nutcracker %.2fx\n", f[2], f[3], (s > 0 ? f[4] / s : 0), (n > 0 ? f[4] / n : 0)
    }
    printf "\nsingle connection GET latency (-c 1 -P 1, -n %s): median p50 / p99 in microseconds\n", latency_n
    for (i = 1; i <= NR; i++) {
      split(key[i], f, ",")
      if (f[3] != "c1-GET") continue
      p50[f[1]] = f[6] * 1000; p99[f[1]] = f[7] * 1000
      printf "  %-11s p50 %6.0f us   p99 %6.0f us   (%s ops/s)\n", f[1], p50[f[1]], p99[f[1]], f[4]
    }
    printf "  added by the sidecar over direct TLS: p50 %+.0f us, p99 %+.0f us\n", p50["sidecar"] - p50["direct-tls"], p99["sidecar"] - p99["direct-tls"]
    printf "  added by stunnel over direct TLS:     p50 %+.0f us, p99 %+.0f us\n", p50["stunnel"] - p50["direct-tls"], p99["stunnel"] - p99["direct-tls"]
  }' latency_n="$LATENCY_N" "$summary"

# --- the sidecar really forwarded ---------------------------------------------------------------
printf '\nGETs sent through the sidecar: %s; GET calls Redis counted meanwhile: %s\n' \
  "$sidecar_gets_sent" "$sidecar_gets_seen"
if ((sidecar_gets_seen < sidecar_gets_sent)); then
  die "Redis saw fewer GETs than were sent through the sidecar: replies did not all come from Redis"
fi
if grep -q -i 'sanitizer\|runtime error' "$work/sidecar.log"; then
  cat "$work/sidecar.log" >&2
  die "the sidecar log has a sanitizer report"
fi
printf 'check passed: every GET sent through the sidecar reached Redis\n'
