import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest

from tests.support.flaky_server import flaky_server, srv  # noqa: F401 - shared fixtures (tests/support)
from tests.support.servers import live_service, service_spec  # noqa: F401 - shared fixtures (tests/support)
from tests.support.tiny_model import build_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny Llama + tokenizer (with a chat template) built locally once per test session."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The ``unit`` marker on every test of a module in ``tests/support/unit_modules.py``'s ``UNIT_MODULES``:
    the inner loop, ``python -m pytest -q -m unit -n 2 --dist loadfile``."""
    from tests.support.unit_modules import UNIT_MODULES

    for item in items:
        if item.path.stem in UNIT_MODULES:
            item.add_marker(pytest.mark.unit)
