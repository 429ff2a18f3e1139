"""Regime W reward service (private): scores math-reasoning trajectories by coherence with prompt arms."""
