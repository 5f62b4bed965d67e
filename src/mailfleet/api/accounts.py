"""Accounts and sessions."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from mailfleet.api.deps import AccountDep, RuntimeDep, bearer_token
from mailfleet.api.schemas import (
    AccountOut,
    JsonResponse,
    LogIn,
    SignUp,
    TokenOut,
    ms_to_datetime,
)

router = APIRouter(prefix="/v1", tags=["accounts"])


@router.post("/accounts", status_code=201, response_model=AccountOut)
async def sign_up(body: SignUp, runtime: RuntimeDep) -> AccountOut:
    account = await runtime.accounts.sign_up(body.email, body.password, body.name)
    return AccountOut(id=str(account.id), email=account.email, name=account.name)


@router.post("/sessions", status_code=201, response_model=TokenOut)
async def log_in(body: LogIn, request: Request, runtime: RuntimeDep) -> TokenOut:
    # The peer uvicorn reports: the load balancer's client when it forwards
    # one from an address uvicorn trusts (``forwarded_allow_ips``).
    client_ip = request.client.host if request.client else ""
    issued = await runtime.accounts.log_in(body.email, body.password, client_ip=client_ip)
    return TokenOut(token=issued.token, expires_at=ms_to_datetime(issued.expires_at))


@router.delete("/sessions/current", status_code=204)
async def log_out(request: Request, runtime: RuntimeDep, _: AccountDep) -> Response:
    await runtime.accounts.log_out(bearer_token(request))
    return Response(status_code=204)


@router.get("/me", response_model=AccountOut)
async def me(account: AccountDep) -> JsonResponse:
    return JsonResponse({"id": str(account.id), "email": account.email, "name": account.name})
