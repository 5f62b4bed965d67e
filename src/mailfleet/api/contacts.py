"""Address completion for compose: ``GET /v1/contacts?q=``, and the limits a
client should explain before an upload: ``GET /v1/limits``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from mailfleet.api.deps import AccountDep, RuntimeDep
from mailfleet.api.schemas import ContactOut, LimitsOut

router = APIRouter(prefix="/v1", tags=["compose"])


@router.get("/contacts", response_model=list[ContactOut])
async def contacts(
    runtime: RuntimeDep,
    account: AccountDep,
    q: Annotated[str, Query(max_length=320, description="start of an address or a name")] = "",
    limit: Annotated[int, Query(ge=1, le=50)] = 10,
) -> list[ContactOut]:
    found = await runtime.mailbox.contacts(account.id, account.email, q, limit=limit)
    return [ContactOut(name=c.address.name, email=c.address.email, count=c.count) for c in found]


@router.get("/limits", response_model=LimitsOut)
async def limits(runtime: RuntimeDep, _: AccountDep) -> LimitsOut:
    settings = runtime.settings.limits
    return LimitsOut(
        max_message_bytes=settings.max_message_bytes,
        max_attachment_bytes=settings.max_attachment_bytes,
        max_recipients=settings.max_recipients,
    )
