"""Folders and their message listings."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query, Request, Response

from mailfleet.api.deps import AccountDep, RuntimeDep
from mailfleet.api.page_cache import EncodedPages
from mailfleet.api.schemas import (
    FolderCreate,
    FolderOut,
    JsonResponse,
    PageOut,
    ThreadPageOut,
    folder_json,
    page_json,
    thread_row_json,
)
from mailfleet.runtime import Runtime

router = APIRouter(prefix="/v1/folders", tags=["folders"])


@router.get("", response_model=list[FolderOut])
async def list_folders(runtime: RuntimeDep, account: AccountDep) -> JsonResponse:
    return JsonResponse([folder_json(f) for f in await runtime.mailbox.folders(account.id)])


@router.post("", status_code=201, response_model=FolderOut)
async def create_folder(
    body: FolderCreate, runtime: RuntimeDep, account: AccountDep
) -> JsonResponse:
    folder = await runtime.mailbox.create_folder(account.id, body.name)
    return JsonResponse(folder_json(folder), status_code=201)


@router.patch("/{folder_id}", response_model=FolderOut)
async def rename_folder(
    folder_id: str, body: FolderCreate, runtime: RuntimeDep, account: AccountDep
) -> JsonResponse:
    folder = await runtime.mailbox.rename_folder(account.id, folder_id, body.name)
    return JsonResponse(folder_json(folder))


@router.delete("/{folder_id}", status_code=204)
async def delete_folder(folder_id: str, runtime: RuntimeDep, account: AccountDep) -> Response:
    await runtime.mailbox.delete_folder(account.id, folder_id)
    return Response(status_code=204)


@router.get("/{folder_id}/messages", response_model=PageOut | ThreadPageOut)
async def list_messages(
    folder_id: str,
    request: Request,
    runtime: RuntimeDep,
    account: AccountDep,
    is_read: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
    group: Literal["thread"] | None = None,
) -> Response:
    # Read before the page: a change landing in between tags the page with
    # the older head, so the next request rebuilds it (page_cache.py).
    head = await runtime.mailbox.change_head(account.id)
    # The account is in the tag: a browser revalidating one user's cached
    # page with another user's token must not get a 304.
    etag = f'"{account.id}.{head}"'
    headers = {"ETag": etag, "Cache-Control": "private, no-cache", "Vary": "Authorization"}
    if etag in _tags(request.headers.get("if-none-match")):
        return Response(status_code=304, headers=headers)
    pages: EncodedPages = request.app.state.pages
    key = (account.id, folder_id, is_read, limit, cursor, group)
    body = pages.get(key, head)
    if body is None:
        body = orjson.dumps(
            await _page(runtime, account.id, folder_id, is_read, limit, cursor, group)
        )
        pages.put(key, head, body)
    return Response(body, media_type="application/json", headers=headers)


async def _page(
    runtime: Runtime,
    account_id: int,
    folder_id: str,
    is_read: bool | None,
    limit: int,
    cursor: str | None,
    group: str | None,
) -> dict[str, Any]:
    if group == "thread":
        # One row per thread, with ``thread_count``; the same cursor rules.
        threads = await runtime.mailbox.list_threads(
            account_id, folder_id, is_read=is_read, limit=limit, cursor=cursor
        )
        return {
            "items": [thread_row_json(t) for t in threads.items],
            "next_cursor": threads.next_cursor,
        }
    page = await runtime.mailbox.list_messages(
        account_id, folder_id, is_read=is_read, limit=limit, cursor=cursor
    )
    return page_json(page.items, page.next_cursor)


def _tags(if_none_match: str | None) -> set[str]:
    """The entity tags of an If-None-Match header, weak or strong alike
    (RFC 9110 13.1.2 compares them weakly)."""
    if not if_none_match:
        return set()
    return {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
