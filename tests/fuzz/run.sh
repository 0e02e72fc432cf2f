#!/usr/bin/env bash
# Builds the fuzz targets standalone with clang++-14 (libFuzzer + ASan + UBSan) and runs each for
# N seconds (first argument, default 30). Exits non-zero when a target crashes or fails to build.
#
#   tests/fuzz/run.sh [seconds]        build dir: $FUZZ_BUILD_DIR, default <repo>/build-fuzz
#   FUZZ_TARGETS="fuzz_cache" tests/fuzz/run.sh 60      only the named targets
#
# New corpus entries go to the build dir; the seed corpora in tests/fuzz/corpus are only read.
set -euo pipefail

seconds="${1:-30}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "${here}/../.." && pwd)"
out="${FUZZ_BUILD_DIR:-${root}/build-fuzz}"
cxx="${CXX_FUZZ:-clang++-14}"
mkdir -p "${out}"

# Each target: its name (fuzz_<name>.cpp), its seed corpus (tests/fuzz/corpus/<dir>), the
# directories and files (comma-separated) whose code it is built with (a directory: all its *.cpp), so
# the code under test carries the coverage instrumentation, and the libraries it links, if any.
targets=(
  "request_parser request proxy/resp,proxy/commands"
  "reply_parser reply proxy/resp"
  "cache cache cache"
  "tier tier cache,proxy/resp,proxy/commands,proxy/tier/cache_tier.cpp,proxy/tier/write_fence.cpp"
  "url url proxy/config/url.cpp -lboost_url"
  "connect connect proxy/upstream/connect_fsm.cpp,proxy/resp,proxy/commands,proxy/config/url.cpp -lboost_url"
)
wanted="${FUZZ_TARGETS:-}"

status=0
for spec in "${targets[@]}"; do
  read -r name corpus_name sources libs <<<"${spec}"
  if [[ -n "${wanted}" && " ${wanted} " != *" fuzz_${name} "* ]]; then continue; fi
  bin="${out}/fuzz_${name}"
  echo "== building ${bin}"
  "${cxx}" -std=c++20 -O1 -g -fno-omit-frame-pointer \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -Wall -Wextra -Wpedantic -Wshadow -Wold-style-cast \
    -I"${root}" $(for src in ${sources//,/ }; do
      if [[ -d "${root}/${src}" ]]; then echo "${root}/${src}"/*.cpp; else echo "${root}/${src}"; fi
    done) \
    "${here}/fuzz_${name}.cpp" ${libs:-} -o "${bin}"

  corpus="${out}/corpus/${corpus_name}"
  mkdir -p "${corpus}" "${out}/artifacts"
  echo "== running ${bin} for ${seconds}s"
  if ! "${bin}" -max_total_time="${seconds}" -print_final_stats=1 -max_len=4096 \
      -artifact_prefix="${out}/artifacts/${corpus_name}-" "${corpus}" "${here}/corpus/${corpus_name}"; then
    echo "!! fuzz_${name} failed; reproducer in ${out}/artifacts/" >&2
    status=1
  fi
done
exit "${status}"
