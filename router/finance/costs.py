"""Pure cost arithmetic, in integer nano-USD so that sums over millions of requests stay exact.

A price per 1M tokens of $0.0375 is 37.5 nano-USD per token: micro-USD would round a cheap
request to zero, nano-USD keeps sub-cent requests honest, and a signed 64-bit Redis counter still
holds $9.2 billion. Each request's cost is rounded once (half-even) to a whole nano-USD; totals
are sums of those integers, so they never drift.

Prices arrive as anything shaped like `experts.spec.PriceSpec` (three float attributes); floats
are read through `str()` so that 0.15 means 0.15, not its binary neighbour.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Protocol

NANO_PER_USD = 10**9
_TOKENS_PER_PRICE_UNIT = Decimal(1_000_000)
_SECONDS_PER_HOUR = Decimal(3600)


class TokenPrice(Protocol):
    """USD per 1M input/output tokens (policies.simulate.PriceInfo has the same shape)."""

    @property
    def input_per_1m(self) -> float: ...

    @property
    def output_per_1m(self) -> float: ...


class PriceLike(TokenPrice, Protocol):
    """Token prices and USD per replica-hour (0 where it does not apply)."""

    @property
    def per_replica_hour(self) -> float: ...


@dataclass(frozen=True)
class Price:
    """A PriceLike for callers that do not have an ExpertSpec at hand (tests, CLI)."""

    input_per_1m: float = 0.0
    output_per_1m: float = 0.0
    per_replica_hour: float = 0.0


FREE = Price()


class Amounts:
    """USD views of integer `cost_nano` / `baseline_nano` fields, for the dataclasses that
    carry them (one request's Cost, a ledger record, a row of totals)."""

    cost_nano: int
    baseline_nano: int

    @property
    def savings_nano(self) -> int:
        return self.baseline_nano - self.cost_nano

    @property
    def cost_usd(self) -> Decimal:
        return nano_to_usd(self.cost_nano)

    @property
    def baseline_usd(self) -> Decimal:
        return nano_to_usd(self.baseline_nano)

    @property
    def savings_usd(self) -> Decimal:
        return nano_to_usd(self.savings_nano)


@dataclass(frozen=True)
class Cost(Amounts):
    """One request's cost and what the baseline expert would have charged, in nano-USD."""

    cost_nano: int
    baseline_nano: int


def _dec(value: float | int | str | Decimal) -> Decimal:
    if isinstance(value, Decimal):
        return value
    return Decimal(str(value))


def _round_nano(usd: Decimal) -> int:
    return int((usd * NANO_PER_USD).to_integral_value(rounding=ROUND_HALF_EVEN))


def usd_to_nano(usd: float | int | str | Decimal) -> int:
    return _round_nano(_dec(usd))


def nano_to_usd(nano: int) -> Decimal:
    return Decimal(nano) / NANO_PER_USD


def token_cost_usd(price: TokenPrice, input_tokens: int, output_tokens: int) -> Decimal:
    """The one price formula: the gateway's ledger and `policy simulate` both use it."""
    if input_tokens < 0 or output_tokens < 0:
        raise ValueError("token counts must be >= 0")
    return (
        _dec(price.input_per_1m) * input_tokens + _dec(price.output_per_1m) * output_tokens
    ) / _TOKENS_PER_PRICE_UNIT


def replica_time_cost_usd(price: PriceLike, busy_seconds: float) -> Decimal:
    """Self-hosted experts: the share of a replica-hour this request kept the replica busy."""
    if busy_seconds < 0:
        raise ValueError("busy_seconds must be >= 0")
    return _dec(price.per_replica_hour) * _dec(busy_seconds) / _SECONDS_PER_HOUR


def price_nano(
    price: PriceLike, input_tokens: int, output_tokens: int, busy_seconds: float = 0.0
) -> int:
    """Tokens and replica time priced together (an expert may have both), rounded once."""
    usd = token_cost_usd(price, input_tokens, output_tokens)
    usd += replica_time_cost_usd(price, busy_seconds)
    return _round_nano(usd)


def request_cost(
    price: PriceLike,
    baseline: PriceLike | None,
    input_tokens: int,
    output_tokens: int,
    busy_seconds: float = 0.0,
) -> Cost:
    """The request's cost and its baseline: the same tokens and busy time on the baseline expert.

    Using the same busy time for the baseline is an approximation (a larger reference model would
    be slower); it errs towards understating savings for self-hosted baselines.
    """
    cost = price_nano(price, input_tokens, output_tokens, busy_seconds)
    if baseline is None:
        return Cost(cost_nano=cost, baseline_nano=cost)
    return Cost(cost, price_nano(baseline, input_tokens, output_tokens, busy_seconds))


def estimate_nano(
    price: PriceLike, input_tokens: int, max_output_tokens: int, busy_seconds: float = 0.0
) -> int:
    """An estimate for budget reservations, before the call.

    Replica time is unknown before the call: pass a guess (e.g. the expert's recent p95) or 0,
    in which case self-hosted experts reserve nothing and settle their real cost afterwards.
    """
    return price_nano(price, input_tokens, max_output_tokens, busy_seconds)
