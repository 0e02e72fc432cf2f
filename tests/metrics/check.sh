#!/bin/sh
# The metrics contract as Prometheus tools see it (ctest: metrics_promtool):
#  1. a live exposition with every family populated passes `promtool check metrics` (parse + lint);
#  2. metrics/alerts.yml passes `promtool check rules` and its unit tests (alerts_test.yml);
#  3. metrics/dashboard.json is valid JSON, uses the ${DS_PROMETHEUS} variable, and its queries parse;
#  4. every redis_sidecar_* name used by the rules and the dashboard is an exported family.
# Usage: check.sh PATH/TO/metrics_exposition_check SOURCE_DIR
set -eu
check_bin=$1
root=$2

if ! command -v promtool >/dev/null 2>&1; then
  echo "FAIL: promtool not found. Install it (Debian: apt-get install prometheus) to check the" \
       "metrics exposition and the alerting rules." >&2
  exit 1
fi
if ! command -v node >/dev/null 2>&1; then
  echo "FAIL: node not found; it is needed to check metrics/dashboard.json." >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== promtool check metrics (live exposition)"
"$check_bin" > "$work/metrics.txt"
promtool check metrics < "$work/metrics.txt"
grep -c '^redis_sidecar_' "$work/metrics.txt" | sed 's/^/   samples: /'

echo "== promtool check rules metrics/alerts.yml"
promtool check rules "$root/metrics/alerts.yml"
echo "== promtool test rules tests/metrics/alerts_test.yml"
promtool test rules "$root/tests/metrics/alerts_test.yml"

echo "== dashboard structure and queries"
node "$root/tests/metrics/check_dashboard.mjs" "$root/metrics/dashboard.json" > "$work/dashboard_rules.yml"
promtool check rules "$work/dashboard_rules.yml"

echo "== metric names used by the rules and the dashboard"
missing=0
for name in $(grep -oh 'redis_sidecar_[a-z_]*[a-z]' "$root/metrics/alerts.yml" "$root/metrics/dashboard.json" | sort -u); do
  family=${name%_bucket}
  family=${family%_count}
  family=${family%_sum}
  if ! grep -q "^# TYPE $family " "$work/metrics.txt"; then
    echo "FAIL: $name is used but not exported" >&2
    missing=1
  fi
done
[ "$missing" -eq 0 ]
echo "OK"
