#!/usr/bin/env bash
# Score examples/batch.json (6 GSM8K questions, R1-style trajectories, client-supplied arm outputs)
# against a running Regime W service and pretty-print the JSON response.
#
#   REGIME_W_API_KEY=... examples/curl.sh                 # service on http://127.0.0.1:8000
#   REGIME_W_URL=https://rw.example.internal REGIME_W_API_KEY=... examples/curl.sh [batch.json]
#
# A service that is busy (429, 503) or whose generation deadline passed (504: it goes on generating
# and caches the arms) is asked again after its Retry-After (else 1, 2, 4 ... s, at most
# REGIME_W_MAX_WAIT_S), and so is one that refused or dropped the connection; at most REGIME_W_RETRIES
# retries (default 5). REGIME_W_URL may list several services, comma-separated: each retry goes to the
# next. Exits non-zero (and prints the service's JSON error body) on any other HTTP error, or when the
# retries are spent.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
IFS=',' read -r -a urls <<<"${REGIME_W_URL:-http://127.0.0.1:8000}"
batch="${1:-${here}/batch.json}"
retries="${REGIME_W_RETRIES:-5}"
max_wait="${REGIME_W_MAX_WAIT_S:-300}"

if [[ -z "${REGIME_W_API_KEY:-}" ]]; then
  echo "error: set REGIME_W_API_KEY to one of the service's API keys" >&2
  exit 2
fi
if [[ ! -r "${batch}" ]]; then
  echo "error: cannot read batch file ${batch}" >&2
  exit 2
fi
if ! [[ "${retries}" =~ ^[0-9]+$ && "${max_wait}" =~ ^[0-9]+$ ]]; then
  echo "error: REGIME_W_RETRIES and REGIME_W_MAX_WAIT_S must be whole numbers" >&2
  exit 2
fi

tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT

# Seconds of a Retry-After header (a number; an HTTP date or none gives the fallback $1).
retry_after() {
  local value
  value="$(tr -d '\r' <"${tmp}/headers" | awk -F': *' 'tolower($1) == "retry-after" {v = $2} END {print v}')"
  if [[ "${value}" =~ ^[0-9]+$ ]]; then echo "${value}"; else echo "$1"; fi
}

attempt=0
while true; do
  url="${urls[$((attempt % ${#urls[@]}))]}"
  url="${url// /}"
  # The key goes through a header file on stdin, not argv, so it does not show up in `ps`.
  set +e
  status="$(curl --silent --show-error \
    --max-time "${REGIME_W_TIMEOUT:-300}" \
    --header @- \
    --header "Content-Type: application/json" \
    --data-binary "@${batch}" \
    --dump-header "${tmp}/headers" --output "${tmp}/body" --write-out '%{http_code}' \
    "${url%/}/v1/score" <<<"Authorization: Bearer ${REGIME_W_API_KEY}")"
  rc=$?
  set -e
  if [[ ${rc} -eq 0 && "${status}" =~ ^2 ]]; then
    python3 -m json.tool <"${tmp}/body"
    exit 0
  fi
  backoff=$((1 << (attempt < 6 ? attempt : 6)))
  case "${rc}:${status}" in
    0:429 | 0:503 | 0:504) pause="$(retry_after "${backoff}")" why="HTTP ${status}" ;;
    7:* | 52:* | 56:*) pause="${backoff}" why="connection failed (curl exit ${rc})" ;;
    0:*)
      echo "error: ${url%/}/v1/score answered HTTP ${status}" >&2
      python3 -m json.tool <"${tmp}/body" 2>/dev/null || cat "${tmp}/body"
      exit 22
      ;;
    *) exit "${rc}" ;;  # curl said why (timeout, bad URL ...)
  esac
  if [[ ${attempt} -ge ${retries} ]]; then
    echo "error: ${url%/}/v1/score: ${why}; giving up after ${retries} retries (REGIME_W_RETRIES)" >&2
    [[ -s "${tmp}/body" ]] && { python3 -m json.tool <"${tmp}/body" 2>/dev/null || cat "${tmp}/body"; }
    exit 22
  fi
  if ((pause > max_wait)); then pause="${max_wait}"; fi
  attempt=$((attempt + 1))
  echo "${url%/}/v1/score: ${why}; retry ${attempt}/${retries} in ${pause} s" >&2
  sleep "${pause}"
done
