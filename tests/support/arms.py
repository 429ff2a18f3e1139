"""The eight Regime W arms of DESIGN §3, written out once for every test that names them.

Hand-written from the design, not read from ``reward_service``: tests compare the service's config, wire
schema and ``/v1/info`` against this table (tests/test_regime_w_config.py checks the default config is it).
"""

from __future__ import annotations

#: DESIGN §3's table, in its order: arm -> (family, style, temperature)
DESIGN_ARMS: dict[str, tuple[str, str, float]] = {
    "cot_greedy": ("compute", "step by step", 0.0),
    "cot_sampled": ("compute", "step by step", 0.7),
    "equations_first": ("compute", "write the equations, then compute", 0.5),
    "arithmetic_trace": ("compute", "one `expr = value` per line", 0.3),
    "solve_then_verify": ("reflective", "solve, then substitute back to check", 0.6),
    "work_backwards": ("reflective", "check the candidate answer backwards", 0.7),
    "critique_and_revise": ("reflective", "draft, critique, revise", 0.8),
    "teach_and_check": ("reflective", "explain to a student, double-check each step", 1.0),
}

#: the arm names in DESIGN's order (the order of ``/v1/info``'s ``arms`` and of the wire schema's enum)
ARMS: list[str] = list(DESIGN_ARMS)
