#!/usr/bin/env bash
# Headless Locust run against a running relay; CSVs land in ${OUT:-out}/load_*.csv (Locust's
# statistics: real requests only) and ${OUT:-out}/load_requests.csv (one row per request with
# the relay's figures: time to first text, switches, tokens and prefill per tier).
#   loadtest/run_headless.sh [users] [duration] [policy-mix]
set -euo pipefail
cd "$(dirname "$0")/.."
USERS=${1:-8}
DURATION=${2:-60s}
MIX=${3:-"small-only:3,rstitch:1"}
OUT=${OUT:-out}
mkdir -p "$OUT"
exec .venv/bin/locust -f loadtest/locustfile.py --headless -u "$USERS" -r "$USERS" -t "$DURATION" \
  --host "${HOST:-127.0.0.1:9000}" --policy-mix "$MIX" --max-new-tokens "${MAX_NEW_TOKENS:-64}" \
  --csv "$OUT/load" --requests-csv "$OUT/load_requests.csv" --only-summary --stop-timeout 30
