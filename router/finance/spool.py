"""The ledger's local spool: records Redis did not take (down, slow, or far behind) wait in a
JSONL file until the ledger replays them. Writing a record twice is harmless (the ledger counts
each request id once), losing one is not.

One spool file is shared by the replicas on a host: appends are single O_APPEND writes of whole
lines, and replay claims the file by an atomic rename, so any replica (or a restarted one)
replays what another left behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from router.finance.ledger_types import CostRecord
from router.finance.redis_server import default_data_dir

log = logging.getLogger(__name__)


class Spool:
    def __init__(self, path: str | Path, on_spool: Callable[[int], None] | None = None) -> None:
        self.path = Path(path)
        self.spooled = 0
        self._on_spool = on_spool  # e.g. Telemetry.observe_spooled
        self._lock = threading.Lock()

    def append(self, recs: Iterable[CostRecord]) -> None:
        lines = "".join(r.to_json() + "\n" for r in recs)
        if not lines:
            return
        try:
            with self._lock:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as f:
                    f.write(lines)
            self.spooled += lines.count("\n")
            if self._on_spool is not None:
                with contextlib.suppress(Exception):
                    self._on_spool(lines.count("\n"))
        except OSError:
            log.exception("ledger: spool write failed; %d record(s) lost", lines.count("\n"))

    def claim(self) -> list[Path]:
        """Move the live spool aside so new failures append to a fresh file meanwhile."""
        with self._lock:
            if self.path.exists():
                target = self.path.with_name(
                    f"{self.path.name}.replay-{os.getpid()}-{time.time_ns()}"
                )
                os.replace(self.path, target)
        return sorted(self.path.parent.glob(f"{self.path.name}.replay-*"))

    def pending(self) -> bool:
        if self.path.exists():
            return True
        parent = self.path.parent
        return parent.exists() and any(parent.glob(f"{self.path.name}.replay-*"))


def read_spool(path: Path) -> list[CostRecord]:
    recs: list[CostRecord] = []
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return recs
    for i, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        try:
            recs.append(CostRecord.from_json(line))
        except (ValueError, TypeError, KeyError):
            # A torn last line after a crash; the rest is still good.
            log.warning("ledger: skipping unreadable spool line %d in %s", i + 1, path)
    return recs


def spool_path(data_dir: str | None = None, redis_url: str | None = None) -> str:
    """The spool file for a ledger: one per Redis, so two gateways on a host with different
    ledgers never replay each other's records."""
    base = (
        data_dir
        or os.environ.get("SLM_ROUTER_SPOOL_DIR")
        or str(default_data_dir().parent / "spool")
    )
    os.makedirs(base, exist_ok=True)
    if not redis_url:
        return os.path.join(base, "ledger.jsonl")
    digest = hashlib.sha256(redis_url.encode()).hexdigest()[:12]  # no credentials in names
    return os.path.join(base, f"ledger-{digest}.jsonl")
