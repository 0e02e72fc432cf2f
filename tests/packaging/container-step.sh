# Step 4 of run.sh (sourced by it): the Dockerfile built with buildah on a locally made bookworm
# base, and the image run with podman in front of a loopback redis-server. Uses run.sh's helpers
# (ok, bad, quiet, elapsed, need_packages) and variables (root, here, chart, helm, tools, image,
# jobs, work, notes, cleanup_actions).
# shellcheck shell=bash disable=SC2015,SC2154

skip_container() {
  cat <<EOF

    ########################################################################################
    #  SKIPPED BECAUSE: $1
    #  The Dockerfile was NOT built and the image was NOT tested on this machine.
    #  This step needs podman, buildah, runc, mmdebstrap and uidmap (Debian packages), run as root.
    ########################################################################################

EOF
  if [[ ${REDIS_SIDECAR_ALLOW_NO_CONTAINER:-} == 1 ]]; then
    notes+=("container step SKIPPED ($1); allowed by REDIS_SIDECAR_ALLOW_NO_CONTAINER=1")
    return 3
  fi
  echo "    set REDIS_SIDECAR_ALLOW_NO_CONTAINER=1 to accept this skip; counting it as a failure"
  return 1
}

make_base_image() {
  # debian:bookworm-slim as Debian builds it: minbase, merged /usr without the usrmerge package,
  # no docs, man pages or locales, no apt lists. Tagged as both names the Dockerfile uses.
  # shellcheck disable=SC2016  # "$1" is for mmdebstrap's hook, not this shell
  mmdebstrap --quiet --variant=minbase --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --dpkgopt='path-exclude=/usr/share/lintian/*' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/log/apt/* "$1"/var/log/dpkg.log' \
    bookworm "$tools/bookworm-slim.tar" \
    "deb http://deb.debian.org/debian bookworm main" \
    "deb http://deb.debian.org/debian bookworm-updates main" \
    "deb http://deb.debian.org/debian-security bookworm-security main" &&
    podman import -q --change 'CMD ["/bin/bash"]' "$tools/bookworm-slim.tar" localhost/bookworm-base &&
    podman tag localhost/bookworm-base docker.io/library/debian:bookworm docker.io/library/debian:bookworm-slim &&
    rm -f "$tools/bookworm-slim.tar"
}

free_port() {
  node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

wait_for() {  # wait_for SECONDS COMMAND...: retries every 0.2 s
  local deadline=$(($(date +%s) + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    (($(date +%s) >= deadline)) && return 1
    sleep 0.2
  done
}

# The HTTP status of a GET ("000": nothing answered); the body goes to $work/http-body.
http_status() { curl -s -o "$work/http-body" -w '%{http_code}' -m 3 "$1"; }
why_status() { [[ $1 == 000 ]] && echo "nothing answers on $2: does the binary serve --metrics-listen?" || echo "answered $1"; }

# hook_command LABEL PORT HOOK: the sidecar's HOOK command from a classic render listening on PORT.
hook_command() {
  "$helm" template ci "$chart" --set "nativeSidecar=false,listen.port=$2,postStartWaitSeconds=2,preStopSleepSeconds=1" \
    >"$work/render/$1.yaml" 2>"$work/logs/$1.log" && node "$here/hook-command.mjs" "$work/render/$1.yaml" "$3"
}

check_hooks() {
  local ctr=$1 port=$2 closed hook=() t0
  if ! mapfile -t hook < <(hook_command hooks "$port" postStart) || ((${#hook[@]} == 0)); then
    bad "could not render the postStart hook"
    return
  fi
  podman exec "$ctr" "${hook[@]}" >/dev/null 2>&1 && ok "chart postStart hook returns once the sidecar listens" ||
    bad "chart postStart hook failed in the image: ${hook[*]}"
  closed=$(free_port)
  mapfile -t hook < <(hook_command hooks-closed "$closed" postStart)
  t0=$(date +%s.%N)
  if podman exec "$ctr" "${hook[@]}" >/dev/null 2>&1; then
    bad "chart postStart hook succeeded with nothing listening on $closed"
  else
    ok "chart postStart hook fails when nothing listens (after $(elapsed "$t0")s, limit 2 s)"
  fi
  mapfile -t hook < <(hook_command hooks "$port" preStop)
  podman exec "$ctr" "${hook[@]}" >/dev/null 2>&1 && ok "chart preStop hook runs in the image (${hook[*]})" ||
    bad "chart preStop hook failed in the image: ${hook[*]}"
}

# The image against a real redis-server: the checks a pod would depend on.
exercise_image() {
  local rport sport mport ctr=redis-sidecar-ci-$$ code fd t0 secs exit_code pid1 uid size
  rport=$(free_port) sport=$(free_port) mport=$(free_port)
  redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no >"$work/logs/redis.log" 2>&1 &
  local redis_pid=$!
  cleanup_actions+=("kill $redis_pid")
  wait_for 5 redis-cli -p "$rport" ping || { bad "redis-server did not start on 127.0.0.1:$rport"; return 1; }

  cleanup_actions+=("podman rm -f $ctr")
  # As the chart runs it: read-only root, no capabilities, no privilege escalation.
  if ! podman run -d --name "$ctr" --network=host --read-only --cap-drop=ALL \
    --security-opt=no-new-privileges --health-interval=disable \
    -e REDIS_SIDECAR_LISTEN="127.0.0.1:$sport" -e REDIS_SIDECAR_METRICS_LISTEN="127.0.0.1:$mport" \
    -e REDIS_SIDECAR_UPSTREAM="redis://127.0.0.1:$rport" "$image" --log-format=json \
    >"$work/logs/podman-run.log" 2>&1; then
    bad "podman run"
    sed 's/^/         /' "$work/logs/podman-run.log"
    return 1
  fi
  if wait_for 15 bash -c "[[ \$(redis-cli -p $sport ping) == PONG ]]"; then
    ok "PING through the sidecar (127.0.0.1:$sport -> redis-server 127.0.0.1:$rport)"
  else
    bad "no PONG through the sidecar within 15 s; container log:"
    podman logs "$ctr" 2>&1 | tail -n 20 | sed 's/^/         /'
    return 1
  fi
  local key=packaging-ci-$$ value=v-$RANDOM
  [[ $(redis-cli -p "$sport" set "$key" "$value") == OK ]] && ok "SET through the sidecar" || bad "SET through the sidecar"
  [[ $(redis-cli -p "$sport" get "$key") == "$value" ]] && ok "GET through the sidecar" || bad "GET through the sidecar"
  [[ $(redis-cli -p "$rport" get "$key") == "$value" ]] && ok "the value reached redis-server" || bad "the value is not in redis-server"

  uid=$(podman exec "$ctr" id -u 2>&1)
  [[ $uid == 10001 ]] && ok "runs as uid 10001" || bad "runs as uid '$uid', expected 10001"
  pid1=$(podman exec "$ctr" cat /proc/1/cmdline 2>/dev/null | tr '\0' ' ')
  [[ $pid1 == /usr/local/bin/redis-sidecar* ]] && ok "PID 1 is the sidecar ($pid1)" || bad "PID 1 is '$pid1'"

  code=$(http_status "http://127.0.0.1:$mport/healthz")
  [[ $code == 200 ]] && ok "/healthz 200" || bad "/healthz: $(why_status "$code" "127.0.0.1:$mport") (expected 200)"
  code=$(http_status "http://127.0.0.1:$mport/readyz")
  [[ $code == 200 ]] && ok "/readyz 200 with the upstream up: $(head -c 200 "$work/http-body")" ||
    bad "/readyz: $(why_status "$code" "127.0.0.1:$mport") (expected 200 with the upstream up)"
  code=$(http_status "http://127.0.0.1:$mport/metrics")
  if [[ $code == 200 ]] && grep -q '^redis_sidecar_' "$work/http-body"; then
    ok "/metrics 200 with $(grep -c '^redis_sidecar_' "$work/http-body") redis_sidecar_ samples"
    quiet "promtool check metrics" promtool check metrics <"$work/http-body"
  else
    bad "/metrics: $(why_status "$code" "127.0.0.1:$mport") (expected 200 with redis_sidecar_* samples)"
  fi
  if podman healthcheck run "$ctr" >"$work/logs/healthcheck.log" 2>&1; then
    ok "image HEALTHCHECK healthy"
  else
    bad "image HEALTHCHECK: $(tr '\n' ' ' <"$work/logs/healthcheck.log")"
  fi

  # The chart's classic-form lifecycle hooks, run inside the image: postStart returns once the
  # sidecar accepts connections and fails when nothing listens; preStop sleeps.
  check_hooks "$ctr" "$sport"

  # An idle client stays connected during the stop, as an app's connection pool would.
  exec {fd}<>"/dev/tcp/127.0.0.1/$sport"
  t0=$(date +%s.%N)
  podman stop -t 5 "$ctr" >/dev/null 2>&1
  secs=$(elapsed "$t0")
  exec {fd}>&-
  exit_code=$(podman inspect "$ctr" --format '{{.State.ExitCode}}')
  if [[ $exit_code == 0 ]]; then
    ok "podman stop: SIGTERM handled, exit 0 after ${secs}s (SIGKILL would come at 5 s)"
  else
    bad "podman stop: exit code $exit_code after ${secs}s (137: killed, SIGTERM not handled in 5 s)"
    podman logs "$ctr" 2>&1 | tail -n 10 | sed 's/^/         /'
  fi
  notes+=("podman stop took ${secs}s")
}

step_container() {
  local t0 size
  if ! command -v podman >/dev/null || ! command -v buildah >/dev/null || ! command -v mmdebstrap >/dev/null ||
    ! command -v runc >/dev/null; then
    if [[ $(id -u) -ne 0 ]]; then
      skip_container "podman/buildah/runc/mmdebstrap are not installed and this user cannot install them (not root)"
      return
    fi
    if ! need_packages podman buildah runc catatonit mmdebstrap uidmap; then
      skip_container "apt-get could not install podman buildah runc catatonit mmdebstrap uidmap"
      return
    fi
  fi
  mkdir -p "$tools"
  # crun fails on this kernel's hybrid cgroups; runc works. Ulimits podman can set without systemd.
  cat >"$tools/containers.conf" <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
CONF
  export CONTAINERS_CONF=$tools/containers.conf
  if ! podman info >"$work/logs/podman-info.log" 2>&1; then
    skip_container "podman does not work here: $(tail -n 1 "$work/logs/podman-info.log")"
    return
  fi
  if podman image exists docker.io/library/debian:bookworm-slim && podman image exists docker.io/library/debian:bookworm; then
    ok "local bookworm base image present"
  else
    t0=$(date +%s.%N)
    quiet "local bookworm base image (mmdebstrap)" make_base_image
    echo "    ($(elapsed "$t0")s)"
  fi
  t0=$(date +%s.%N)
  if buildah bud --network=host --pull=never --layers --format docker \
    --build-arg BUILD_JOBS="$jobs" \
    --build-arg VERSION="$(sed -n 's/^project(redis-sidecar VERSION \([^ ]*\).*/\1/p' "$root/CMakeLists.txt")" \
    --build-arg REVISION="$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)" \
    --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    -t "$image" -f "$root/Dockerfile" "$root" >"$work/logs/build.log" 2>&1; then
    ok "buildah bud ($(elapsed "$t0")s)"
  else
    bad "buildah bud ($(elapsed "$t0")s):"
    tail -n 30 "$work/logs/build.log" | sed 's/^/         /'
    return 1
  fi
  # Layers of earlier builds that nothing uses any more; the current build cache stays.
  podman image prune -f --filter until=1h >/dev/null 2>&1
  size=$(podman image inspect "$image" --format '{{.Size}}')
  ok "image $image: $((size / 1000000)) MB ($size bytes; base $(($(podman image inspect docker.io/library/debian:bookworm-slim --format '{{.Size}}') / 1000000)) MB)"
  notes+=("image $image is $((size / 1000000)) MB")
  local cfg
  cfg=$(podman image inspect "$image" --format '{{.Config.User}}|{{json .Config.Entrypoint}}|{{json .Config.Env}}|{{index .Config.Labels "org.opencontainers.image.version"}}|{{index .Config.Labels "org.opencontainers.image.base.name"}}|{{if .Config.Healthcheck}}hc{{end}}')
  [[ $cfg == 10001:10001\|* ]] && ok "USER 10001:10001" || bad "image user: ${cfg%%|*}"
  [[ $cfg == *REDIS_SIDECAR_LISTEN=* && $cfg == *REDIS_SIDECAR_METRICS_LISTEN=* ]] && ok "listen addresses in ENV (overridable)" || bad "listen addresses not in ENV"
  [[ $(cut -d'|' -f4 <<<"$cfg") != "" && $(cut -d'|' -f5 <<<"$cfg") == */debian:bookworm-slim ]] &&
    ok "OCI labels (version $(cut -d'|' -f4 <<<"$cfg"), base $(cut -d'|' -f5 <<<"$cfg"))" ||
    bad "OCI labels: version '$(cut -d'|' -f4 <<<"$cfg")', base '$(cut -d'|' -f5 <<<"$cfg")'"
  [[ $cfg == *'|hc' ]] && ok "HEALTHCHECK defined" || bad "no HEALTHCHECK (built without --format docker?)"
  exercise_image
}

