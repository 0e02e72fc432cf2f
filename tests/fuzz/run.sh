#!/usr/bin/env bash
# Builds the RESP fuzz targets standalone with clang++-14 (libFuzzer + ASan + UBSan) and runs each for
# N seconds (first argument, default 30). Exits non-zero when a target crashes or fails to build.
#
#   tests/fuzz/run.sh [seconds]        build dir: $FUZZ_BUILD_DIR, default <repo>/build-fuzz
#
# New corpus entries go to the build dir; the seed corpora in tests/fuzz/corpus are only read.
set -euo pipefail

seconds="${1:-30}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "${here}/../.." && pwd)"
out="${FUZZ_BUILD_DIR:-${root}/build-fuzz}"
cxx="${CXX_FUZZ:-clang++-14}"
mkdir -p "${out}"

status=0
for target in request reply; do
  bin="${out}/fuzz_${target}_parser"
  echo "== building ${bin}"
  "${cxx}" -std=c++20 -O1 -g -fno-omit-frame-pointer \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -Wall -Wextra -Wpedantic -Wshadow -Wold-style-cast \
    -I"${root}" "${root}"/proxy/resp/*.cpp "${here}/fuzz_${target}_parser.cpp" -o "${bin}"

  corpus="${out}/corpus/${target}"
  mkdir -p "${corpus}" "${out}/artifacts"
  echo "== running ${bin} for ${seconds}s"
  if ! "${bin}" -max_total_time="${seconds}" -print_final_stats=1 -max_len=4096 \
      -artifact_prefix="${out}/artifacts/${target}-" "${corpus}" "${here}/corpus/${target}"; then
    echo "!! fuzz_${target}_parser failed; reproducer in ${out}/artifacts/" >&2
    status=1
  fi
done
exit "${status}"
