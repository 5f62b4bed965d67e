"""The attachment policy on mails as parsed from their bytes: blocked by
name and by content whatever the name, inside zips and forwarded messages;
ordinary documents pass."""

from __future__ import annotations

import asyncio
import io
import zipfile
from email.message import EmailMessage

from hypothesis import given, settings
from hypothesis import strategies as st

from mailfleet.config import load_settings
from mailfleet.filters import FilterResult, MailToCheck, Verdict
from mailfleet.filters.attachments import OLE2_MAGIC, AttachmentPolicy
from mailfleet.filters.pipeline import FilterPipeline
from mailfleet.proto.mime import parse_message

PE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" + b"\0" * 64 + b"PE\0\0"
PDF = b"%PDF-1.7\n1 0 obj << >> endobj\n%%EOF\n"


def zipped(*files: tuple[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files:
            archive.writestr(name, data)
    return out.getvalue()


def mail(*attachments: tuple[str, bytes]) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "ann@example.org"
    message["To"] = "bob@example.com"
    message["Subject"] = "Files"
    message.set_content("See attached.\n")
    for filename, data in attachments:
        message.add_attachment(
            data, maintype="application", subtype="octet-stream", filename=filename
        )
    return message


def checked(message: EmailMessage | bytes) -> MailToCheck:
    raw = message if isinstance(message, bytes) else message.as_bytes()
    return MailToCheck(
        raw=raw, parsed_message=parse_message(raw), mail_from="", recipients=(), direction="in"
    )


async def verdict(
    message: EmailMessage | bytes, policy: AttachmentPolicy | None = None
) -> tuple[Verdict | None, str]:
    result = await (policy or AttachmentPolicy()).check(checked(message))
    if result.verdict is None:
        assert result == FilterResult()
        return None, ""
    (reason,) = result.reasons
    assert reason.name == "ATTACHMENT_BLOCKED"
    return result.verdict, reason.detail


async def test_programs_and_scripts_are_blocked_by_name() -> None:
    for name in ("setup.exe", "run.SCR", "a.js", "b.vbs", "c.bat", "d.com", "e.jar", "f.ps1"):
        found = await verdict(mail((name, b"harmless text")))
        assert found[0] == Verdict.QUARANTINE, name
        assert name in found[1] and "not allowed" in found[1]


async def test_an_exe_renamed_pdf_is_caught_by_its_content() -> None:
    assert await verdict(mail(("invoice.pdf", PE))) == (
        Verdict.QUARANTINE,
        "invoice.pdf: a Windows program (MZ header)",
    )
    assert (await verdict(mail(("tool.txt", b"\x7fELF\x02\x01\x01"))))[1].endswith("ELF program")


async def test_macro_documents_are_blocked_by_name_and_content() -> None:
    assert (await verdict(mail(("budget.xlsm", b"PK"))))[0] == Verdict.QUARANTINE
    ooxml = zipped(("[Content_Types].xml", b"<Types/>"), ("word/vbaProject.bin", b"\0" * 16))
    assert await verdict(mail(("letter.docx", ooxml))) == (
        Verdict.QUARANTINE,
        "letter.docx: an Office document with macros (vbaProject.bin)",
    )
    ole_with_macros = OLE2_MAGIC + b"\0" * 100 + "_VBA_PROJECT".encode("utf-16-le") + b"\0" * 8
    assert (await verdict(mail(("old.doc", ole_with_macros))))[1].endswith("(OLE2 VBA project)")
    # Office documents without macros are ordinary mail.
    plain_ole = OLE2_MAGIC + b"\0" * 100 + "WordDocument".encode("utf-16-le")
    plain_ooxml = zipped(("[Content_Types].xml", b"<Types/>"), ("word/document.xml", b"<w/>"))
    assert await verdict(mail(("old.doc", plain_ole), ("new.docx", plain_ooxml))) == (None, "")


async def test_archives_holding_programs_are_blocked() -> None:
    by_name = zipped(("readme.txt", b"hi"), ("setup.exe", b"anything"))
    assert await verdict(mail(("files.zip", by_name))) == (
        Verdict.QUARANTINE,
        "files.zip/setup.exe: files of type .exe are not allowed",
    )
    renamed = zipped(("photo.jpg", PE))
    assert (await verdict(mail(("photos.zip", renamed))))[1] == (
        "photos.zip/photo.jpg: a Windows program (MZ header)"
    )
    nested = zipped(("inner.zip", zipped(("x.pdf", PE))))
    assert (await verdict(mail(("outer.zip", nested))))[1] == (
        "outer.zip/inner.zip/x.pdf: a Windows program (MZ header)"
    )
    jar = zipped(("META-INF/MANIFEST.MF", b"Main-Class: A\n"), ("A.class", b"\xca\xfe\xba\xbe"))
    assert (await verdict(mail(("report.pdf", jar))))[1] == "report.pdf: a Java archive"
    assert await verdict(mail(("docs.zip", zipped(("a.pdf", PDF), ("b.txt", b"hi"))))) == (
        None,
        "",
    )


async def test_a_forwarded_message_is_looked_into() -> None:
    outer = mail()
    outer.add_attachment(mail(("invoice.pdf", PE)))
    assert (await verdict(outer))[1] == "Files.eml/invoice.pdf: a Windows program (MZ header)"


async def test_ordinary_attachments_pass_and_a_damaged_zip_is_not_an_error() -> None:
    assert await verdict(mail(("minutes.pdf", PDF), ("photo.jpg", b"\xff\xd8\xff\xe0"))) == (
        None,
        "",
    )
    assert await verdict(mail(("broken.zip", b"PK\x03\x04 not really"))) == (None, "")
    # "MZ" inside a file is not a program header.
    assert await verdict(mail(("notes.txt", b"Dear MZ team"))) == (None, "")


async def test_the_extension_list_is_configurable() -> None:
    narrow = AttachmentPolicy(["exe"])
    assert await verdict(mail(("a.js", b"x")), narrow) == (None, "")
    assert (await verdict(mail(("a.EXE", b"x")), narrow))[0] == Verdict.QUARANTINE
    # Sniffing holds whatever the list says.
    assert (await verdict(mail(("a.pdf", PE)), AttachmentPolicy([])))[0] == Verdict.QUARANTINE


def test_the_settings_switch_the_policy_and_clamd_on_and_off() -> None:
    def names(filters: dict[str, object]) -> list[str]:
        settings = load_settings(None, {"filters": {"sender_auth": False, **filters}})
        return [f.name for f in FilterPipeline.from_settings(settings).filters]

    assert names({}) == ["builtin", "attachments"]
    assert names({"attachment_policy": False}) == ["builtin"]
    assert names({"clamd": "unix:/run/clamd.sock"}) == ["builtin", "attachments", "clamav"]
    assert names({"sender_auth": True, "rspamd_url": "http://127.0.0.1:11333"}) == [
        "builtin",
        "rspamd",
        "sender_auth",
        "attachments",
    ]
    sending = FilterPipeline.for_sending(load_settings(None, {}).filters)
    assert [f.name for f in sending.filters] == ["builtin", "attachments"]


async def test_many_blocked_files_are_summed_up() -> None:
    result = await AttachmentPolicy().check(checked(mail(*((f"{n}.exe", b"x") for n in "abcde"))))
    assert result.reasons[0].detail.endswith("; and 2 more")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000), st.sampled_from(["a.zip", "a.pdf", "a.eml", "a.exe"]))
def test_the_policy_never_raises_on_any_bytes(data: bytes, name: str) -> None:
    for content in (data, b"PK\x03\x04" + data, OLE2_MAGIC + data):
        asyncio.run(AttachmentPolicy().check(checked(mail((name, content)))))
