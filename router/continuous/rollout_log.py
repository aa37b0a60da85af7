"""The rollout log: every step with who, when, which artifact versions and the policy's hashes,
newest first, kept in Redis (`{p}:rollout:log`, capped at LOG_CAP entries) or in memory (tests,
dry runs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from router.continuous.spec import Mode

if TYPE_CHECKING:
    from redis.asyncio import Redis

Action = Literal["shadow", "canary", "promote", "rollback"]
DEFAULT_PREFIX = "slm"
LOG_CAP = 1000


class ArtifactRef(BaseModel):
    """Which classifier: enough to find it again and to know it is the same one."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    path: str | None = None
    version: str | None = None
    data_sha256: str | None = None


class RolloutLogEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ts: float
    actor: str
    action: Action
    policy_file: str
    mode: Mode | None = None
    percent: float | None = None
    current: ArtifactRef
    candidate: ArtifactRef | None = None
    policy_sha256_before: str
    policy_sha256_after: str
    applied: bool = True
    forced: bool = False
    note: str = ""
    previous_policy: str = Field("", description="The full policy text before this step.")

    def summary(self) -> dict[str, Any]:
        return self.model_dump(exclude={"previous_policy"})


class RolloutLog(Protocol):
    async def append(self, entry: RolloutLogEntry) -> None: ...

    async def entries(self, limit: int = 50) -> list[RolloutLogEntry]:
        """Newest first."""
        ...


class RedisRolloutLog:
    def __init__(self, redis: Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self.redis = redis
        self.key = f"{prefix}:rollout:log"

    async def append(self, entry: RolloutLogEntry) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lpush(self.key, entry.model_dump_json())
            pipe.ltrim(self.key, 0, LOG_CAP - 1)
            await pipe.execute()

    async def entries(self, limit: int = 50) -> list[RolloutLogEntry]:
        raw = await self.redis.lrange(self.key, 0, limit - 1)  # type: ignore[misc]
        return [RolloutLogEntry.model_validate_json(r) for r in raw]


class MemoryRolloutLog:
    """The same log in a list: for tests and for `--no-redis` dry runs."""

    def __init__(self) -> None:
        self.items: list[RolloutLogEntry] = []

    async def append(self, entry: RolloutLogEntry) -> None:
        self.items.insert(0, entry)

    async def entries(self, limit: int = 50) -> list[RolloutLogEntry]:
        return self.items[:limit]
