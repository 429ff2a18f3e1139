"""The offline toy world: generated GSM8K-style problems and a tiny base model trained from scratch.

Everything here runs on a CPU in minutes, so the whole product (reward service + every trainer
stage) can be shown and tested without downloading a model or a data set. See docs/toy-world.md.

* :mod:`trainer.toy.problems` — the seeded problem generator (``python3 -m trainer.toy.problems``).
* :mod:`trainer.toy.base` — the toy base model (stage ``toy-base``), cached on disk.
* :mod:`trainer.toy.determinism` — the pinned CPU kernels and the environment of every toy-world process.

The drivers that run the whole loop and the reward ablation through the real CLIs (and start the reward
service) are experiments, not part of this package: ``experiments/`` in the repository.
"""
