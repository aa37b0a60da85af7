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

Layout (prefix `slm`; T is the team, `{team}` on Redis Cluster: router.finance.keyspace):
  {p}:spend:T:{period_id}        hash: spent, reserved (nano-USD)
  {p}:spend:T:{period_id}:res    hash: reservation id -> estimate
  {p}:spend:T:{period_id}:exp    zset: reservation id -> expiry (crashed holders)
  {p}:rl:T:{key_id}              hash: w (minute), cr/ct (its requests, tokens), pr/pt (the
                                 minute before)
  {p}:settled:T:{reservation id} guard so that a retried settle counts once
Both scripts receive every key they touch in KEYS (the day's and the month's spend keys both,
since the team's period is read inside the script), so on a cluster they run in the team's slot.
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
from router.finance.keyspace import KeySpace

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)

_ADMIT_LUA = """
-- KEYS: 1 team config; 2-4 day spend, :res, :exp; 5-7 month spend, :res, :exp; 8 rate window.
-- Every key the script touches is in KEYS (and in the team's slot on a cluster).
local tm = redis.call('TIME')
local now = tonumber(tm[1]) + tonumber(tm[2]) / 1000000
local win = math.floor(now / 60)
local elapsed = now - win * 60
local w = (60 - elapsed) / 60
local est_tok = tonumber(ARGV[2])
local rpm, tpm = tonumber(ARGV[3]), tonumber(ARGV[4])
local rl = KEYS[8]
-- The window hash holds this minute (cr, ct) and the one before (pr, pt) of minute w.
local v = redis.call('HMGET', rl, 'w', 'pr', 'pt', 'cr', 'ct')
local pr, pt, cr, ct = 0, 0, 0, 0
local at = tonumber(v[1] or '-1')
if at == win then
  pr, pt, cr, ct = tonumber(v[2] or '0'), tonumber(v[3] or '0'), tonumber(v[4] or '0'),
                   tonumber(v[5] or '0')
elseif at == win - 1 then
  pr, pt = tonumber(v[4] or '0'), tonumber(v[5] or '0')
end
local function num(k, f) return tonumber(redis.call('HGET', k, f) or '0') end
local function wait(prev, cur, need, limit)
  if cur + need > limit or prev <= 0 then return 60 - elapsed end
  return math.max(60 - 60 * (limit - cur - need) / prev - elapsed, 0.001)
end
if rpm > 0 and pr * w + cr + 1 > rpm then return {1, tostring(wait(pr, cr, 1, rpm)), 'rpm'} end
if tpm > 0 then
  local used = pt * w + ct
  if used > 0 and used + est_tok > tpm then
    return {1, tostring(wait(pt, ct, math.min(est_tok, tpm), tpm)), 'tpm'}
  end
end
local period = redis.call('HGET', KEYS[1], 'period')
if not period then period = 'month' end
local pid, bk, rk, ek = ARGV[8], KEYS[5], KEYS[6], KEYS[7]
if period == 'day' then pid, bk, rk, ek = ARGV[7], KEYS[2], KEYS[3], KEYS[4] end
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
redis.call('HSET', rl, 'w', win, 'pr', pr, 'pt', pt, 'cr', cr + 1, 'ct', ct + est_tok)
redis.call('EXPIRE', rl, 180)
return {0, bk, tostring(win), redis.call('HGET', bk, 'spent') or '0',
        redis.call('HGET', bk, 'reserved') or '0', budget or ''}
"""

_SETTLE_LUA = """
-- KEYS: 1 spend, 2 its :res, 3 its :exp, 4 rate window, 5 settle guard (all in the team's slot).
if not redis.call('SET', KEYS[5], '1', 'NX', 'EX', 86400) then return 0 end
local e = redis.call('HGET', KEYS[2], ARGV[1])
if e then
  if e ~= '0' then redis.call('HINCRBY', KEYS[1], 'reserved', '-' .. e) end
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
end
redis.call('HINCRBY', KEYS[1], 'spent', ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
if ARGV[3] ~= '0' then
  -- The tokens count in the minute of the admission: still current, or rolled to previous.
  local at = tonumber(redis.call('HGET', KEYS[4], 'w') or '-1')
  local win = tonumber(ARGV[5])
  if at == win then redis.call('HINCRBY', KEYS[4], 'ct', ARGV[3])
  elseif at == win + 1 then redis.call('HINCRBY', KEYS[4], 'pt', ARGV[3]) end
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
    window: int = 0  # the minute (Redis' clock) whose rate window counted this request

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


def _spend_keys(spend_key: str) -> list[str]:
    """A period's spend hash and, beside it, its reservations (:res) and their expiries (:exp)."""
    return [spend_key, spend_key + ":res", spend_key + ":exp"]


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
        self.space = KeySpace.of(redis, prefix)
        self.reservation_ttl_s = reservation_ttl_s
        self.fail_open = fail_open
        self._admit = redis.register_script(_ADMIT_LUA)
        self._settle = redis.register_script(_SETTLE_LUA)

    async def admit(self, key: KeyInfo, estimate_nano: int, estimate_tokens: int) -> Reservation:
        """Reserve the estimate or raise RateLimited / BudgetExceeded (429) / AccessUnavailable."""
        res_id = secrets.token_hex(12)
        day_id, month_id = period_ids()
        s, team = self.space, key.team
        day, month = s.spend(team, day_id), s.spend(team, month_id)
        window_key = s.rate(team, key.key_id)
        keys = [s.team_config(team), *_spend_keys(day), *_spend_keys(month), window_key]
        try:
            reply = await self._admit(
                keys=keys,
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
            window_key=window_key,
            estimate_nano=int(estimate_nano),
            estimate_tokens=int(estimate_tokens),
            budget_nano=int(reply[5]) if reply[5] not in ("", None) else None,
            spent_nano=int(reply[3]),
            reserved_nano=int(reply[4]),
            window=int(reply[2]),
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
                keys=[
                    *_spend_keys(res.budget_key),
                    res.window_key,
                    self.space.settled(res.team, res.id),
                ],
                args=[
                    res.id,
                    max(0, int(actual_nano)),
                    int(actual_tokens) - res.estimate_tokens,
                    _PERIOD_TTL_S,
                    res.window,
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
        cfg = await self.redis.hgetall(self.space.team_config(team))
        period: Period = "day" if cfg.get("period") == "day" else "month"
        day_id, month_id = period_ids(now)
        pid = day_id if period == "day" else month_id
        h = await self.redis.hgetall(self.space.spend(team, pid))
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
