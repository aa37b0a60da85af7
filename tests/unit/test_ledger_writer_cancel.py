"""The ledger's writer task ends when cancelled, even as a write completes (no Redis needed)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from router.finance.ledger import Ledger
from router.finance.ledger_types import CostRecord


def _record() -> CostRecord:
    return CostRecord(
        request_id="r1",
        ts=1_700_000_000.0,
        team="t",
        expert="e",
        domain="d",
        input_tokens=1,
        output_tokens=1,
        cost_nano=1,
        baseline_nano=1,
        latency_ms=1.0,
        status=200,
    )


async def test_cancel_landing_as_a_write_finishes_ends_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Port 1: nothing listens; the write below never reaches Redis (it is replaced).
    ledger = Ledger("redis://127.0.0.1:1", tmp_path / "spool.jsonl")
    gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    started = asyncio.Event()

    async def gated_write(batch: object) -> int:
        started.set()
        return await gate

    monkeypatch.setattr(ledger, "_write_batch", gated_write)
    await ledger.record(_record())
    await started.wait()
    writer = ledger._writer
    assert writer is not None
    # The write's result and the cancel arrive in the same loop turn, as at an event loop's
    # shutdown: asyncio.wait_for on 3.11 returned the result and dropped the cancel.
    gate.set_result(1)
    writer.cancel()
    done, _ = await asyncio.wait({writer}, timeout=2.0)
    assert writer in done and writer.cancelled()


async def test_a_cancel_swallowed_inside_a_write_still_ends_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = Ledger("redis://127.0.0.1:1", tmp_path / "spool.jsonl")
    started = asyncio.Event()

    async def swallowing_write(batch: object) -> int:
        started.set()
        with contextlib.suppress(asyncio.CancelledError):  # as a library's cleanup may do
            await asyncio.sleep(30)
        return 1

    monkeypatch.setattr(ledger, "_write_batch", swallowing_write)
    await ledger.record(_record())
    await started.wait()
    writer = ledger._writer
    assert writer is not None
    writer.cancel()
    done, _ = await asyncio.wait({writer}, timeout=2.0)
    assert writer in done and writer.cancelled()
