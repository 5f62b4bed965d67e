"""Folders and their message listings."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from mailfleet.api.deps import AccountDep, RuntimeDep
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
    runtime: RuntimeDep,
    account: AccountDep,
    is_read: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
    group: Literal["thread"] | None = None,
) -> JsonResponse:
    if group == "thread":
        # One row per thread, with ``thread_count``; the same cursor rules.
        threads = await runtime.mailbox.list_threads(
            account.id, folder_id, is_read=is_read, limit=limit, cursor=cursor
        )
        return JsonResponse(
            {
                "items": [thread_row_json(t) for t in threads.items],
                "next_cursor": threads.next_cursor,
            }
        )
    page = await runtime.mailbox.list_messages(
        account.id, folder_id, is_read=is_read, limit=limit, cursor=cursor
    )
    return JsonResponse(page_json(page.items, page.next_cursor))
