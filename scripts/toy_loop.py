"""The full offline loop on the toy world: a thin wrapper of :mod:`trainer.toy.loop`.

    python scripts/toy_loop.py --workdir runs/toy-loop [--seed 0] [--quick]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.toy.loop import main

if __name__ == "__main__":
    sys.exit(main())
