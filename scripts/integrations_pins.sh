#!/usr/bin/env bash
# Run the verl / OpenRLHF integration tests under each framework's OWN transformers pin, not the
# project's (the main .venv has what the trainer needs; verl 0.9.1 requires transformers>=5.5.3,<5.11,
# !=5.6.0 and OpenRLHF 0.11.2 transformers==5.15.0).
#
#   scripts/integrations_pins.sh [verl] [openrlhf]      # both by default
#
# Each framework gets a small environment under .venv/pins/<framework>: a venv holding only the pinned
# transformers (and whatever pip needs to change beside it), which sees the main .venv's packages
# AFTER its own (a .pth file), so torch, verl, OpenRLHF and this project are not installed twice.
# The first run downloads the pinned transformers from the package index; later runs reuse it.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
base="${root}/.venv/bin/python"
if [[ ! -x "${base}" ]]; then
  echo "error: ${root}/.venv is missing: run scripts/bootstrap.sh first" >&2
  exit 2
fi
base_site="$("${base}" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"

pin_of() {
  case "$1" in
    verl) echo 'transformers>=5.5.3,<5.11,!=5.6.0' ;;
    openrlhf) echo 'transformers==5.15.0' ;;
    *) echo "error: unknown framework $1 (verl, openrlhf)" >&2; exit 2 ;;
  esac
}

status=0
for framework in "${@:-verl openrlhf}"; do
  for fw in ${framework}; do
    pin="$(pin_of "${fw}")"
    env="${root}/.venv/pins/${fw}"
    if [[ ! -x "${env}/bin/python" ]]; then
      "${base}" -m venv --without-pip "${env}"
    fi
    site="$("${env}/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    # the main environment's packages come after this one's own (its .pth files processed too)
    printf 'import site; site.addsitedir(%s)\n' "'${base_site}'" >"${site}/zz_regime_w_main_venv.pth"
    start=$(date +%s)
    "${env}/bin/python" -m pip install --quiet --disable-pip-version-check "${pin}"
    echo "${fw}: ${pin} ready in $(($(date +%s) - start)) s"
    "${env}/bin/python" - "${pin}" <<'PY'
import sys, importlib.metadata as md
from packaging.requirements import Requirement
import transformers
req = Requirement(sys.argv[1])
assert req.specifier.contains(transformers.__version__), (transformers.__version__, str(req))
print(f"transformers {transformers.__version__} from {transformers.__file__}")
PY
    tests="tests/test_integrations_${fw}.py"
    (cd "${root}" && HF_HUB_OFFLINE=1 "${env}/bin/python" -m pytest -q -p no:randomly -n 0 -m integrations "${tests}") || status=1
  done
done
exit "${status}"
