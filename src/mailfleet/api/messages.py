"""Messages: read, raw source, attachments, flags and moves, delete, send,
upload."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import quote

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from mailfleet.api.deps import AccountDep, RuntimeDep
from mailfleet.api.schemas import (
    AttachmentOut,
    JsonResponse,
    MessageOut,
    MessagePatchIn,
    SendIn,
    SentOut,
    SummaryOut,
    attachment_json,
    message_json,
    summary_json,
)
from mailfleet.delivery.send import Draft
from mailfleet.errors import BadInput, Invalid, TooLarge
from mailfleet.proto.addresses import Address, AddressError, parse_address

router = APIRouter(prefix="/v1", tags=["messages"])

# What a download must never do: render in our origin, or be sniffed into HTML.
_DOWNLOAD_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox; default-src 'none'",
    "Cache-Control": "private, max-age=0",
}


def content_disposition(filename: str) -> str:
    """RFC 6266: an ASCII fallback plus the exact name in RFC 5987 form."""
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename
    )
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


@router.get("/messages/{message_id}", response_model=MessageOut)
async def get_message(message_id: str, runtime: RuntimeDep, account: AccountDep) -> JsonResponse:
    return JsonResponse(message_json(await runtime.mailbox.view(account.id, message_id)))


@router.get("/messages/{message_id}/raw", response_class=StreamingResponse)
async def get_raw(message_id: str, runtime: RuntimeDep, account: AccountDep) -> StreamingResponse:
    message, size, chunks = await runtime.mailbox.raw(account.id, message_id)
    return StreamingResponse(
        chunks,
        media_type="message/rfc822",
        headers={
            **_DOWNLOAD_HEADERS,
            "Content-Length": str(size),
            "Content-Disposition": content_disposition(f"{message.summary.id}.eml"),
        },
    )


@router.get("/messages/{message_id}/attachments/{attachment_id}", response_class=StreamingResponse)
async def get_attachment(
    message_id: str, attachment_id: str, runtime: RuntimeDep, account: AccountDep
) -> StreamingResponse:
    attachment, chunks = await runtime.mailbox.attachment(account.id, message_id, attachment_id)
    return StreamingResponse(
        chunks,
        media_type=attachment.content_type,
        headers={
            **_DOWNLOAD_HEADERS,
            "Content-Length": str(attachment.size),
            "Content-Disposition": content_disposition(attachment.filename),
        },
    )


@router.patch("/messages/{message_id}", response_model=SummaryOut)
async def patch_message(
    message_id: str, body: MessagePatchIn, runtime: RuntimeDep, account: AccountDep
) -> JsonResponse:
    summary = await runtime.mailbox.update(
        account.id,
        message_id,
        is_read=body.is_read,
        is_flagged=body.is_flagged,
        folder_id=body.folder_id,
    )
    return JsonResponse(summary_json(summary))


@router.delete("/messages/{message_id}", status_code=204)
async def delete_message(message_id: str, runtime: RuntimeDep, account: AccountDep) -> Response:
    await runtime.mailbox.delete(account.id, message_id)
    return Response(status_code=204)


def _addresses(values: list[str | dict[str, object]], field: str) -> list[Address]:
    out = []
    for value in values:
        try:
            out.append(parse_address(value))
        except AddressError as exc:
            raise Invalid(f"{field}: {exc}", code="invalid_address") from None
    return out


@router.post("/messages", status_code=202, response_model=SentOut)
async def send_message(body: SendIn, runtime: RuntimeDep, account: AccountDep) -> SentOut:
    draft = Draft(
        to=_addresses(body.to, "to"),
        cc=_addresses(body.cc, "cc"),
        bcc=_addresses(body.bcc, "bcc"),
        subject=body.subject,
        body=body.body,
        html=body.html,
        attachments=body.attachments,
        in_reply_to=body.in_reply_to,
    )
    sent = await runtime.sending.send(account, draft)
    return SentOut(id=str(sent.id), status=sent.status)


@router.post("/attachments", status_code=201, response_model=AttachmentOut)
async def upload_attachment(
    request: Request, runtime: RuntimeDep, account: AccountDep
) -> JsonResponse:
    limit = runtime.settings.limits.max_attachment_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
        # Refuse before reading a byte of it.
        raise TooLarge(f"attachment over the limit of {limit} bytes", code="attachment_too_large")
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise BadInput("send a multipart/form-data body with a field named file", code="no_file")
    async with request.form(max_files=1, max_fields=10) as form:
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise BadInput("multipart field 'file' is missing", code="no_file")

        async def chunks() -> AsyncIterator[bytes]:
            while chunk := await upload.read(65536):
                yield chunk

        stored = await runtime.sending.upload(
            account,
            upload.filename or "attachment",
            upload.content_type or "application/octet-stream",
            chunks(),
        )
    return JsonResponse(attachment_json(stored), status_code=201)
