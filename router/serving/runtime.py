"""Starting or joining Ray so that it touches loopback only."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

# Offline and private by default: no usage stats, no cloud-metadata probes, no hub or cost-map
# downloads. setdefault, so an operator can still opt in explicitly.
AIRGAP_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_DISABLE_DOCKER_CPU_WARNING": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_TELEMETRY": "False",
    "TOKENIZERS_PARALLELISM": "false",
    "DO_NOT_TRACK": "1",
}

_BOOTSTRAP = "provider:\n  type: local\n"


def apply_airgap_env() -> None:
    for key, value in AIRGAP_ENV.items():
        os.environ.setdefault(key, value)
    # Ray's C++ failure-signal handler (absl) in the driver catches SIGTERM, dumps a stack and
    # re-raises it with the default action, killing the CLI before it stops Serve and the embedded
    # Redis (issue 14.1); the CLI handles SIGTERM itself (serving/signals.py); read at `import ray`.
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    # Without a local provider file Ray's cluster utilities probe the cloud metadata address.
    bootstrap = Path.home() / "ray_bootstrap_config.yaml"
    if not bootstrap.exists():
        with contextlib.suppress(OSError):  # a read-only home: Ray still works, just noisier
            bootstrap.write_text(_BOOTSTRAP)


def worker_env() -> dict[str, str]:
    return {k: os.environ.get(k, v) for k, v in AIRGAP_ENV.items()}


def start_ray(num_cpus: int | None = None) -> bool:
    """Join RAY_ADDRESS when set, else start a local Ray on loopback. True if we started it."""
    apply_airgap_env()
    import ray

    if ray.is_initialized():
        return False
    runtime_env: dict[str, Any] = {"env_vars": worker_env()}
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, runtime_env=runtime_env, logging_level=logging.WARNING)
        return False
    ray.init(
        num_cpus=num_cpus or max(os.cpu_count() or 1, 2),
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        _node_ip_address="127.0.0.1",
        runtime_env=runtime_env,
        logging_level=logging.WARNING,
        log_to_driver=True,
    )
    return True
