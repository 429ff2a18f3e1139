"""Experiment drivers of the toy world, run from a checkout of the repository (never published).

They start the private reward service as a subprocess and read the toy recipes and the toy scorer
config from the checkout, so they live outside the published trainer wheel
(``scripts/build-trainer-dist`` ships ``trainer``, ``shared_schemas`` and ``fastgen`` only); they reach the
service over HTTP and never import ``reward_service``. The toy world's data and model code they drive stays
in :mod:`trainer.toy` (the ``toy-base`` stage and the tests need it). See docs/toy-world.md.

* :mod:`experiments.toy_loop` — the full offline loop through the real CLIs (``scripts/toy_loop.py`` wraps it).
* :mod:`experiments.ablation` — the reward × seed matrix and its report (``scripts/toy_loop.py --ablation``).
"""
