# syntax=docker/dockerfile:1
# The open Regime W trainer (QLoRA SFT, rollouts, preferences, DPO, GRPO, eval, export). It holds
# no reward-service code: only trainer/, shared_schemas/, recipes/ and the project metadata are
# copied, and the build fails if `reward_service` is importable. Build from the repository root:
#
#   docker build -f docker/trainer.Dockerfile -t regime-w/trainer .
#
# TORCH_INDEX picks the PyTorch wheel index: `cu124` (default; QLoRA needs a CUDA GPU), `cu126`,
# or `cpu` for the tiny-model demo. TORCH_VERSION pins torch (empty: the index's newest).
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

ARG TORCH_INDEX=cu124
ARG TORCH_VERSION=
ARG APP_UID=10001

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/hf-cache

RUN useradd --uid "${APP_UID}" --create-home --shell /usr/sbin/nologin regimew

# torch first, from the chosen index: a plain `pip install torch` would pick a default build.
RUN pip install --index-url "https://download.pytorch.org/whl/${TORCH_INDEX}" \
        "torch${TORCH_VERSION:+==${TORCH_VERSION}}"

WORKDIR /workspace
COPY pyproject.toml README.md constraints.txt ./
COPY shared_schemas/ shared_schemas/
COPY trainer/ trainer/
COPY recipes/ recipes/
# The root pyproject also declares the service's console scripts; this image has no service code,
# so they are removed, and the build stops if reward_service could be imported.
RUN pip install -c constraints.txt ".[trainer]" \
    && rm -f /usr/local/bin/regime-w-serve /usr/local/bin/regime-w-score \
    && python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('reward_service') is not None)"

RUN mkdir -p /workspace/checkpoints /workspace/data /workspace/runs /hf-cache \
    && chown -R regimew:regimew /workspace/checkpoints /workspace/data /workspace/runs /hf-cache

USER regimew
ENTRYPOINT ["regime-w-train"]
CMD ["--help"]
