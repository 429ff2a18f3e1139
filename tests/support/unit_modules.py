"""Which test modules make the fast inner loop (``python -m pytest -q -m unit -n 2 --dist loadfile``).

``tests/conftest.py`` marks every test of a module in ``UNIT_MODULES`` with ``unit``. A unit module is fast by
measurement: pure functions, tiny models built locally, at most a few short-lived services on loopback (the
service's HTTP behaviour: tests/test_service_http.py, tests/test_service_privacy.py); no training run, no
generation comparison of engines, no outage or restart scenario, no PostgreSQL.
Every other module is in ``OTHER_MODULES`` with the reason; ``tests/test_unit_modules.py`` checks that each
test module is in exactly one of the two, so a new module is classified when it is added.
"""

from __future__ import annotations

#: modules of the inner loop (700 tests, about 1.5 minutes on 2 cores)
UNIT_MODULES: frozenset[str] = frozenset(
    {
        "test_ablation_curves",
        "test_answer_format",
        "test_boundaries",
        "test_bounded_cache",
        "test_distill",
        "test_docs_claims",
        "test_docs_commands",
        "test_fastgen_units",
        "test_grpo_generation",
        "test_long_grpo",
        "test_integrations_core",
        "test_module_map",
        "test_pipeline",
        "test_regime_w_config",
        "test_regime_w_derived",
        "test_regime_w_path_options",
        "test_regime_w_progress",
        "test_regime_w_scorer",
        "test_reward_modes",
        "test_rewards_gold_columns",
        "test_service_http",
        "test_service_privacy",
        "test_service_runtime",
        "test_support_ports",
        "test_toy_problems",
        "test_toy_styles",
        "test_trainer_data",
        "test_trainer_errors",
        "test_trainer_prompts",
        "test_trainer_records",
        "test_unit_modules",
        "test_wire",
    }
)

#: every other module, and why it is not in the inner loop
OTHER_MODULES: dict[str, str] = {
    "test_answer_corpus": "math-verify over the whole answer corpus (about 15 s of one test)",
    "test_arm_store": "PostgreSQL",
    "test_client_extra": "subprocesses importing the client without the training stack",
    "test_compose": "docker compose files and PostgreSQL",
    "test_curl_example": "examples/curl.sh in subprocesses against servers",
    "test_fastgen": "tiny models decoded by fastgen and by transformers, compared (about 2.5 CPU-minutes)",
    "test_fleet": "replicas as processes on one PostgreSQL",
    "test_generation_hf": "the hf backend decoding with both engines (about 2.5 CPU-minutes)",
    "test_generation_openai": "an OpenAI-compatible server as a process",
    "test_get_reward": "a service as a process",
    "test_hostile_text": "a service as a process",
    "test_integrations_openrlhf": "OpenRLHF's loader against a service as a process",
    "test_integrations_verl": "verl's reward loop against a service as a process",
    "test_openapi_fuzz": "schemathesis against two services (about 90 s)",
    "test_publish": "builds the trainer's wheel and sdist and installs them",
    "test_question_index": "a service as a process, restarted",
    "test_real_model": "SmolLM2-135M through every stage",
    "test_reward_client": "services as processes, outages",
    "test_reward_client_fleet": "several services as processes",
    "test_rewards": "a GRPO run against a service as a process",
    "test_rollouts_overlap": "the rollouts stage against a service as a process",
    "test_service_concurrency": "a service and an upstream as processes",
    "test_service_faults": "backends that fail and recover, services as processes",
    "test_service_hardening": "services as processes",
    "test_service_hf": "services as processes, restarted",
    "test_service_kills": "services killed mid-request",
    "test_service_memory": "memory of a live server under load (about 70 s)",
    "test_service_progress": "the toy base continuing trajectory prefixes in a service as a process",
    "test_service_operations": "regime-w-serve as a process: signals, key reload, timeouts",
    "test_toy_ablation": "the toy reward ablation (trains models)",
    "test_toy_base": "builds the toy base (trains a model)",
    "test_toy_determinism": "training runs in subprocesses compared bit for bit",
    "test_toy_learning": "the toy-world learning loop (about 8 minutes)",
    "test_trainer_cli": "regime-w-train in subprocesses",
    "test_trainer_e2e": "every stage through the CLI against a service",
    "test_trainer_eval": "the eval stage, some of it in subprocesses",
    "test_trainer_grpo": "GRPO training runs",
    "test_trainer_prefs": "the prefs stage through the CLI (about 60 s)",
    "test_trainer_resume": "training runs stopped and resumed",
    "test_trainer_rollouts": "the rollouts stage against services",
    "test_trainer_sft_dpo_export": "SFT, DPO and export training runs",
}
