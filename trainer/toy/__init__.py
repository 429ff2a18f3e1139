"""The offline toy world: generated GSM8K-style problems and a tiny base model trained from scratch.

Everything here runs on a CPU in minutes, so the whole product (reward service + every trainer
stage) can be shown and tested without downloading a model or a data set. See docs/toy-world.md.

* :mod:`trainer.toy.problems` — the seeded problem generator (``python3 -m trainer.toy.problems``).
* :mod:`trainer.toy.base` — the toy base model (stage ``toy-base``), cached on disk.
* :mod:`trainer.toy.loop` — the full offline loop through the real CLIs (``scripts/toy_loop.py`` wraps it).
"""
