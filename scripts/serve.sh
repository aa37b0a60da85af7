#!/usr/bin/env bash
# Set up (idempotent) and run the gateway on the embedded default: local Ray, local Redis,
# policies/default.yaml, http://127.0.0.1:8000/v1. Extra args go to `slm-router serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 LITELLM_LOCAL_MODEL_COST_MAP=True RAY_USAGE_STATS_ENABLED=0
exec .venv/bin/slm-router serve "$@"
