"""Images an HTML mail embeds by ``cid:`` (RFC 2392, in multipart/related as
mail clients send signatures, logos and pasted screenshots): the API says
which attachment a Content-ID names, and the sanitized HTML keeps the
``cid:`` URL that refers to it, while data: and javascript: stay out."""

from __future__ import annotations

import os
from email.message import EmailMessage

import aiosmtplib

from mailfleet.api.schemas import MessageOut
from tests.conftest import Service, User

PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(1_500)
PDF = b"%PDF-1.7\n" + os.urandom(5_000) + b"\n%%EOF\n"

HTML = (
    '<p>Regards,</p><img src="cid:logo.1@mail.test" alt="logo">'
    '<img src="http://images.test/banner.png" alt="remote">'
    '<img src="data:image/png;base64,iVBORw0KGgo=" alt="smuggled">'
    '<img src="javascript:alert(1)" alt="script">'
)


def related_mail(to: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = "Sam Signature <sam@outside.test>"
    mail["To"] = to
    mail["Subject"] = "Logo in the signature"
    mail.set_content("Regards,\nSam\n")
    mail.add_alternative(HTML, subtype="html")
    html_part = mail.get_body(("html",))
    assert html_part is not None
    html_part.add_related(
        PNG, maintype="image", subtype="png", cid="<logo.1@mail.test>", filename="logo.png"
    )
    mail.add_attachment(PDF, maintype="application", subtype="pdf", filename="terms.pdf")
    return mail


async def test_cid_image_is_named_in_the_api_and_kept_in_the_html(
    service: Service, bob: User
) -> None:
    await aiosmtplib.send(
        related_mail(bob.email), hostname="127.0.0.1", port=service.smtp_port, start_tls=False
    )
    (summary,) = await bob.wait_for("inbox", 1)
    response = await bob.client.get(f"/v1/messages/{summary['id']}")
    assert response.status_code == 200, response.text
    full = response.json()
    # The answer is what its documented model (/openapi.json) says.
    assert MessageOut.model_validate(full).model_dump(mode="json", by_alias=True) == full

    files = {a["filename"]: a for a in full["attachments"]}
    assert set(files) == {"logo.png", "terms.pdf"}
    logo, terms = files["logo.png"], files["terms.pdf"]
    assert logo["content_id"] == "logo.1@mail.test"
    assert logo["inline"] is True
    assert logo["content_type"] == "image/png" and logo["size"] == len(PNG)
    assert terms["content_id"] is None
    assert terms["inline"] is False

    # The cid: URL names the part the reader fetches for it.
    assert '<img src="cid:logo.1@mail.test" alt="logo">' in full["html"]
    assert '<img src="http://images.test/banner.png" alt="remote">' in full["html"]
    assert "data:" not in full["html"]
    assert "javascript" not in full["html"].lower()
    download = await bob.client.get(f"/v1/messages/{summary['id']}/attachments/{logo['id']}")
    assert download.status_code == 200
    assert download.content == PNG


async def test_a_mail_whose_only_image_is_inline_has_no_paperclip(
    service: Service, bob: User
) -> None:
    """A signature's logo is not an attachment to the reader: no
    ``has_attachments`` in the list, no ``has:attachment`` hit; the image is
    still listed on the message for the reader to show in place."""
    with_logo = related_mail(bob.email)
    with_logo.replace_header("Subject", "Only a logo")
    with_logo.get_payload().pop()  # the PDF: what is left is text, HTML and its image
    for mail in (related_mail(bob.email), with_logo):
        await aiosmtplib.send(mail, hostname="127.0.0.1", port=service.smtp_port, start_tls=False)
    listed = {m["subject"]: m for m in await bob.wait_for("inbox", 2)}
    assert listed["Logo in the signature"]["has_attachments"] is True
    assert listed["Only a logo"]["has_attachments"] is False
    full = (await bob.client.get(f"/v1/messages/{listed['Only a logo']['id']}")).json()
    assert [(a["filename"], a["inline"]) for a in full["attachments"]] == [("logo.png", True)]
    found = await bob.client.get("/v1/search", params={"q": "has:attachment"})
    assert [m["subject"] for m in found.json()["items"]] == ["Logo in the signature"]
