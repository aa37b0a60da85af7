#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite: unit, integration (real Ray Serve, real
# Redis) and the slow real-model tests. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
SLM_ROUTER_SETUP_BROWSER=1 bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 LITELLM_LOCAL_MODEL_COST_MAP=True
export RAY_USAGE_STATS_ENABLED=0 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest -q -ra -p no:cacheprovider "$@"
