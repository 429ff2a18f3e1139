"""The full offline loop on the toy world: a thin wrapper of :mod:`experiments.toy_loop`.

    python scripts/toy_loop.py --workdir runs/toy-loop [--seed 0] [--quick]
    python scripts/toy_loop.py --ablation --workdir runs/ablation [--seeds 0 1 2] [--rewards ...] [--jobs N] \
        [--recipes recipes/toy] [--report docs/reward-ablation.md]      # the reward x seed matrix
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.toy_loop import main

if __name__ == "__main__":
    if "--ablation" in sys.argv[1:]:
        from experiments.ablation import main as ablation_main

        sys.exit(ablation_main([a for a in sys.argv[1:] if a != "--ablation"]))
    sys.exit(main())
