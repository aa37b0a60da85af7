"""Where one team's Redis keys live: the same names as ever on one Redis, hash-tagged on a cluster.

On Redis Cluster a Lua script or a MULTI may only touch keys of one hash slot, and a key's slot is
the CRC16 of the part between its first `{` and the next `}` when there is one. So on a cluster
every key a team's admission, settle or ledger write touches carries `{team}`: one team's keys
share a slot (one master), different teams spread over the masters. On a single Redis the names
stay what they were (`slm:team:acme`, not `slm:team:{acme}`), so a running deployment keeps its
budgets and history.

The mode comes from the client (`is_cluster`): a RedisCluster client means cluster names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def is_cluster(client: Any) -> bool:
    """True for redis-py's asyncio RedisCluster client (router.finance.redis_server.make_client
    builds one for a URL with `cluster=true`)."""
    from redis.asyncio.cluster import RedisCluster

    return isinstance(client, RedisCluster)


@dataclass(frozen=True)
class KeySpace:
    prefix: str = "slm"
    cluster: bool = False

    def __post_init__(self) -> None:
        if self.cluster and ("{" in self.prefix or "}" in self.prefix):
            # A brace in the prefix would become the hash tag of every key.
            raise ValueError(f"a Redis Cluster key prefix may not contain braces: {self.prefix!r}")

    @classmethod
    def of(cls, client: Any, prefix: str = "slm") -> KeySpace:
        return cls(prefix, is_cluster(client))

    def team(self, team: str) -> str:
        """The team's part of a key: `{team}` (its hash tag) on a cluster, `team` otherwise."""
        if not self.cluster:
            return team
        # Team names have no braces (keys.NAME_PATTERN); a ledger's free-form name might.
        return "{" + team.replace("{", "_").replace("}", "_") + "}"

    # ---- keys and budgets -------------------------------------------------------------------

    def team_config(self, team: str) -> str:
        return f"{self.prefix}:team:{self.team(team)}"

    def spend(self, team: str, period_id: str) -> str:
        """Hash spent/reserved; `:res` and `:exp` beside it hold the reservations."""
        return f"{self.prefix}:spend:{self.team(team)}:{period_id}"

    def rate(self, team: str, key_id: str) -> str:
        """The key's rate window (hash w, pr, pt, cr, ct), in its team's slot."""
        return f"{self.prefix}:rl:{self.team(team)}:{key_id}"

    def settled(self, team: str, reservation_id: str) -> str:
        return f"{self.prefix}:settled:{self.team(team)}:{reservation_id}"

    # ---- ledger -----------------------------------------------------------------------------

    def ledger_scope(self, team: str) -> str:
        """What goes between `agg:` and the day: '' on one Redis (one hash per day for all
        teams, as before), `{team}:` on a cluster (one per team and day, in the team's slot)."""
        return self.team(team) + ":" if self.cluster else ""

    def record(self, request_id: str) -> str:
        return f"{self.prefix}:req:{request_id}"

    def seen(self, team: str, request_id: str) -> str:
        """Cluster only: the ledger's count-once guard, in the team's slot (the record itself
        is looked up by request id alone, so it cannot carry the team's tag)."""
        return f"{self.prefix}:seen:{self.team(team)}:{request_id}"

    def days(self) -> str:
        return f"{self.prefix}:days"

    def day_teams(self, day: str) -> str:
        """Cluster only: the teams with ledger data that day (so reports find their hashes)."""
        return f"{self.prefix}:dayteams:{day}"

    def agg(self, scope: str, day: str) -> str:
        return f"{self.prefix}:agg:{scope}{day}"

    def top(self, scope: str, day: str) -> str:
        return f"{self.prefix}:top:{scope}{day}"

    def latency(self, scope: str, day: str, expert: str) -> str:
        return f"{self.prefix}:lat:{scope}{day}:{expert}"

    def latency_experts(self, scope: str, day: str) -> str:
        return f"{self.prefix}:latx:{scope}{day}"
