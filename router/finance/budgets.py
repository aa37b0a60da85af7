"""Admission control in Redis: rate limits (rpm/tpm per key) and team budgets (reserve, settle).

`admit` runs one Lua script: it checks the key's sliding-window rate limits, releases stale
reservations, and admits while the team's spent + reserved is still under its budget, reserving
the request's estimate. `settle` swaps the reservation for the real cost. Because both happen
atomically in Redis, concurrent requests from any number of replicas see each other's
reservations: once the budget is covered nobody else gets in, so the overshoot is at most the
last admitted request's cost (exactly that much only if its real cost exceeds its estimate).

Rate windows use Redis' clock (TIME) so replicas on different hosts agree; the limit is the
usual two-window approximation of a sliding minute (previous minute weighted by how much of it
still overlaps the last 60 s, plus the current minute).

Layout (prefix `slm`):
  {p}:spend:{team}:{period_id}        hash: spent, reserved (nano-USD)
  {p}:spend:{team}:{period_id}:res    hash: reservation id -> estimate
  {p}:spend:{team}:{period_id}:exp    zset: reservation id -> expiry (crashed holders)
  {p}:rl:{key_id}:{minute}            hash: r (requests), t (tokens)
  {p}:settled:{reservation id}        guard so that a retried settle counts once
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from router.errors import AccessUnavailable, BudgetExceeded, RateLimited
from router.finance.costs import nano_to_usd
from router.finance.keys import KeyInfo, Period

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)

_ADMIT_LUA = """
local tm = redis.call('TIME')
local now = tonumber(tm[1]) + tonumber(tm[2]) / 1000000
local win = math.floor(now / 60)
local elapsed = now - win * 60
local w = (60 - elapsed) / 60
local est_tok = tonumber(ARGV[2])
local rpm, tpm = tonumber(ARGV[3]), tonumber(ARGV[4])
local cur_k = KEYS[3] .. ':' .. win
local prev_k = KEYS[3] .. ':' .. (win - 1)
local function num(k, f) return tonumber(redis.call('HGET', k, f) or '0') end
local function wait(prev, cur, need, limit)
  if cur + need > limit or prev <= 0 then return 60 - elapsed end
  return math.max(60 - 60 * (limit - cur - need) / prev - elapsed, 0.001)
end
if rpm > 0 then
  local p, c = num(prev_k, 'r'), num(cur_k, 'r')
  if p * w + c + 1 > rpm then return {1, tostring(wait(p, c, 1, rpm)), 'rpm'} end
end
if tpm > 0 then
  local p, c = num(prev_k, 't'), num(cur_k, 't')
  local used = p * w + c
  if used > 0 and used + est_tok > tpm then
    return {1, tostring(wait(p, c, math.min(est_tok, tpm), tpm)), 'tpm'}
  end
end
local period = redis.call('HGET', KEYS[1], 'period')
if not period then period = 'month' end
local pid = ARGV[8]
if period == 'day' then pid = ARGV[7] end
local bk = KEYS[2] .. ':' .. pid
local rk, ek = bk .. ':res', bk .. ':exp'
for _, id in ipairs(redis.call('ZRANGEBYSCORE', ek, '-inf', now)) do
  local e = redis.call('HGET', rk, id)
  if e then
    if e ~= '0' then redis.call('HINCRBY', bk, 'reserved', '-' .. e) end
    redis.call('HDEL', rk, id)
  end
  redis.call('ZREM', ek, id)
end
local budget = redis.call('HGET', KEYS[1], 'budget_nano')
if budget and budget ~= '' then
  local spent, reserved = num(bk, 'spent'), num(bk, 'reserved')
  if spent + reserved >= tonumber(budget) then
    return {2, redis.call('HGET', bk, 'spent') or '0', redis.call('HGET', bk, 'reserved') or '0',
            budget, period, pid}
  end
end
redis.call('HINCRBY', bk, 'reserved', ARGV[1])
redis.call('HSET', rk, ARGV[5], ARGV[1])
redis.call('ZADD', ek, now + tonumber(ARGV[6]), ARGV[5])
for _, k in ipairs({bk, rk, ek}) do redis.call('EXPIRE', k, tonumber(ARGV[9])) end
redis.call('HINCRBY', cur_k, 'r', 1)
redis.call('HINCRBY', cur_k, 't', ARGV[2])
redis.call('EXPIRE', cur_k, 180)
return {0, bk, cur_k, redis.call('HGET', bk, 'spent') or '0',
        redis.call('HGET', bk, 'reserved') or '0', budget or ''}
"""

_SETTLE_LUA = """
if not redis.call('SET', KEYS[3], '1', 'NX', 'EX', 86400) then return 0 end
local rk, ek = KEYS[1] .. ':res', KEYS[1] .. ':exp'
local e = redis.call('HGET', rk, ARGV[1])
if e then
  if e ~= '0' then redis.call('HINCRBY', KEYS[1], 'reserved', '-' .. e) end
  redis.call('HDEL', rk, ARGV[1])
  redis.call('ZREM', ek, ARGV[1])
end
redis.call('HINCRBY', KEYS[1], 'spent', ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
if ARGV[3] ~= '0' and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HINCRBY', KEYS[2], 't', ARGV[3])
end
return 1
"""

_PERIOD_TTL_S = 70 * 24 * 3600  # a month's counters outlive the month, for the dashboard


@dataclass(frozen=True)
class Reservation:
    id: str
    team: str
    key_id: str
    budget_key: str  # '' when admitted without Redis (fail-open)
    window_key: str
    estimate_nano: int
    estimate_tokens: int
    # The team's budget as admission saw it (this reservation included), for the policy.
    budget_nano: int | None = None
    spent_nano: int = 0
    reserved_nano: int = 0

    @property
    def used_fraction(self) -> float | None:
        """(spent + in flight) / budget: what a policy's budget downgrade looks at."""
        if not self.budget_nano:
            return None
        return (self.spent_nano + self.reserved_nano) / self.budget_nano


@dataclass(frozen=True)
class BudgetStatus:
    team: str
    period: Period
    period_id: str
    budget_nano: int | None
    spent_nano: int
    reserved_nano: int

    @property
    def remaining_nano(self) -> int | None:
        if self.budget_nano is None:
            return None
        return self.budget_nano - self.spent_nano

    @property
    def burn(self) -> float | None:
        """Spent / budget (1.0 = exhausted)."""
        if not self.budget_nano:
            return None
        return self.spent_nano / self.budget_nano


def period_ids(now: float | None = None) -> tuple[str, str]:
    """(day id, month id) in UTC, e.g. ('2025-03-01', '2025-03')."""
    d = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    return d.strftime("%Y-%m-%d"), d.strftime("%Y-%m")


class Limiter:
    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = "slm",
        reservation_ttl_s: int = 600,
        fail_open: bool = False,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.reservation_ttl_s = reservation_ttl_s
        self.fail_open = fail_open
        self._admit = redis.register_script(_ADMIT_LUA)
        self._settle = redis.register_script(_SETTLE_LUA)

    async def admit(self, key: KeyInfo, estimate_nano: int, estimate_tokens: int) -> Reservation:
        """Reserve the estimate or raise RateLimited / BudgetExceeded (429) / AccessUnavailable."""
        res_id = secrets.token_hex(12)
        p = self.prefix
        day_id, month_id = period_ids()
        try:
            reply = await self._admit(
                keys=[f"{p}:team:{key.team}", f"{p}:spend:{key.team}", f"{p}:rl:{key.key_id}"],
                args=[
                    max(0, int(estimate_nano)),
                    max(0, int(estimate_tokens)),
                    key.rpm,
                    key.tpm,
                    res_id,
                    self.reservation_ttl_s,
                    day_id,
                    month_id,
                    _PERIOD_TTL_S,
                ],
            )
        except Exception as exc:
            if self.fail_open:
                log.warning("budgets: Redis unavailable (%s); admitting", type(exc).__name__)
                return Reservation(res_id, key.team, key.key_id, "", "", estimate_nano, 0)
            raise AccessUnavailable("budget and rate-limit store unavailable; retry") from exc
        status = int(reply[0])
        if status == 1:
            raise RateLimited(
                f"rate limit reached for key {key.key_id} ({_limit_text(key, reply[2])}); "
                "retry later",
                retry_after=float(reply[1]),
            )
        if status == 2:
            spent, reserved, budget, period, pid = reply[1:6]
            raise BudgetExceeded(
                f"team '{key.team}' is over its {'daily' if period == 'day' else 'monthly'} "
                f"budget for {pid}: ${nano_to_usd(int(budget))} "
                f"(spent ${nano_to_usd(int(spent))}, "
                f"in flight ${nano_to_usd(int(reserved))})"
            )
        return Reservation(
            id=res_id,
            team=key.team,
            key_id=key.key_id,
            budget_key=str(reply[1]),
            window_key=str(reply[2]),
            estimate_nano=int(estimate_nano),
            estimate_tokens=int(estimate_tokens),
            budget_nano=int(reply[5]) if reply[5] not in ("", None) else None,
            spent_nano=int(reply[3]),
            reserved_nano=int(reply[4]),
        )

    async def settle(self, res: Reservation, actual_nano: int, actual_tokens: int) -> bool:
        """Swap the reservation for the real cost (0 for a failed call). Never raises.

        True if applied, False if this reservation was already settled or Redis failed (then the
        reservation expires by itself and the spend is missing from the budget, not the ledger).
        """
        if not res.budget_key:
            return False
        try:
            done = await self._settle(
                keys=[res.budget_key, res.window_key, f"{self.prefix}:settled:{res.id}"],
                args=[
                    res.id,
                    max(0, int(actual_nano)),
                    int(actual_tokens) - res.estimate_tokens,
                    _PERIOD_TTL_S,
                ],
            )
        except Exception:
            log.exception("budgets: settle failed for team %s", res.team)
            return False
        return bool(done)

    async def status(
        self,
        team: str,
        now: float | None = None,
    ) -> BudgetStatus:
        """Budget burn for the team's current period (for the dashboard and the CLI)."""
        p = self.prefix
        cfg = await self.redis.hgetall(f"{p}:team:{team}")
        period: Period = "day" if cfg.get("period") == "day" else "month"
        day_id, month_id = period_ids(now)
        pid = day_id if period == "day" else month_id
        h = await self.redis.hgetall(f"{p}:spend:{team}:{pid}")
        budget = cfg.get("budget_nano", "")
        return BudgetStatus(
            team=team,
            period=period,
            period_id=pid,
            budget_nano=int(budget) if budget != "" else None,
            spent_nano=int(h.get("spent", 0)),
            reserved_nano=int(h.get("reserved", 0)),
        )


def _limit_text(key: KeyInfo, which: object) -> str:
    if which == "tpm":
        return f"{key.tpm} tokens per minute"
    return f"{key.rpm} requests per minute"
