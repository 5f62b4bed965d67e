"""Full-text search over the caller's mail."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from mailfleet.api.deps import AccountDep, RuntimeDep
from mailfleet.api.schemas import JsonResponse, PageOut, page_json

router = APIRouter(prefix="/v1", tags=["search"])


@router.get("/search", response_model=PageOut)
async def search(
    runtime: RuntimeDep,
    account: AccountDep,
    q: Annotated[str, Query(max_length=1000, description="words and operators, as in Gmail")],
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> JsonResponse:
    page = await runtime.search.search(account.id, q, limit=limit, cursor=cursor)
    return JsonResponse(page_json(page.items, page.next_cursor))
