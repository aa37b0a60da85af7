"""API keys and team budgets (their configuration; enforcement lives in router.finance.budgets).

A key is shown once, at creation; Redis keeps only its SHA-256 (a key is 256 random bits, so a
fast unsalted hash is enough: there is nothing to brute-force). Lookups are cached in-process for
`cache_ttl_s`, so a revocation takes up to that long to reach every replica.

Layout (prefix `slm`):
  {p}:key:{sha256}     hash: key_id, team, rpm, tpm, admin, created_at, revoked, name
  {p}:keyid:{key_id}   the key's sha256 (revoke/list by the public id)
  {p}:keys             set of key ids
  {p}:team:T          hash: budget_nano, period (day|month); T is the team, `{team}` (its hash
                       tag) on Redis Cluster, so admission's script finds it in the team's slot
  {p}:teams            set of teams

On a cluster the four writes of a new key span slots, so they cannot be one MULTI: the indexes go
first and the key's hash last, so a key that works is always listed (and revocable by id).

Team and key names are 1-64 characters of [A-Za-z0-9._-] (NAME_PATTERN): they end up in Redis
keys, ledger dimensions, CSV cells and terminal tables, where a newline, a separator or a
leading '=' would break or forge rows. A key's name (a label for humans) may also be empty and
contain spaces (LABEL_PATTERN), but not at its ends.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Literal

from router.errors import AccessUnavailable, AdminRequired, InvalidApiKey
from router.finance.costs import nano_to_usd, usd_to_nano
from router.finance.keyspace import KeySpace

if TYPE_CHECKING:
    from redis.asyncio import Redis

Period = Literal["day", "month"]
KEY_PREFIX = "sk-slm-"
NAME_PATTERN = r"[A-Za-z0-9._-]{1,64}"
LABEL_PATTERN = r"[A-Za-z0-9._-]([A-Za-z0-9._ -]{0,62}[A-Za-z0-9._-])?"
_NAME_RE = re.compile(NAME_PATTERN)
_LABEL_RE = re.compile(LABEL_PATTERN)


def check_name(value: str, what: str = "team", *, label: bool = False) -> str:
    """`value` if it is a valid team name (or, with `label`, key label), else ValueError."""
    if label and value == "":
        return value
    pattern, chars = (
        (_LABEL_RE, "A-Z a-z 0-9 . _ - and inner spaces")
        if label
        else (_NAME_RE, "A-Z a-z 0-9 . _ -")
    )
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValueError(f"invalid {what} name {value!r}: use 1 to 64 of the characters {chars}")
    return value


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    team: str
    rpm: int = 0  # 0 = unlimited
    tpm: int = 0
    admin: bool = False
    created_at: float = 0.0
    revoked: bool = False
    name: str = ""


@dataclass(frozen=True)
class CreatedKey:
    plaintext: str  # shown once; never stored
    info: KeyInfo


@dataclass(frozen=True)
class TeamBudget:
    team: str
    budget_nano: int
    period: Period

    @property
    def budget_usd(self) -> Decimal:
        return nano_to_usd(self.budget_nano)


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def _info(h: dict[str, str]) -> KeyInfo:
    return KeyInfo(
        key_id=h["key_id"],
        team=h["team"],
        rpm=int(h.get("rpm") or 0),
        tpm=int(h.get("tpm") or 0),
        admin=h.get("admin") == "1",
        created_at=float(h.get("created_at") or 0),
        revoked=h.get("revoked") == "1",
        name=h.get("name", ""),
    )


class KeyStore:
    def __init__(self, redis: Redis, *, prefix: str = "slm", cache_ttl_s: float = 5.0) -> None:
        self.redis = redis
        self.prefix = prefix
        self.space = KeySpace.of(redis, prefix)
        self.cache_ttl_s = cache_ttl_s
        self._cache: dict[str, tuple[float, KeyInfo | None]] = {}

    async def create_key(
        self,
        team: str,
        *,
        budget_usd: float | str | Decimal | None = None,
        period: Period = "month",
        rpm: int = 0,
        tpm: int = 0,
        admin: bool = False,
        name: str = "",
    ) -> CreatedKey:
        """A new key for `team`; a budget given here becomes the team's (shared by its keys)."""
        check_name(team)
        check_name(name, "key", label=True)
        if rpm < 0 or tpm < 0:
            raise ValueError("rpm and tpm must be >= 0")
        plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
        info = KeyInfo(
            key_id="key_" + secrets.token_hex(6),
            team=team,
            rpm=rpm,
            tpm=tpm,
            admin=admin,
            created_at=time.time(),
            name=name,
        )
        await self._store(hash_key(plaintext), info)
        if budget_usd is not None:
            await self.set_budget(team, budget_usd, period)
        return CreatedKey(plaintext=plaintext, info=info)

    async def _store(self, sha: str, info: KeyInfo) -> None:
        p = self.prefix
        record = {
            "key_id": info.key_id,
            "team": info.team,
            "rpm": info.rpm,
            "tpm": info.tpm,
            "admin": int(info.admin),
            "created_at": repr(info.created_at),
            "revoked": 0,
            "name": info.name,
        }
        # One MULTI on one Redis; on a cluster (keys in several slots) indexes first, key last.
        async with self.redis.pipeline(transaction=not self.space.cluster) as pipe:
            pipe.set(f"{p}:keyid:{info.key_id}", sha)
            pipe.sadd(f"{p}:keys", info.key_id)
            pipe.sadd(f"{p}:teams", info.team)
            if not self.space.cluster:
                pipe.hset(f"{p}:key:{sha}", mapping=record)  # type: ignore[arg-type]
            await pipe.execute()
        if self.space.cluster:
            await self.redis.hset(f"{p}:key:{sha}", mapping=record)  # type: ignore[arg-type]

    async def list_keys(self, team: str | None = None) -> list[KeyInfo]:
        ids = sorted(str(k) for k in await self.redis.smembers(f"{self.prefix}:keys"))
        async with self.redis.pipeline(transaction=False) as pipe:
            for key_id in ids:
                pipe.get(f"{self.prefix}:keyid:{key_id}")
            shas = await pipe.execute()
        async with self.redis.pipeline(transaction=False) as pipe:
            for sha in shas:
                pipe.hgetall(f"{self.prefix}:key:{sha}")
            hashes = await pipe.execute()
        infos = [_info(h) for h in hashes if h]
        return [i for i in infos if team is None or i.team == team]

    async def revoke(self, key_id: str) -> bool:
        sha = str(await self.redis.get(f"{self.prefix}:keyid:{key_id}") or "")
        if not sha:
            return False
        await self.redis.hset(f"{self.prefix}:key:{sha}", "revoked", 1)
        self._cache.pop(sha, None)
        return True

    async def authenticate(self, plaintext: str | None) -> KeyInfo | None:
        """The key's info, or None for a missing, unknown or revoked key."""
        if not plaintext:
            return None
        sha = hash_key(plaintext)
        now = time.monotonic()
        hit = self._cache.get(sha)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            h: dict[str, str] = await self.redis.hgetall(f"{self.prefix}:key:{sha}")  # type: ignore[assignment]
        except Exception as exc:
            raise AccessUnavailable("the key store is unavailable; try again") from exc
        info = _info(h) if h else None
        if info is not None and info.revoked:
            info = None
        if len(self._cache) > 10_000:
            self._cache.clear()  # bounded: unknown keys must not grow it forever
        self._cache[sha] = (now + self.cache_ttl_s, info)
        return info

    async def require(self, authorization: str | None, *, admin: bool = False) -> KeyInfo:
        """From an `Authorization` header value ("Bearer sk-...") to a key, or a 401/403."""
        token = None
        if authorization:
            scheme, _, rest = authorization.partition(" ")
            token = rest.strip() if scheme.lower() == "bearer" else None
        if not token:
            raise InvalidApiKey("missing API key: send `Authorization: Bearer <key>`")
        info = await self.authenticate(token)
        if info is None:
            raise InvalidApiKey("invalid or revoked API key")
        if admin and not info.admin:
            raise AdminRequired("this endpoint needs an admin key")
        return info

    async def set_budget(
        self, team: str, budget_usd: float | str | Decimal | None, period: Period = "month"
    ) -> None:
        """Set (or with None, remove) a team's budget; it applies from the next admission."""
        check_name(team)
        if period not in ("day", "month"):
            raise ValueError("period must be 'day' or 'month'")
        key = self.space.team_config(team)
        if budget_usd is None:
            await self.redis.hdel(key, "budget_nano")
            return
        nano = usd_to_nano(budget_usd)
        if nano < 0:
            raise ValueError("budget must be >= 0")
        await self.redis.hset(key, mapping={"budget_nano": nano, "period": period})
        await self.redis.sadd(f"{self.prefix}:teams", team)

    async def budget(self, team: str) -> TeamBudget | None:
        h = await self.redis.hgetall(self.space.team_config(team))
        if not h or h.get("budget_nano", "") == "":
            return None
        period: Period = "day" if h.get("period") == "day" else "month"
        return TeamBudget(team=team, budget_nano=int(h["budget_nano"]), period=period)

    async def teams(self) -> list[str]:
        return sorted(str(t) for t in await self.redis.smembers(f"{self.prefix}:teams"))
