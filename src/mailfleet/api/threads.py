"""Threads (conversations): ``GET /v1/threads/{thread_id}``."""

from __future__ import annotations

from fastapi import APIRouter

from mailfleet.api.deps import AccountDep, RuntimeDep
from mailfleet.api.schemas import JsonResponse, ThreadOut, summary_json

router = APIRouter(prefix="/v1/threads", tags=["threads"])


@router.get("/{thread_id}", response_model=ThreadOut)
async def get_thread(thread_id: str, runtime: RuntimeDep, account: AccountDep) -> JsonResponse:
    thread = await runtime.mailbox.thread(account.id, thread_id)
    return JsonResponse(
        {
            "id": str(thread.id),
            "subject": thread.subject,
            "messages": [summary_json(m) for m in thread.messages],
        }
    )
