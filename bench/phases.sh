#!/usr/bin/env bash
# Where `-c 50 -P 16` loses its time on a small machine: scheduler timelines of Redis,
# redis-benchmark and (for target `sidecar`) a pass-through sidecar, from `perf sched record`.
#
# For each sample: a Redis with a TLS port and 100,000 keys, GETs (or SETs) at -c 50 -P 16 -d 64,
# and 0.3 s of scheduler events recorded in the middle of the run. It prints, per sample:
#   - idle: CPU time no process used, in cores;
#   - each process's share of a core, and of each CPU;
#   - the time one CPU was idle while the other ran, split by what ran ("Redis alone": every
#     request in flight is inside Redis, the others wait for it);
#   - how long each process was ready to run but waiting for a CPU, and how much of that while
#     another CPU sat idle (a placement the kernel did not correct).
# bench/RESULTS.md ("Where -P 16 loses its time") reads these for the sidecar and for direct TLS.
#
# Usage: bash bench/phases.sh [sidecar|direct-tls]   (default: sidecar)
# Environment: SAMPLES (default 3), TEST (get or set, default get), SIDECAR_FLAGS (default
# --cache-mode=fallback), REDIS_SIDECAR_BINARY (as bench/run.sh), KEEP_WORK=1 keeps the temp dir.
# Needs root for perf's scheduler tracepoints; installs what is missing with apt-get.
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$(pwd)
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"

target=${1:-sidecar}
[[ $target == sidecar || $target == direct-tls ]] || die "target: sidecar or direct-tls, not $target"
SAMPLES=${SAMPLES:-3}
TEST=${TEST:-get}
SIDECAR_FLAGS=${SIDECAR_FLAGS:---cache-mode=fallback}

ensure_commands redis-server:redis-server redis-benchmark:redis-tools redis-cli:redis-tools \
  openssl:openssl perf:linux-perf python3:python3
[[ $target == direct-tls ]] || sidecar_bin=$(find_sidecar "$repo")

work=$(mktemp -d /tmp/sidecar-phases.XXXXXX)
trap 'cleanup_processes; [[ -n ${KEEP_WORK:-} ]] || rm -rf "$work"' EXIT
trap 'exit 130' INT TERM
make_certs "$work"

# Sorts perf's timehist lines ("time [cpu] task wait delay run", times in ms) into the figures above.
analyse() {
  python3 - "$1" <<'EOF'
import bisect, collections, sys

runs = {}  # cpu -> [(start, end, task)]
delays = []  # (start, end, task, cpu): ready to run, not running
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) < 6 or not f[1].startswith('['):
        continue
    try:
        end, cpu, delay, run = float(f[0]), int(f[1].strip('[]')), float(f[-2]) / 1e3, float(f[-1]) / 1e3
    except ValueError:
        continue
    task = f[2].split('[')[0]
    runs.setdefault(cpu, []).append((end - run, end, task))
    if delay > 0 and task != '<idle>':
        delays.append((end - run - delay, end - run, task, cpu))
if len(runs) != 2:
    sys.exit('phases: this analysis is written for 2 CPUs, the timeline has %d' % len(runs))
ends = {c: [e for _, e, _ in runs[c]] for c in runs}

def on(cpu, t):
    i = bisect.bisect_right(ends[cpu], t)
    return runs[cpu][i][2] if i < len(runs[cpu]) and runs[cpu][i][0] <= t else '?'

start = max(r[0][0] for r in runs.values())
end = min(r[-1][1] for r in runs.values())
span, step = end - start, 2e-6
used = collections.Counter()
per_cpu = collections.defaultdict(collections.Counter)
for cpu, rs in runs.items():
    for s, e, task in rs:
        s, e = max(s, start), min(e, end)
        if e > s:
            used[task] += e - s
            per_cpu[task][cpu] += e - s
procs = ['redis-server', 'redis-sidecar', 'redis-benchmark']
print('  window %.0f ms; idle %.2f cores' % (span * 1e3, used['<idle>'] / span))
for p in procs:
    if used[p]:
        print('  %-16s %.2f cores (cpu0 %.2f, cpu1 %.2f)' %
              (p, used[p] / span, per_cpu[p][0] / span, per_cpu[p][1] / span))
cpus = sorted(runs)
alone = collections.Counter()
steps = 0
t = start
while t < end:
    a, b = on(cpus[0], t), on(cpus[1], t)
    if (a == '<idle>') != (b == '<idle>'):
        alone[b if a == '<idle>' else a] += 1
    steps += 1
    t += step
print('  one CPU idle while the other runs: %.1f %% of the time (%s)' %
      (100 * sum(alone.values()) / steps,
       ', '.join('%s alone %.1f %%' % (p, 100 * n / steps) for p, n in alone.most_common()
                 if 100 * n / steps >= 0.5)))
waiting = collections.Counter()
wasted = collections.Counter()
for s, e, task, cpu in delays:
    other = cpus[1] if cpu == cpus[0] else cpus[0]
    t = max(s, start)
    while t < min(e, end):
        waiting[task] += step
        if on(other, t) == '<idle>':
            wasted[task] += step
        t += step
for p in procs:
    if used[p]:
        print('  %-16s ready but waiting %.1f %% of the window, %.1f %% while the other CPU was idle' %
              (p, 100 * waiting[p] / span, 100 * wasted[p] / span))
EOF
}

for sample in $(seq 1 "$SAMPLES"); do
  port=$(free_port)
  tls_port=$(free_port)
  start_redis "$port" "$tls_port" "redis-$sample"
  redis_pid=$last_pid
  redis-benchmark -p "$port" -c 50 -P 16 -r 100000 -n 1000000 -d 64 -t set -q >/dev/null
  if [[ $target == direct-tls ]]; then
    bench_target=(-p "$tls_port" --tls --cacert "$work/ca.crt")
  else
    sport=$(free_port)
    # shellcheck disable=SC2086 # SIDECAR_FLAGS holds several flags
    start_sidecar "sidecar-$sample" "$sport" "$(free_port)" "$tls_port" $SIDECAR_FLAGS
    sidecar_pid=$last_pid
    bench_target=(-p "$sport")
  fi
  spawn redis-benchmark "${bench_target[@]}" -c 50 -P 16 -r 100000 -n 3000000 -d 64 -t "$TEST" -q \
    >/dev/null 2>&1
  bench_pid=$last_pid
  sleep 2
  perf sched record -o "$work/sched-$sample.data" -- sleep 0.3 >/dev/null 2>&1 ||
    die "perf sched record failed (root and the scheduler tracepoints are needed)"
  stop "$bench_pid"
  [[ $target == direct-tls ]] || stop "$sidecar_pid"
  stop "$redis_pid"
  perf sched timehist -i "$work/sched-$sample.data" >"$work/timehist-$sample.txt" 2>/dev/null
  echo "$target, -c 50 -P 16 $TEST, sample $sample/$SAMPLES:"
  analyse "$work/timehist-$sample.txt"
done
