#!/bin/sh
# Start regime-w-serve in the container: listen on all interfaces of the container network, and
# fail early, with a message that says what to fix, when the API-key secret cannot be read.
set -eu

keys_file="${REGIME_W_API_KEYS_FILE:-}"
if [ -n "${keys_file}" ] && [ ! -r "${keys_file}" ]; then
    echo "reward-service: cannot read REGIME_W_API_KEYS_FILE=${keys_file} as uid $(id -u)." >&2
    echo "  Mount the compose secret (secrets/api_keys.txt) and make it readable by this uid;" >&2
    echo "  see secrets/README.md." >&2
    exit 2
fi

exec regime-w-serve --host "${REGIME_W_HOST:-0.0.0.0}" --port "${REGIME_W_PORT:-8000}" "$@"
