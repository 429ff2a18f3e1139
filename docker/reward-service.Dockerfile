# syntax=docker/dockerfile:1
# The private Regime W reward service (FastAPI). Build from the repository root:
#
#   docker build -f docker/reward-service.Dockerfile -t regime-w/reward-service .
#
# TORCH_INDEX picks the PyTorch wheel index: `cpu` (default: with the `openai` backend the arm model
# runs in the vLLM container and this image needs no GPU) or `cu124` / `cu126` for the in-process
# `hf` backend on a GPU. TORCH_VERSION pins torch (empty: the index's newest).
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

ARG TORCH_INDEX=cpu
ARG TORCH_VERSION=
ARG APP_UID=10001

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --uid "${APP_UID}" --create-home --shell /usr/sbin/nologin regimew

# torch first, from the chosen index: a plain `pip install torch` would pull the CUDA build.
RUN pip install --index-url "https://download.pytorch.org/whl/${TORCH_INDEX}" \
        "torch${TORCH_VERSION:+==${TORCH_VERSION}}"

WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY shared_schemas/ shared_schemas/
COPY reward_service/ reward_service/
RUN pip install -c constraints.txt ".[service]"

COPY docker/reward-service-entrypoint.sh /usr/local/bin/reward-service-entrypoint
RUN chmod 0755 /usr/local/bin/reward-service-entrypoint \
    && mkdir -p /cache \
    && chown regimew:regimew /cache

# /cache holds the persistent SQLite arm cache (REGIME_W_CACHE_PATH); mount a volume there.
VOLUME ["/cache"]
USER regimew
EXPOSE 8000
ENTRYPOINT ["/usr/local/bin/reward-service-entrypoint"]
CMD []
