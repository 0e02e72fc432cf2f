#!/usr/bin/env bash
# The whole test suite, as CI runs it, on a fresh Debian 12 machine (as root) or a prepared one:
#
#   1. packages: apt-get installs whatever is missing (skipped when everything is there)
#   2. build-ci:   RelWithDebInfo, -Werror; ctest (unit, integration, node and Python client tests)
#   3. build-asan: Debug with ASan + UBSan; ctest again, sanitizer errors abort
#   4. fuzzers:    tests/fuzz/run.sh, 20 s per target
#   5. benchmark:  tests/bench/smoke.sh, bench/run.sh with tiny request counts against the ASan+UBSan
#                  binary: the benchmark works and its correctness checks hold (no timing asserted)
#   6. packaging:  tests/packaging/run.sh (Helm chart checks; Docker image built and run with podman)
#
# Every stage runs even when an earlier one failed (a failed build only fails the tests that need
# it). The last line is "N passed, N failed" over all stages; the exit status is non-zero when
# anything failed.
#
# Usage: bash tests/run-all.sh       (env: JOBS build jobs, default 2; CTEST_JOBS, default 2;
#                                           FUZZ_SECONDS, default 20)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
JOBS=${JOBS:-2}
CTEST_JOBS=${CTEST_JOBS:-2}
FUZZ_SECONDS=${FUZZ_SECONDS:-20}

work=$(mktemp -d /tmp/run-all.XXXXXX)
trap 'rm -rf "$work"' EXIT
results=$work/results  # lines: "<stage name>|<passed>|<failed>|<seconds>"
failures=$work/failures  # lines: "<stage name>: <failed test>", repeated in the summary
details=$work/details    # the failed assertions and sanitizer reports, repeated in the summary
: >"$results"
: >"$failures"
: >"$details"
started=$SECONDS

banner() { printf '\n==== %s ====\n' "$*"; }
record() { printf '%s|%s|%s|%s\n' "$1" "$2" "$3" "$4" >>"$results"; }
# record_last <name> <start seconds>: one passed or one failed stage, by $last_rc (run_checked).
record_last() {
  if ((last_rc == 0)); then
    record "$1" 1 0 $((SECONDS - $2))
  else
    record "$1" 0 1 $((SECONDS - $2))
  fi
}

# Runs "$@" in a subshell with errexit on and puts its status in $last_rc; never stops this script.
# (Call it as a plain command: inside `if` or `||`, bash would switch errexit off in the subshell.)
last_rc=0
run_checked() {
  set +e
  (set -e; "$@")
  last_rc=$?
  set -e
}

# --- 1. packages --------------------------------------------------------------------------------
packages=(g++ cmake make pkg-config libboost1.81-dev libboost-url1.81-dev libhiredis-dev
  prometheus-cpp-dev catch2 libssl-dev redis-server redis-tools prometheus openssl ca-certificates clang-14
  libclang-rt-14-dev python3 python3-redis stunnel4 nutcracker iptables curl)
install_packages() {
  local missing=() p
  for p in "${packages[@]}"; do
    [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true) == "install ok installed" ]] || missing+=("$p")
  done
  # node may come from elsewhere than Debian (e.g. a newer build on PATH): only install Debian's
  # when the commands are missing.
  command -v node >/dev/null 2>&1 || missing+=(nodejs npm)
  command -v node >/dev/null 2>&1 && ! command -v npm >/dev/null 2>&1 && missing+=(npm)
  if ((${#missing[@]} == 0)); then
    echo "all packages present"
    return 0
  fi
  echo "missing: ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then
    echo "not root: install them first (apt-get install ${missing[*]})" >&2
    return 1
  fi
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
}

banner "packages"
t0=$SECONDS
run_checked install_packages
record_last "packages" "$t0"

# --- builds and ctest ---------------------------------------------------------------------------
# build <dir> <cmake args...>: configure and build everything.
build() {
  local dir=$1
  shift
  cmake -S "$root" -B "$root/$dir" "$@"
  cmake --build "$root/$dir" -j"$JOBS"
}

# run_ctest <dir> <label>: runs ctest, prints its output, records passed/failed from its summary.
run_ctest() {
  local dir=$1 label=$2 log=$work/ctest-$1.log t0=$SECONDS rc passed failed total
  set +e
  (cd "$root/$dir" && ctest --output-on-failure -j"$CTEST_JOBS" --timeout 600) 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  set -e
  # "95% tests passed, 1 tests failed out of 20"
  local summary
  summary=$(grep -E '^[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -1 || true)
  if [[ -z $summary ]]; then
    echo "!! $label: ctest printed no summary (exit $rc)" >&2
    record "$label" 0 1 $((SECONDS - t0))
    return
  fi
  failed=$(sed -E 's/.* ([0-9]+) tests? failed out of.*/\1/' <<<"$summary")
  total=$(sed -E 's/.* out of ([0-9]+).*/\1/' <<<"$summary")
  passed=$((total - failed))
  # ctest's list after "The following tests FAILED:", e.g. "	 17 - near_cache (Failed)".
  sed -n '/^The following tests FAILED:/,/^[^[:space:]]/{/^[[:space:]]/p}' "$log" |
    sed -E "s/^[[:space:]]*/$label: /" >>"$failures" || true
  # What failed, so that the summary alone (the end of a long log) says why: each failed
  # assertion or sanitizer report with the lines that explain it, at most 60 lines per stage.
  if ((failed > 0)); then
    {
      echo "$label:"
      grep -E -A4 ': FAILED:$|ERROR: (Address|Leak)Sanitizer|runtime error:' "$log" | head -60 |
        sed 's/^/  /'
    } >>"$details" || true
  fi
  if ((total == 0)); then
    echo "!! $label: no tests found" >&2
    failed=1
  elif ((rc != 0 && failed == 0)); then
    echo "!! $label: ctest exited $rc with no failed test" >&2
    failed=1
  fi
  record "$label" "$passed" "$failed" $((SECONDS - t0))
}

# stage <dir> <label> <cmake args...>
stage() {
  local dir=$1 label=$2
  shift 2
  banner "$label: build ($dir)"
  local t0=$SECONDS
  run_checked build "$dir" "$@"
  if ((last_rc == 0)); then
    record "$label: build" 1 0 $((SECONDS - t0))
    banner "$label: ctest"
    run_ctest "$dir" "$label: ctest"
  else
    record "$label: build" 0 1 $((SECONDS - t0))
    echo "!! $label: build failed, its tests cannot run" >&2
    record "$label: ctest (not run: build failed)" 0 1 0
  fi
}

stage build-ci "release" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DREDIS_SIDECAR_WERROR=ON

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
stage build-asan "asan+ubsan" -DCMAKE_BUILD_TYPE=Debug -DREDIS_SIDECAR_SANITIZE=ON
unset ASAN_OPTIONS UBSAN_OPTIONS

# --- fuzzers ------------------------------------------------------------------------------------
banner "fuzzers (${FUZZ_SECONDS}s per target)"
t0=$SECONDS
if [[ ! -f tests/fuzz/run.sh ]]; then
  echo "!! tests/fuzz/run.sh is missing" >&2
  record "fuzzers" 0 1 0
else
  run_checked bash tests/fuzz/run.sh "$FUZZ_SECONDS"
  record_last "fuzzers" "$t0"
fi

# --- benchmark smoke ----------------------------------------------------------------------------
# bench/run.sh, every section, with tiny request counts (about a minute), against the sanitizer
# build when it exists: the benchmark must keep working from a clean clone, and its checks (every
# pass-through request reached Redis, L1 answered the L1-hit runs, the pool bound held under 1,000
# clients, no sanitizer report) must hold. Its figures mean nothing at these counts.
banner "benchmark smoke (bench/run.sh, tiny counts)"
t0=$SECONDS
smoke_binary=$root/build-asan/proxy/redis-sidecar
[[ -x $smoke_binary ]] || smoke_binary=$root/build-ci/proxy/redis-sidecar
if [[ ! -x $smoke_binary ]]; then
  echo "!! no redis-sidecar binary was built: the benchmark smoke cannot run" >&2
  record "benchmark smoke (not run: no binary)" 0 1 0
else
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
  export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
  run_checked bash tests/bench/smoke.sh "$smoke_binary"
  unset ASAN_OPTIONS UBSAN_OPTIONS
  record_last "benchmark smoke" "$t0"
fi

# --- packaging ----------------------------------------------------------------------------------
# Dockerfile (built with buildah, run with podman) and the Helm chart (lint, schema, manifests
# validated offline, rendered args accepted by the binary's --check-config). The host binary is the
# one the release stage built, when it exists.
banner "packaging (Dockerfile, Helm chart)"
t0=$SECONDS
if [[ -x $root/build-ci/proxy/redis-sidecar ]]; then
  export REDIS_SIDECAR_BINARY=$root/build-ci/proxy/redis-sidecar
fi
run_checked bash tests/packaging/run.sh
unset REDIS_SIDECAR_BINARY
record_last "packaging" "$t0"

# --- summary ------------------------------------------------------------------------------------
banner "summary"
total_passed=0
total_failed=0
while IFS='|' read -r name passed failed secs; do
  printf '  %-42s %5s passed %4s failed  %5ss\n' "$name" "$passed" "$failed" "$secs"
  total_passed=$((total_passed + passed))
  total_failed=$((total_failed + failed))
done <"$results"
if [[ -s $details ]]; then
  echo "  why they failed:"
  sed 's/^/    /' "$details"
fi
if [[ -s $failures ]]; then
  echo "  failed tests:"
  sed 's/^/    /' "$failures"
fi
printf '  total time %ss\n' $((SECONDS - started))
echo "$total_passed passed, $total_failed failed"
((total_failed == 0))
