"""Request dependencies: the runtime, and the account a bearer token names."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from mailfleet.accounts.service import LiveSession
from mailfleet.errors import Unauthorized
from mailfleet.runtime import Runtime
from mailfleet.storage.interfaces import Account

# Dependencies are ``async def``: FastAPI runs a plain ``def`` dependency on a
# worker thread, a hand-off per request for what is a dict lookup.


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def bearer_token(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send Authorization: Bearer <token>", code="missing_token")
    return token.strip()


async def current_account(request: Request) -> Account:
    runtime: Runtime = request.app.state.runtime
    return await runtime.accounts.authenticate(bearer_token(request))


async def current_session(request: Request) -> LiveSession:
    runtime: Runtime = request.app.state.runtime
    return await runtime.accounts.session(bearer_token(request))


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
AccountDep = Annotated[Account, Depends(current_account)]
SessionDep = Annotated[LiveSession, Depends(current_session)]
