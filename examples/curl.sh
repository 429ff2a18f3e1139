#!/usr/bin/env bash
# Score examples/batch.json (6 GSM8K questions, R1-style trajectories, client-supplied arm outputs)
# against a running Regime W service and pretty-print the JSON response.
#
#   REGIME_W_API_KEY=... examples/curl.sh                 # service on http://127.0.0.1:8000
#   REGIME_W_URL=https://rw.example.internal REGIME_W_API_KEY=... examples/curl.sh [batch.json]
#
# Exits non-zero (and prints the service's JSON error body) on any HTTP error.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
url="${REGIME_W_URL:-http://127.0.0.1:8000}"
batch="${1:-${here}/batch.json}"

if [[ -z "${REGIME_W_API_KEY:-}" ]]; then
  echo "error: set REGIME_W_API_KEY to one of the service's API keys" >&2
  exit 2
fi
if [[ ! -r "${batch}" ]]; then
  echo "error: cannot read batch file ${batch}" >&2
  exit 2
fi

# The key goes through a header file on stdin, not argv, so it does not show up in `ps`.
curl --silent --show-error --fail-with-body \
  --max-time "${REGIME_W_TIMEOUT:-300}" \
  --header @- \
  --header "Content-Type: application/json" \
  --data-binary "@${batch}" \
  "${url%/}/v1/score" <<<"Authorization: Bearer ${REGIME_W_API_KEY}" \
  | python3 -m json.tool
