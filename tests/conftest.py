"""Shared test set-up: offline, loopback-only, and small."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = ["tests.conftest_redis"]


def _dump_asyncio_tasks(signum: int, frame: object) -> None:
    """`kill -USR1 <pytest pid>`: print every task of the running loop with its await stack.

    A hung async teardown shows only `epoll_wait` in a thread dump; this shows which task it is
    waiting for and where that task is parked."""
    import asyncio
    import sys

    loop = asyncio._get_running_loop()
    if loop is None:
        print("[tasks] no running loop in the main thread", file=sys.stderr, flush=True)
        return
    for task in asyncio.all_tasks(loop):
        waiter = getattr(task, "_fut_waiter", None)
        where = getattr(waiter, "_loop", None)
        print(
            f"[tasks] {task!r} cancelling={task.cancelling()} "
            f"waiter_loop_is_running_loop={where is loop}",
            file=sys.stderr,
            flush=True,
        )
        task.print_stack(file=sys.stderr)


def pytest_configure(config: object) -> None:
    import signal

    signal.signal(signal.SIGUSR1, _dump_asyncio_tasks)
