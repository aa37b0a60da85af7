"""The ledger's value types: one request's record and one row of aggregated totals."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, date, datetime
from typing import Any, Literal

from router.finance.costs import Amounts

Dimension = Literal["team", "expert", "domain", "day"]
DIMENSIONS: tuple[Dimension, ...] = ("day", "team", "expert", "domain")
METRICS = (
    "requests",
    "errors",
    "input_tokens",
    "output_tokens",
    "cost_nano",
    "baseline_nano",
    "latency_us",
)


def parse_dims(group_by: str | Sequence[str]) -> tuple[str, ...]:
    """ "team" or "day,team" (or a sequence) -> validated dimension names, or ValueError."""
    parts = group_by.split(",") if isinstance(group_by, str) else list(group_by)
    dims = tuple(p.strip() for p in parts if p.strip())
    if not dims or any(d not in DIMENSIONS for d in dims):
        raise ValueError(f"group_by must be among {', '.join(DIMENSIONS)}; got {group_by!r}")
    return dims


def day_of(ts: float) -> str:
    """UTC day of a timestamp: a record replayed days later still lands on its own day."""
    return datetime.fromtimestamp(ts, UTC).date().isoformat()


def day_score(day: str | date) -> int:
    d = day if isinstance(day, date) else date.fromisoformat(day)
    return d.year * 10000 + d.month * 100 + d.day


@dataclass(frozen=True)
class CostRecord(Amounts):
    """One request, as the ledger stores it. Costs are integer nano-USD (router.finance.costs)."""

    request_id: str
    ts: float
    team: str
    expert: str
    domain: str
    input_tokens: int = 0
    output_tokens: int = 0
    cost_nano: int = 0
    baseline_nano: int = 0
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    status: int = 200
    error_type: str = ""
    key_id: str = ""
    model: str = ""
    route_reason: str = ""

    def __post_init__(self) -> None:
        if not self.request_id:
            raise ValueError("request_id must not be empty")
        for name in ("input_tokens", "output_tokens", "cost_nano", "baseline_nano"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")

    @property
    def day(self) -> str:
        return day_of(self.ts)

    @property
    def is_error(self) -> bool:
        return self.status >= 400

    @property
    def latency_us(self) -> int:
        return round(self.latency_ms * 1000)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> CostRecord:
        return cls.from_mapping(json.loads(line))

    def to_hash(self) -> dict[str, str]:
        """Flat strings for a Redis hash; None becomes ''."""
        return {k: "" if v is None else str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> CostRecord:
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data:
                continue
            raw = data[f.name]
            kwargs[f.name] = _coerce(f.name, raw)
        return cls(**kwargs)


_INTS = {"input_tokens", "output_tokens", "cost_nano", "baseline_nano", "status"}
_FLOATS = {"ts", "latency_ms"}


def _coerce(name: str, raw: Any) -> Any:
    if name in _INTS:
        return int(raw)
    if name in _FLOATS:
        return float(raw)
    if name == "ttft_ms":
        return None if raw in (None, "") else float(raw)
    return str(raw)


@dataclass(frozen=True)
class TotalsRow(Amounts):
    """Sums over the requests of one group (e.g. one team, or one day and team)."""

    group: tuple[str, ...]
    requests: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_nano: int = 0
    baseline_nano: int = 0
    latency_us: int = 0
    dims: tuple[str, ...] = field(default=(), compare=False)

    @property
    def key(self) -> str:
        return "/".join(self.group)

    @property
    def mean_latency_ms(self) -> float:
        return self.latency_us / 1000 / self.requests if self.requests else 0.0
