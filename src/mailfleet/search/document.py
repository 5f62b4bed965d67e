"""What of a message is searchable, as index-ready token strings."""

from __future__ import annotations

from collections.abc import Iterable

from mailfleet.proto.addresses import Address
from mailfleet.search.tokens import tokens
from mailfleet.storage.interfaces import NewMessage, SearchDocument

# The body is searched up to here: enough for any mail people write; a
# 20 MB log pasted into a mail would cost index space for nothing.
MAX_BODY_CHARS = 200_000


def _addresses(addresses: Iterable[Address | None]) -> str:
    return " ".join(f"{a.name} {a.email}" for a in addresses if a is not None)


def build_document(
    *,
    account_id: int,
    message_id: int,
    subject: str,
    sender: Address | None,
    recipients: Iterable[Address],
    body: str,
    attachment_names: Iterable[str],
) -> SearchDocument:
    def joined(text: str) -> str:
        return " ".join(tokens(text))

    return SearchDocument(
        account_id=account_id,
        message_id=message_id,
        subject=joined(subject),
        sender=joined(_addresses([sender])),
        recipients=joined(_addresses(recipients)),
        body=joined(body[:MAX_BODY_CHARS]),
        attachments=joined(" ".join(attachment_names)),
    )


def document_for(message: NewMessage) -> SearchDocument:
    return build_document(
        account_id=message.account_id,
        message_id=message.id,
        subject=message.subject,
        sender=message.sender,
        recipients=(*message.to, *message.cc, *message.bcc),
        body=message.body_text,
        attachment_names=(a.filename for a in message.attachments),
    )
