import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One OpenMP / MKL thread per process (this process, xdist's workers and every stage, service and server they
# start inherit it), set before anything imports torch. The suite runs two workers on two cores; torch's default
# of one thread per core put 4+ busy threads on 2 cores, and waiting threads of a parallel region made the CPU
# stages many times slower: the real-model eval stage (4 models, SmolLM2-135M) took 316 s on 2 threads and 41 s
# on 1 beside the same load, with the same predictions. Set these variables to override.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest

from tests.support.flaky_server import flaky_server, srv  # noqa: F401 - shared fixtures (tests/support)
from tests.support.servers import live_service, service_spec  # noqa: F401 - shared fixtures (tests/support)
from tests.support.tiny_model import build_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny Llama + tokenizer (with a chat template) built locally once per test session."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


def pytest_configure(config: pytest.Config) -> None:
    """Keep the file order of ``pytest_collection_modifyitems`` under ``-n 2 --dist loadfile``: pytest-xdist
    would otherwise sort the files by their number of tests (tests/support/schedule.py)."""
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist loaded
        config.option.loadscopereorder = False


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The ``unit`` marker on every test of a module in ``tests/support/unit_modules.py``'s ``UNIT_MODULES``:
    the inner loop, ``python -m pytest -q -m unit -n 2 --dist loadfile``. Then the longest files first
    (``tests/support/schedule.py``): with two workers, each starts one of them and the rest fill in around them."""
    from tests.support.schedule import longest_first
    from tests.support.unit_modules import UNIT_MODULES

    for item in items:
        if item.path.stem in UNIT_MODULES:
            item.add_marker(pytest.mark.unit)
    items[:] = longest_first(items, lambda item: item.path.stem)
