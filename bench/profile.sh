#!/usr/bin/env bash
# Instructions per request of the sidecar's pass-through path, counted by callgrind: repeatable on a
# noisy machine where ops/s are not. Use it to compare builds before and after a change.
#
#   bench/profile.sh [BINARY...]        default: the binary bench/run.sh would use
#
# For each binary: a Redis with TLS, the sidecar under `valgrind --tool=callgrind` in front of it
# (--cache-mode=fallback: L1 filled, never answering, as bench/run.sh's `sidecar` target), a warm-up
# that also puts every key in L1, then for each workload: counters zeroed, redis-benchmark,
# counters dumped. Prints instructions per request in total and split by where they run (the
# sidecar's own code, OpenSSL, libc memset, the rest of libc/libstdc++). Kernel time is not
# counted: callgrind sees user space only. The health probe runs once a minute here, so its work
# does not blur the counts.
#
# Workloads (WORKLOADS, default all): c1-get, c1-set (-c 1 -P 1: one request per wake-up, every
# cost paid per request), c50-get (-c 50 -P 1), p16-get and p16-set (-c 50 -P 16). Batching at
# -c 50 depends on timing, so those vary a little between runs; -c 1 does not.
# Env: N1 (requests at -c 1, default 2000), N50 (default 20000), SIDECAR_FLAGS (default
# --cache-mode=fallback; e.g. add --cache-mode=off or --metrics-listen=off to price L1 or metrics),
# KEEP_WORK=1, CALLGRIND_OUT=DIR (keep the callgrind files there for callgrind_annotate).
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$(pwd)
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"

N1=${N1:-2000}
N50=${N50:-20000}
WORKLOADS=${WORKLOADS:-"c1-get c1-set c50-get p16-get p16-set"}
SIDECAR_FLAGS=${SIDECAR_FLAGS:---cache-mode=fallback}
ensure_commands redis-server:redis-server redis-benchmark:redis-tools redis-cli:redis-tools \
  openssl:openssl valgrind:valgrind callgrind_annotate:valgrind
binaries=("$@")
((${#binaries[@]})) || binaries=("$(find_sidecar "$repo")")

work=$(mktemp -d /tmp/sidecar-profile.XXXXXX)
trap 'cleanup_processes; [[ -n ${KEEP_WORK:-} ]] || rm -rf "$work"' EXIT
trap 'exit 130' INT TERM
out_dir=${CALLGRIND_OUT:-$work}
mkdir -p "$out_dir"

make_certs "$work"
redis_port=$(free_port)
redis_tls_port=$(free_port)
start_redis "$redis_port" "$redis_tls_port" redis
resp_sets 0 100000 | redis-cli -p "$redis_port" --pipe >/dev/null

workload_args() {
  case $1 in
    c1-get) echo "-t get -c 1 -P 1 -n $N1" ;;
    c1-set) echo "-t set -c 1 -P 1 -n $N1" ;;
    c50-get) echo "-t get -c 50 -P 1 -n $N50" ;;
    p16-get) echo "-t get -c 50 -P 16 -n $N50" ;;
    p16-set) echo "-t set -c 50 -P 16 -n $N50" ;;
    *) die "unknown workload $1" ;;
  esac
}

# Self instructions of one callgrind dump, split: total, sidecar, openssl, memset, rest. Reads the
# callgrind format directly: a cost line belongs to the current fn= of the current ob=, except the
# line right after calls=, which is the inclusive cost of a call.
split_ir() {
  awk '
    function name(s, id, rest) {
      id = s; sub(/^[a-z]+=/, "", id); rest = id
      sub(/\).*/, "", id); sub(/^\(/, "", id)
      if (rest ~ /\) /) { sub(/^\([0-9]+\) /, "", rest); return id SUBSEP rest }
      return id SUBSEP ""
    }
    /^ob=/ { split(name($0), a, SUBSEP); if (a[2] != "") obs[a[1]] = a[2]; ob = obs[a[1]]; next }
    /^cob=/ { split(name($0), a, SUBSEP); if (a[2] != "") obs[a[1]] = a[2]; next }
    /^fn=/ { split(name($0), a, SUBSEP); if (a[2] != "") fns[a[1]] = a[2]; fn = fns[a[1]]; next }
    /^cfn=/ { split(name($0), a, SUBSEP); if (a[2] != "") fns[a[1]] = a[2]; next }
    /^calls=/ { skip = 1; next }
    /^[0-9+*-]/ {
      if (skip) { skip = 0; next }
      all += $2
      if (fn ~ /memset/) memset += $2
      else if (ob ~ /libssl|libcrypto/) ssl += $2
      else if (ob == own_ob) own += $2
    }
    /^summary:/ { total = $2 }
    END {
      if (total == 0) total = all
      printf "%d %d %d %d %d\n", total, own, ssl, memset, total - own - ssl - memset
    }' own_ob="$(readlink -f "$2")" "$1"
}

# The last 40 characters of a path.
short() { local s=$1; ((${#s} <= 40)) || s=...${s: -37}; echo "$s"; }

printf '%-10s %-40s %10s %10s %10s %10s %10s\n' workload binary "Ir/req" sidecar openssl memset "libc+rest"
for bin in "${binaries[@]}"; do
  [[ -x $bin ]] || die "$bin is not executable"
  port=$(free_port)
  mport=$(free_port)
  tag=$(basename "$(dirname "$(dirname "$bin")")")
  # shellcheck disable=SC2086  # SIDECAR_FLAGS is a list of words on purpose
  spawn valgrind --tool=callgrind --callgrind-out-file="$out_dir/callgrind.$tag.%p" \
    "$bin" --listen "127.0.0.1:$port" --upstream "rediss://127.0.0.1:$redis_tls_port" \
    --tls-ca-file "$work/ca.crt" --metrics-listen "127.0.0.1:$mport" --log-level warn \
    --health-probe-interval-ms=60000 --health-probe-timeout-ms=30000 $SIDECAR_FLAGS \
    2>"$work/valgrind.$tag.log"
  vpid=$last_pid
  wait_pong -p "$port"
  # shellcheck disable=SC2046
  redis-benchmark -h 127.0.0.1 -p "$port" -t get,set -c 50 -P 16 -r 100000 -d 64 -n 20000 -q >/dev/null
  # Every key through the sidecar once, so that L1 holds them all, as in bench/run.sh after its
  # first runs: a reply's fill then overwrites an entry in place instead of inserting one.
  resp_sets 0 100000 | redis-cli -h 127.0.0.1 -p "$port" --pipe >/dev/null
  for w in $WORKLOADS; do
    callgrind_control -z "$vpid" >/dev/null 2>&1
    # shellcheck disable=SC2046  # workload_args is a list of words on purpose
    redis-benchmark -h 127.0.0.1 -p "$port" -r 100000 -d 64 $(workload_args "$w") -q >/dev/null
    before=$(ls "$out_dir"/callgrind."$tag".* | wc -l)
    callgrind_control -d "$vpid" >/dev/null 2>&1
    for _ in $(seq 1 100); do
      (($(ls "$out_dir"/callgrind."$tag".* | wc -l) > before)) && break
      sleep 0.1
    done
    dump=$(ls -t "$out_dir"/callgrind."$tag".* | head -1)
    n=$(workload_args "$w" | awk '{ print $NF }')
    read -r total own ssl memset rest < <(split_ir "$dump" "$bin")
    printf '%-10s %-40s %10d %10d %10d %10d %10d\n' "$w" "$(short "$bin")" $((total / n)) $((own / n)) \
      $((ssl / n)) $((memset / n)) $((rest / n))
  done
  stop "$vpid"
done
printf '(instructions per request, user space only; memset counts one instruction per byte where\n'
printf ' glibc uses "rep stosb", so it overstates that cost against the others: read it as bytes)\n'
