"""HTTP routers of the reward service."""
