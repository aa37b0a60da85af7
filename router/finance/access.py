"""Who may call: API-key authentication for every route, and private answers.

With the policy's `gateway.auth` off every caller is anonymous (None). With it on, a request
needs a valid key (an admin key where asked); with no key store (no Redis) the gateway fails
closed with a 503 rather than serve unchecked.

The HTTP app installs one Access (`install`); routes ask for the caller through `caller` or
`admin` (plain functions, or FastAPI dependencies). A router whose answers hold one team's data
adds the `private` dependency: its answers, errors included, carry `cache-control: no-store`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# Runtime imports: FastAPI reads a dependency's `Request` annotation when mounting it; under
# TYPE_CHECKING only, `request` would be taken for a query parameter.
from fastapi import FastAPI, Request
from starlette.types import Scope

from router.errors import AccessUnavailable

if TYPE_CHECKING:
    from router.finance.keys import KeyInfo, KeyStore

NO_STORE = {"cache-control": "no-store"}


class Access:
    def __init__(self, auth: bool, keys: KeyStore | None = None) -> None:
        self.auth = auth
        self.keys = keys

    async def authenticate(
        self, authorization: str | None, *, admin: bool = False
    ) -> KeyInfo | None:
        """The caller's key from an `Authorization` header value; None when auth is off."""
        if not self.auth:
            return None
        if self.keys is None:
            raise AccessUnavailable("auth is on but no key store is configured (REDIS_URL)")
        return await self.keys.require(authorization, admin=admin)


def install(app: FastAPI, access: Access) -> None:
    app.state.access = access


async def caller(request: Request) -> KeyInfo | None:
    access: Access = request.app.state.access
    return await access.authenticate(request.headers.get("authorization"))


async def admin(request: Request) -> KeyInfo | None:
    access: Access = request.app.state.access
    return await access.authenticate(request.headers.get("authorization"), admin=True)


def private(request: Request) -> None:
    """Router dependency: this route serves one team's data, so no cache may keep its answer."""
    request.state.private = True


def is_private(scope: Scope) -> bool:
    """Whether the route that handled this request marked it `private` (errors included)."""
    return bool(scope.get("state", {}).get("private"))
