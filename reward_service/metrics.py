"""Prometheus metrics of one service instance (its own registry, so several apps can coexist)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("regime_w_requests", "HTTP requests", ["route", "status"], registry=r)
        self.request_seconds = Histogram(
            "regime_w_request_seconds",
            "request latency",
            ["route"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )
        self.trajectories = Counter("regime_w_trajectories_scored", "trajectories scored", registry=r)
        self.items = Counter("regime_w_items_scored", "questions scored", registry=r)
        self.arm_cache_hits = Counter("regime_w_arm_cache_hits", "arm cache hits", ["layer"], registry=r)
        self.arm_cache_misses = Counter("regime_w_arm_cache_misses", "questions whose arms were not cached", registry=r)
        self.arm_inflight_joins = Counter(
            "regime_w_arm_inflight_joins", "requests that joined a generation already in flight", registry=r
        )
        self.arm_question_matches = Counter(
            "regime_w_arm_question_matches",
            "questions not cached as sent whose arms were looked up under a known question: how=exact (the same "
            "once whitespace is normalized), how=contained (a known question inside the text, e.g. a chat "
            "template or known instruction scaffolding around it; anything else around it is not resolved)",
            ["how"],
            registry=r,
        )
        self.arm_questions_indexed = Gauge(
            "regime_w_arm_questions_indexed", "known questions findable inside wrapped prompts", registry=r
        )
        self.arm_questions_not_indexed = Gauge(
            "regime_w_arm_questions_not_indexed",
            "known questions left out of the index by its bounds (still served when sent exactly)",
            registry=r,
        )
        self.arm_generations = Counter("regime_w_arm_generations", "arm texts generated", registry=r)
        self.generation_failures = Counter("regime_w_generation_failures", "failed generation batches", registry=r)
        self.generation_seconds = Histogram(
            "regime_w_generation_seconds",
            "seconds per generation batch",
            registry=r,
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
        )
        self.progress_continuations = Counter(
            "regime_w_progress_continuations",
            "continuations of trajectory prefixes for the [progress] scorer: cached=false generated, "
            "cached=true reused (from the cache or an earlier trajectory of the same request)",
            ["cached"],
            registry=r,
        )
        self.progress_seconds = Histogram(
            "regime_w_progress_seconds",
            "seconds of continuation generation per trajectory scored with the [progress] scorer",
            registry=r,
            buckets=(0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self.inflight = Gauge("regime_w_inflight_requests", "requests being served", registry=r)
        self.ready = Gauge("regime_w_ready", "1 when the model is loaded", registry=r)
        self.queue_depth = Gauge(
            "regime_w_generation_queue_depth", "questions waiting for (or in) arm generation", registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
