"""proto/mime (parse_message): what a reader is shown of received mail, decoded
exactly, and that no input, however broken, makes it raise."""

from __future__ import annotations

import base64
import re
import time
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage
from email.policy import SMTP

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailfleet.proto.addresses import Address
from mailfleet.proto.compose import sanitize_html
from mailfleet.proto.mime import (
    MAX_DEPTH,
    MAX_PARTS,
    ParsedAttachment,
    ParsedMessage,
    parse_message,
)

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))
PDF = b"%PDF-1.4\n" + bytes(range(255, -1, -1)) + b"\r\n%%EOF\r\n"
DEEP = f"MIME nesting deeper than {MAX_DEPTH} levels; deeper parts were skipped"


def crlf(text: str, charset: str = "utf-8") -> bytes:
    """A message written with "\\n" line ends, sent with CRLF."""
    return text.replace("\n", "\r\n").encode(charset)


def b64(text: str, charset: str) -> str:
    return base64.b64encode(text.encode(charset)).decode("ascii")


def check_types(parsed: ParsedMessage) -> None:
    """The promises every caller relies on, whatever the input."""
    assert isinstance(parsed, ParsedMessage)
    assert isinstance(parsed.subject, str)
    assert "\n" not in parsed.subject and "\r" not in parsed.subject
    assert parsed.sender is None or isinstance(parsed.sender, Address)
    for field in (parsed.to, parsed.cc, parsed.reply_to):
        assert isinstance(field, tuple)
    for address in (*parsed.to, *parsed.cc, *parsed.reply_to, *filter(None, [parsed.sender])):
        assert isinstance(address, Address)
        assert isinstance(address.email, str) and "@" in address.email
        assert isinstance(address.name, str)
        address.email.encode("utf-8")  # no lone surrogates anywhere
        address.name.encode("utf-8")
    for msg_id in (parsed.message_id, parsed.in_reply_to, *parsed.references):
        assert msg_id is None or (msg_id.startswith("<") and msg_id.endswith(">"))
    assert isinstance(parsed.references, tuple)
    assert parsed.date is None or (isinstance(parsed.date, datetime) and parsed.date.tzinfo is UTC)
    assert isinstance(parsed.text, str) and "\r" not in parsed.text and "\x00" not in parsed.text
    parsed.text.encode("utf-8")
    parsed.subject.encode("utf-8")
    assert parsed.html is None or isinstance(parsed.html, str)
    if parsed.html is not None:
        parsed.html.encode("utf-8")
    assert isinstance(parsed.attachments, tuple)
    for attachment in parsed.attachments:
        assert isinstance(attachment, ParsedAttachment)
        assert isinstance(attachment.filename, str) and attachment.filename
        assert "/" not in attachment.filename and "\\" not in attachment.filename
        attachment.filename.encode("utf-8")
        assert attachment.content_type == attachment.content_type.lower()
        assert attachment.content_type.count("/") == 1
        assert isinstance(attachment.data, bytes)
        assert attachment.content_id is None or isinstance(attachment.content_id, str)
        assert isinstance(attachment.inline, bool)
    assert isinstance(parsed.defects, tuple)
    assert all(isinstance(d, str) and d for d in parsed.defects)
    # Internal errors are caught as a last resort; none may happen.
    assert not [d for d in parsed.defects if "failure" in d or "unreadable MIME part" in d]


# -- 1. a complete message -------------------------------------------------------

HTML = (
    '<p>Hello <b>world</b><script>alert("x")</script></p>'
    '<img src="cid:logo@example" onerror="alert(1)" alt="logo">'
)


def full_message() -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = '"Ann Example" <Ann.Example@Mail.EXAMPLE.com>'
    msg["To"] = "bob@example.org, =?utf-8?q?Caf=C3=A9_Owner?= <owner@cafe.example>"
    msg["Cc"] = "Carol <carol@example.net>"
    msg["Reply-To"] = "list@example.org"
    msg["Subject"] = "Quarterly report"
    msg["Message-ID"] = "<report-1@mail.example.com>"
    msg["In-Reply-To"] = "<question-7@example.org>"
    msg["References"] = "<start-1@example.org> <question-7@example.org>"
    msg["Date"] = "Tue, 02 Jan 2024 15:04:05 +0200"
    msg.set_content("Hello world\nsee the report.\n")
    msg.add_alternative(HTML, subtype="html")
    html_part = msg.get_payload()[1]
    html_part.add_related(PNG, maintype="image", subtype="png", cid="<logo@example>")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="report Q1.pdf")
    return msg


def test_full_message() -> None:
    raw = full_message().as_bytes(policy=SMTP)
    parsed = parse_message(raw)
    check_types(parsed)

    assert parsed.subject == "Quarterly report"
    assert parsed.sender == Address("Ann.Example@mail.example.com", "Ann Example")
    assert parsed.to == (
        Address("bob@example.org", ""),
        Address("owner@cafe.example", "Café Owner"),
    )
    assert parsed.cc == (Address("carol@example.net", "Carol"),)
    assert parsed.reply_to == (Address("list@example.org", ""),)
    assert parsed.message_id == "<report-1@mail.example.com>"
    assert parsed.in_reply_to == "<question-7@example.org>"
    assert parsed.references == ("<start-1@example.org>", "<question-7@example.org>")
    assert parsed.date == datetime(2024, 1, 2, 13, 4, 5, tzinfo=UTC)
    assert parsed.date is not None and parsed.date.tzinfo is UTC

    assert parsed.text == "Hello world\nsee the report.\n"
    assert parsed.html == sanitize_html(HTML + "\n")
    assert parsed.html is not None
    assert '<img src="cid:logo@example" alt="logo">' in parsed.html
    for dangerous in ("<script", "alert", "onerror"):
        assert dangerous not in parsed.html

    assert parsed.attachments == (
        ParsedAttachment("image.png", "image/png", PNG, "logo@example", True),
        ParsedAttachment("report Q1.pdf", "application/pdf", PDF, None, False),
    )
    assert parsed.defects == ()


def test_full_message_with_bare_lf_line_ends() -> None:
    parsed = parse_message(full_message().as_bytes())  # default policy: "\n"
    check_types(parsed)
    assert parsed.text == "Hello world\nsee the report.\n"
    assert [a.data for a in parsed.attachments] == [PNG, PDF]


def test_alternative_prefers_last_of_each_kind_and_skips_other_renderings() -> None:
    raw = crlf(
        "Content-Type: multipart/alternative; boundary=ALT\n\n"
        "--ALT\nContent-Type: text/plain\n\nfirst plain\n"
        "--ALT\nContent-Type: text/enriched\n\n<bold>enriched</bold>\n"
        "--ALT\nContent-Type: text/plain\n\nbetter plain\n"
        "--ALT\nContent-Type: text/watch-html\n\n<b>watch</b>\n"
        "--ALT\nContent-Type: text/html\n\n<p>rich</p>\n"
        "--ALT\nContent-Type: text/calendar; method=REQUEST\n\nBEGIN:VCALENDAR\n"
        "--ALT--\n"
    )
    parsed = parse_message(raw)
    check_types(parsed)
    assert parsed.text == "better plain"
    assert parsed.html == "<p>rich</p>"
    assert parsed.attachments == (
        ParsedAttachment("invite.ics", "text/calendar", b"BEGIN:VCALENDAR", None, False),
    )


def test_html_only_mail_derives_text() -> None:
    raw = crlf(
        "Subject: news\nContent-Type: text/html; charset=utf-8\n\n"
        "<html><head><title>Newsletter</title><style>p {color: red}</style></head>"
        "<body><p>Hello <b>there</b> &amp; welcome</p><p>Second</p>"
        "<script>steal()</script></body></html>\n"
    )
    parsed = parse_message(raw)
    check_types(parsed)
    assert parsed.html == "<p>Hello <b>there</b> &amp; welcome</p><p>Second</p>\n"
    assert parsed.text == "Hello there & welcome\n\nSecond"


def test_mixed_bodies_shown_in_order_and_text_files_stay_attachments() -> None:
    raw = crlf(
        "Content-Type: multipart/mixed; boundary=MIX\n\n"
        "preamble is not shown\n"
        "--MIX\nContent-Type: text/plain\n\nHello\n"
        "--MIX\nContent-Type: text/plain\nContent-Disposition: attachment; filename=notes.txt\n\n"
        "file contents\n"
        "--MIX\nContent-Type: image/jpeg\nContent-Disposition: inline\n"
        "Content-Transfer-Encoding: base64\n\n/9j/4AAQ\n"
        "--MIX\nContent-Type: text/plain; charset=us-ascii\n\n-- \nlist footer\n"
        "--MIX--\nepilogue is not shown\n"
    )
    parsed = parse_message(raw)
    check_types(parsed)
    assert parsed.text == "Hello\n-- \nlist footer"
    assert parsed.html is None
    assert parsed.attachments == (
        ParsedAttachment("notes.txt", "text/plain", b"file contents", None, False),
        ParsedAttachment("image.jpg", "image/jpeg", b"\xff\xd8\xff\xe0\x00\x10", None, False),
    )


def test_related_root_named_by_start_and_inline_flags() -> None:
    raw = crlf(
        "Content-Type: multipart/mixed; boundary=OUT\n\n"
        "--OUT\n"
        'Content-Type: multipart/related; boundary=REL; start="<root@x>"\n\n'
        "--REL\nContent-Type: image/gif\nContent-ID: <pic@x>\n"
        "Content-Transfer-Encoding: base64\n\nR0lGODlh\n"
        "--REL\nContent-Type: text/html\nContent-ID: <root@x>\n\n"
        '<p>see <img src="cid:pic@x"></p>\n'
        "--REL\nContent-Type: text/css\nContent-ID: <style@x>\n\np {}\n"
        "--REL--\n"
        "--OUT\nContent-Type: application/octet-stream\n"
        "Content-Disposition: inline; filename=data.bin\nContent-ID: < blob@x >\n\nDATA\n"
        "--OUT\nContent-Type: image/png\nContent-Disposition: attachment\nContent-ID: <att@x>\n\n"
        "PNGDATA\n"
        "--OUT--\n"
    )
    parsed = parse_message(raw)
    check_types(parsed)
    assert parsed.html == '<p>see <img src="cid:pic@x"></p>'
    assert parsed.text == "see"
    assert parsed.attachments == (
        ParsedAttachment("image.gif", "image/gif", b"GIF89a", "pic@x", True),
        ParsedAttachment("attachment.css", "text/css", b"p {}", "style@x", True),
        ParsedAttachment("data.bin", "application/octet-stream", b"DATA", "blob@x", True),
        ParsedAttachment("image.png", "image/png", b"PNGDATA", "att@x", False),
    )


# -- 2. forwarded messages -------------------------------------------------------


def forwarded() -> EmailMessage:
    inner = EmailMessage()
    inner["From"] = "Dora <dora@example.org>"
    inner["To"] = "ann@example.com"
    inner["Subject"] = "Inner subject: plans"
    inner["Message-ID"] = "<inner-1@example.org>"
    inner.set_content("The inner body.\n")
    inner.add_attachment(b"inner file", maintype="application", subtype="zip", filename="in.zip")

    outer = EmailMessage()
    outer["From"] = "ann@example.com"
    outer["To"] = "bob@example.org"
    outer["Subject"] = "Fwd: plans"
    outer.set_content("See below.\n")
    outer.add_attachment(inner)
    return outer


def test_forwarded_message_is_one_attachment() -> None:
    parsed = parse_message(forwarded().as_bytes(policy=SMTP))
    check_types(parsed)
    assert parsed.subject == "Fwd: plans"
    assert parsed.text == "See below.\n"
    assert len(parsed.attachments) == 1  # the inner zip is not flattened into the outer list
    attachment = parsed.attachments[0]
    assert attachment.content_type == "message/rfc822"
    assert attachment.filename == "Inner subject: plans.eml"
    assert attachment.inline is False and attachment.content_id is None

    inner = parse_message(attachment.data)
    check_types(inner)
    assert inner.subject == "Inner subject: plans"
    assert inner.sender == Address("dora@example.org", "Dora")
    assert inner.message_id == "<inner-1@example.org>"
    assert inner.text == "The inner body.\n"
    assert inner.attachments == (
        ParsedAttachment("in.zip", "application/zip", b"inner file", None, False),
    )


def test_forwarded_message_in_base64_is_decoded() -> None:
    # RFC 2046 forbids encoding message/rfc822, some mailers do it anyway; the
    # stdlib then reads the base64 text as a headerless message.
    inner = crlf("Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\nFrom: x@example.org\n\nInner text\n")
    raw = crlf(
        "From: a@example.com\nContent-Type: multipart/mixed; boundary=XX\n\n"
        "--XX\nContent-Type: text/plain\n\nouter\n"
        "--XX\nContent-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n"
        + base64.encodebytes(inner).decode("ascii")
        + "--XX--\n"
    )
    parsed = parse_message(raw)
    check_types(parsed)
    assert parsed.text == "outer"
    (attachment,) = parsed.attachments
    assert attachment.data == inner
    assert attachment.filename == "Grüße.eml"
    assert parse_message(attachment.data).subject == "Grüße"
    assert "message/rfc822 part with base64 encoding" in parsed.defects


def test_forwarded_message_without_subject_and_digest_parts() -> None:
    raw = crlf(
        "Content-Type: multipart/digest; boundary=D\n\n"
        "--D\n\nFrom: a@example.org\n\nfirst digest entry\n"
        "--D\n\nFrom: b@example.org\nSubject: second\n\nsecond digest entry\n"
        "--D--\n"
    )
    parsed = parse_message(raw)
    check_types(parsed)
    assert [(a.filename, a.content_type) for a in parsed.attachments] == [
        ("message.eml", "message/rfc822"),
        ("second.eml", "message/rfc822"),
    ]
    assert parse_message(parsed.attachments[1].data).text == "second digest entry"


# -- 3. charsets and encodings -----------------------------------------------------


def test_iso_2022_jp_subject_and_body() -> None:
    subject = "会議の議事録について"
    body = "お疲れ様です。\n明日の会議は１０時からです。\n"
    raw = crlf(
        "From: =?ISO-2022-JP?B?" + b64("山田太郎", "iso2022_jp") + "?= <yamada@example.jp>\n"
        "Subject: =?ISO-2022-JP?B?" + b64(subject, "iso2022_jp") + "?=\n"
        "MIME-Version: 1.0\nContent-Type: text/plain; charset=ISO-2022-JP\n"
        "Content-Transfer-Encoding: 7bit\n\n"
    ) + body.replace("\n", "\r\n").encode("iso2022_jp")
    parsed = parse_message(raw)
    check_types(parsed)
    assert parsed.subject == subject
    assert parsed.sender == Address("yamada@example.jp", "山田太郎")
    assert parsed.text == body
    assert parsed.defects == ()


def test_windows_1252_body_with_smart_quotes_and_euro() -> None:
    body = "“Smart” quotes — it costs 5 € ‘now’…"
    raw = crlf(
        "Subject: prices\nContent-Type: text/plain; charset=windows-1252\n"
        "Content-Transfer-Encoding: 8bit\n\n"
    ) + body.encode("cp1252")
    parsed = parse_message(raw)
    assert parsed.text == body
    assert parsed.defects == ()


def test_latin1_label_is_read_as_windows_1252() -> None:
    # Mailers label windows-1252 text "iso-8859-1"; browsers read it as 1252 too.
    raw = crlf("Content-Type: text/plain; charset=latin1\n\n") + "“quoted” €".encode("cp1252")
    assert parse_message(raw).text == "“quoted” €"


def test_8bit_utf8_body_without_charset() -> None:
    body = "Grüße aus Köln — 😀\n"
    raw = crlf("Subject: hi\nContent-Transfer-Encoding: 8bit\n\n" + body)
    parsed = parse_message(raw)
    check_types(parsed)
    assert parsed.text == body
    assert parsed.defects == ("text/plain body is not valid ASCII; read as utf-8",)


def test_quoted_printable_utf8_body() -> None:
    raw = crlf(
        "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n"
        "Gr=C3=BC=C3=9Fe, this line is soft=\n-wrapped and =E2=82=AC=3D5\n"
    )
    assert parse_message(raw).text == "Grüße, this line is soft-wrapped and €=5\n"


def test_smtputf8_addresses_and_subject() -> None:
    raw = crlf(
        "From: Jörg <jörg@Bücher.example>\n"
        'To: "Zoë, the editor" <zoë@例え.テスト>, 用户@例子.广告\n'
        "Subject: Grüße, Jörg\n\nhi\n"
    )
    parsed = parse_message(raw)
    check_types(parsed)
    assert parsed.sender == Address("jörg@bücher.example", "Jörg")
    assert parsed.to == (
        Address("zoë@例え.テスト", "Zoë, the editor"),
        Address("用户@例子.广告", ""),
    )
    assert parsed.subject == "Grüße, Jörg"
    assert parsed.defects == ()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("=?utf-8?B?" + b64("Grüße 😀", "utf-8") + "?=", "Grüße 😀"),
        ("=?UTF-8?Q?Caf=C3=A9_cr=C3=A8me?=", "Café crème"),
        ("=?iso-8859-1?q?Caf=E9?= au lait", "Café au lait"),
        ("=?ISO-8859-15?Q?Prix_=A4?=", "Prix €"),
        ("=?windows-1252?Q?=93quoted=94_=80?=", "“quoted” €"),
        ("=?koi8-r?B?" + b64("Привет, мир", "koi8-r") + "?=", "Привет, мир"),
        ("=?windows-1251?B?" + b64("Счёт №5", "cp1251") + "?=", "Счёт №5"),
        ("=?gb2312?B?" + b64("你好，世界", "gb2312") + "?=", "你好，世界"),
        ("=?GBK?B?" + b64("镕基", "gbk") + "?=", "镕基"),
        ("=?big5?B?" + b64("臺灣", "big5") + "?=", "臺灣"),
        ("=?euc-kr?B?" + b64("안녕하세요", "euc_kr") + "?=", "안녕하세요"),
        ("=?shift_jis?B?" + b64("日本語", "shift_jis") + "?=", "日本語"),
        (
            "=?iso-8859-7?Q?" + "".join(f"={b:02X}" for b in "Γειά".encode("iso8859_7")) + "?=",
            "Γειά",
        ),
        # whitespace between adjacent encoded-words is dropped (RFC 2047 6.2)...
        ("=?utf-8?Q?a?= =?utf-8?Q?b?=\n =?utf-8?Q?c?=", "abc"),
        # ...but kept next to ordinary text, and whitespace is folded to one line
        ("Re:  =?utf-8?Q?x?=  and\n\tmore", "Re: x and more"),
        # a character split across two words decodes whole
        ("=?utf-8?B?4oI=?= =?utf-8?B?rA==?=", "€"),  # E2 82 | AC
        ("=?utf-8?Q?=F0=9F?= =?utf-8?Q?=98=80!?=", "😀!"),
        # language suffix (RFC 2231 section 5)
        ("=?utf-8*de?Q?=C3=9Cber?=", "Über"),
        ("=?x-unknown?Q?Gr=C3=BC=C3=9Fe?=", "Grüße"),
        ("no encoding at all", "no encoding at all"),
        ("=?utf-8?Q?unterminated", "=?utf-8?Q?unterminated"),
    ],
)
def test_rfc2047_subjects(header: str, expected: str) -> None:
    parsed = parse_message(crlf(f"Subject: {header}\n\nbody"))
    check_types(parsed)
    assert parsed.subject == expected


def test_rfc2047_gb2312_label_reads_gbk_superset() -> None:
    # Mailers label GBK text "gb2312"; "镕" is only in GBK.
    parsed = parse_message(crlf("Subject: =?gb2312?B?" + b64("朱镕基", "gbk") + "?=\n\n"))
    assert parsed.subject == "朱镕基"


@pytest.mark.parametrize(
    ("disposition", "expected"),
    [
        ("attachment; filename*=UTF-8''%E2%82%AC%20rates.pdf", "€ rates.pdf"),
        (
            "attachment;\n filename*0*=UTF-8''%E2%82%AC%20very%20;\n"
            ' filename*1*=long%20name;\n filename*2=".pdf"',
            "€ very long name.pdf",
        ),
        ('attachment; filename*1="b.pdf"; filename*0="a"', "ab.pdf"),
        ("attachment; filename*=iso-8859-1'fr'r%E9sum%E9.pdf", "résumé.pdf"),
        ("attachment; filename*=ks_c_5601-1987''%BE%C8%B3%E7.txt", "안녕.txt"),
        ("attachment; filename*=''plain.pdf; filename=ignored.pdf", "plain.pdf"),
        ('attachment; filename="=?utf-8?B?' + b64("résumé final.doc", "utf-8") + '?="', None),
        ('attachment; filename="=?iso-8859-1?Q?Stra=DFe.txt?="', "Straße.txt"),
        ('attachment; filename="a \\"quoted\\" name.txt"', 'a "quoted" name.txt'),
        ('attachment; filename="../../etc/passwd"', "passwd"),
        ('attachment; filename="C:\\Users\\x\\evil.exe"', "evil.exe"),
        ('attachment; filename="bad\x01name\x7f.pdf"', "badname.pdf"),
        ('attachment; filename="invoice\u202efdp.exe"', "invoicefdp.exe"),
        ("attachment; filename=unquoted name.pdf", "unquoted name.pdf"),
        ('attachment; filename=".."', "attachment.pdf"),
        ("attachment", "attachment.pdf"),
    ],
)
def test_attachment_filenames(disposition: str, expected: str | None) -> None:
    raw = crlf(
        "Content-Type: multipart/mixed; boundary=B\n\n"
        "--B\nContent-Type: text/plain\n\nbody\n"
        f"--B\nContent-Type: application/pdf\nContent-Disposition: {disposition}\n\nPDF\n"
        "--B--\n"
    )
    parsed = parse_message(raw)
    check_types(parsed)
    assert parsed.text == "body"
    (attachment,) = parsed.attachments
    assert attachment.filename == (expected or "résumé final.doc")
    assert attachment.data == b"PDF"


def test_filename_from_content_type_name_and_derived_names() -> None:
    raw = crlf(
        "Content-Type: multipart/mixed; boundary=B\n\n"
        "--B\nContent-Type: application/vnd.ms-excel; name*=utf-8''%C3%9Cbersicht.xls\n\nX\n"
        '--B\nContent-Type: image/png; name="=?utf-8?q?Bild_=C3=A4.png?="\n\nP\n'
        "--B\nContent-Type: application/octet-stream\n\nO\n"
        "--B\nContent-Type: audio/mpeg\n\nM\n"
        "--B\nContent-Type: bogus\nContent-Disposition: attachment\n\nZ\n"
        "--B--\n"
    )
    parsed = parse_message(raw)
    check_types(parsed)
    assert [(a.filename, a.content_type) for a in parsed.attachments] == [
        ("Übersicht.xls", "application/vnd.ms-excel"),
        ("Bild ä.png", "image/png"),
        ("attachment.bin", "application/octet-stream"),
        ("audio.mp3", "audio/mpeg"),
        ("attachment.bin", "application/octet-stream"),
    ]
    assert parsed.text == ""


@pytest.mark.parametrize("label", ["euc-kr", "ks_c_5601-1987", "KS_C_5601-1987", "cp949"])
def test_korean_text(label: str) -> None:
    # "똠" and "햏" exist only in the Microsoft superset (cp949) that mailers
    # mean by ks_c_5601-1987; a strict EUC-KR decoder fails on them.
    text = "안녕하세요. 똠방각하 햏\n"
    raw = crlf(
        f"Subject: =?{label}?B?" + b64("회의 안내 똠", "cp949") + "?=\n"
        f"Content-Type: text/plain; charset={label}\nContent-Transfer-Encoding: base64\n\n"
    ) + base64.encodebytes(text.encode("cp949"))
    parsed = parse_message(raw)
    check_types(parsed)
    assert parsed.subject == "회의 안내 똠"
    assert parsed.text == text
    assert parsed.defects == ()


@pytest.mark.parametrize(
    ("label", "text", "codec"),
    [
        ("utf8", "Grüße", "utf-8"),
        ("UTF-8", "Grüße", "utf-8"),
        ('"utf-8"', "Grüße", "utf-8"),
        ("latin1", "Straße", "latin-1"),
        ("iso-8859-2", "Zażółć gęślą", "iso8859_2"),
        ("koi8-r", "Съешь же ещё", "koi8_r"),
        ("windows-1251", "Съешь же ещё", "cp1251"),
        ("gb2312", "简体中文", "gb2312"),
        ("big5", "繁體中文", "big5"),
        ("shift_jis", "ｶﾀｶﾅと漢字", "shift_jis"),
        ("euc-jp", "日本語のテキスト", "euc_jp"),
        ("iso-2022-jp", "ｶﾀｶﾅ", "iso2022_jp_ext"),  # half-width kana: an extension
        ("utf-16", "wide text", "utf-16"),
    ],
)
def test_charset_labels(label: str, text: str, codec: str) -> None:
    raw = crlf(f"Content-Type: text/plain; charset={label}\n\n") + text.encode(codec)
    parsed = parse_message(raw)
    assert parsed.text == text
    assert parsed.defects == ()


def test_8bit_header_bytes_not_utf8_read_as_windows_1252() -> None:
    raw = b"From: J\xf6rg M\xfcller <joerg@example.de>\r\nSubject: Caf\xe9 \x80 5\r\n\r\nbody"
    parsed = parse_message(raw)
    check_types(parsed)
    assert parsed.sender == Address("joerg@example.de", "Jörg Müller")
    assert parsed.subject == "Café € 5"
    assert "subject header has 8-bit bytes that are not UTF-8; read as windows-1252" in (
        parsed.defects
    )


def test_html_charset_from_meta_tag() -> None:
    raw = crlf("Content-Type: text/html\n\n<html><head><meta charset='koi8-r'></head><body>")
    raw += "Привет".encode("koi8-r") + b"</body></html>"
    parsed = parse_message(raw)
    assert parsed.html == "Привет"
    assert parsed.text == "Привет"


# -- addresses, identifiers, dates ---------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Ann <Ann@Example.COM>", [Address("Ann@example.com", "Ann")]),
        ('"Doe, John" <john@example.com>', [Address("john@example.com", "Doe, John")]),
        ("Doe, John <john@example.com>", [Address("john@example.com", "Doe, John")]),
        ("john@example.com (John Doe)", [Address("john@example.com", "John Doe")]),
        ('"john doe"@example.com', [Address('"john doe"@example.com', "")]),
        (
            "Team: a@example.com, B <b@example.com>;, c@example.com",
            [
                Address("a@example.com", ""),
                Address("b@example.com", "B"),
                Address("c@example.com", ""),
            ],
        ),
        ("undisclosed-recipients:;", []),
        (
            "=?utf-8?q?J=C3=B6rg?= <j@example.com>, =?iso-8859-1?q?Ren=E9?= <r@example.com>",
            [Address("j@example.com", "Jörg"), Address("r@example.com", "René")],
        ),
        (
            '"=?utf-8?B?' + b64("Zoë", "utf-8") + '?=" <z@example.com>',
            [Address("z@example.com", "Zoë")],
        ),
        ("<@relay.example:route@example.com>", [Address("route@example.com", "")]),
        ("Name  <  spaced@example.com  >", [Address("spaced@example.com", "Name")]),
        ("Bare Name bare@example.com", [Address("bare@example.com", "Bare Name")]),
        ("<mailto:m@example.com>", [Address("m@example.com", "")]),
        (
            "garbage, <>, @, x@, <no-at>, ok@example.com, Bob <bob@exa,mple.com>",
            [Address("ok@example.com", "")],
        ),
        ("", []),
    ],
)
def test_address_headers(header: str, expected: list[Address]) -> None:
    parsed = parse_message(crlf(f"From: {header}\nTo: {header}\n\n"))
    check_types(parsed)
    assert list(parsed.to) == expected
    assert parsed.sender == (expected[0] if expected else None)


def test_garbage_addresses_are_recorded() -> None:
    parsed = parse_message(crlf("To: garbage, ok@example.com, x@\n\n"))
    assert parsed.to == (Address("ok@example.com", ""),)
    assert parsed.defects == (
        "unparsable address in to: 'garbage'",
        "unparsable address in to: 'x@'",
    )


def test_missing_headers() -> None:
    parsed = parse_message(b"\r\nJust a body.\r\n")
    check_types(parsed)
    assert parsed.subject == ""
    assert parsed.sender is None
    assert parsed.to == parsed.cc == parsed.reply_to == ()
    assert parsed.message_id is None and parsed.in_reply_to is None
    assert parsed.references == ()
    assert parsed.date is None
    assert parsed.text == "Just a body.\n"
    assert parsed.html is None and parsed.attachments == ()


def test_message_ids() -> None:
    raw = crlf(
        "Message-ID: bare-id@example.com\n"
        "In-Reply-To: Your message of Monday <first@example.com> <second@example.com>\n"
        "References: <a@example.com> (comment) <b@\n example.com>\n"
        " <c@example.com> <a@example.com>\n"
        "\n"
    )
    parsed = parse_message(raw)
    assert parsed.message_id == "<bare-id@example.com>"
    assert parsed.in_reply_to == "<first@example.com>"
    assert parsed.references == ("<a@example.com>", "<b@example.com>", "<c@example.com>")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Tue, 02 Jan 2024 15:04:05 +0200", datetime(2024, 1, 2, 13, 4, 5, tzinfo=UTC)),
        ("2 Jan 2024 15:04:05 -0500", datetime(2024, 1, 2, 20, 4, 5, tzinfo=UTC)),
        ("Tue, 02 Jan 2024 15:04:05 -0000", datetime(2024, 1, 2, 15, 4, 5, tzinfo=UTC)),
        ("Tue, 02 Jan 2024 15:04:05 GMT", datetime(2024, 1, 2, 15, 4, 5, tzinfo=UTC)),
        ("Tue, 02 Jan 24 15:04:05 EST", datetime(2024, 1, 2, 20, 4, 5, tzinfo=UTC)),
        ("not a date", None),
        ("Tue, 02 Jan 99999 15:04:05 +0000", None),
    ],
)
def test_dates(header: str, expected: datetime | None) -> None:
    parsed = parse_message(crlf(f"Date: {header}\n\n"))
    check_types(parsed)
    assert parsed.date == expected
    if expected is None:
        assert parsed.defects == (f"unparsable Date {header!r}",)
    else:
        assert parsed.date is not None and parsed.date.utcoffset() == timedelta(0)


def test_date_is_converted_not_relabelled() -> None:
    parsed = parse_message(crlf("Date: Tue, 02 Jan 2024 23:30:00 +0530\n\n"))
    expected = datetime(2024, 1, 2, 23, 30, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    assert parsed.date == expected
    assert parsed.date is not None and parsed.date.hour == 18


# -- 4. broken input -------------------------------------------------------------


def test_unknown_charset_falls_back_to_utf8_then_windows_1252() -> None:
    raw = crlf("Content-Type: text/plain; charset=x-made-up\n\n") + "Grüße €".encode()
    parsed = parse_message(raw)
    check_types(parsed)
    assert parsed.text == "Grüße €"
    assert "unknown charset 'x-made-up' in text/plain body" in parsed.defects

    raw = crlf("Content-Type: text/plain; charset=x-made-up\n\n") + "Grüße €".encode("cp1252")
    parsed = parse_message(raw)
    assert parsed.text == "Grüße €"
    assert "text/plain body is not valid x-made-up; read as windows-1252" in parsed.defects


def test_wrong_charset_label() -> None:
    # Labelled UTF-8, written in windows-1252: read as 1252, not with U+FFFD.
    raw = crlf("Content-Type: text/plain; charset=utf-8\n\n") + "naïve café".encode("cp1252")
    parsed = parse_message(raw)
    assert parsed.text == "naïve café"
    assert parsed.defects == ("text/plain body is not valid utf-8; read as windows-1252",)
    # Real UTF-8 with one damaged byte: keep the UTF-8, mark the damage.
    text = "日本語のテキストです。よろしくお願いします"
    raw = crlf("Content-Type: text/plain; charset=utf-8\n\n") + text.encode()[:-1]
    parsed = parse_message(raw)
    assert parsed.text == text[:-1] + "\ufffd"
    assert parsed.defects == ("text/plain body has bytes that are not valid utf-8; replaced",)


def test_windows_1252_undefined_bytes_never_fail() -> None:
    raw = (
        crlf("Content-Type: text/plain; charset=windows-1252\n\n") + b"a\x81b\x8d\x8f\x90\x9dc\x80"
    )
    parsed = parse_message(raw)
    check_types(parsed)
    assert parsed.text == "a\x81b\x8d\x8f\x90\x9dc€"


def test_truncated_base64() -> None:
    raw = crlf(
        "Content-Type: multipart/mixed; boundary=B\n\n"
        "--B\nContent-Type: text/plain\nContent-Transfer-Encoding: base64\n\nSGVsbG8gd29ybGQ\n"
        "--B\nContent-Type: application/pdf\nContent-Transfer-Encoding: base64\n\n"
        + base64.b64encode(PDF).decode("ascii")[:101]
        + "\n--B--\n"
    )
    parsed = parse_message(raw)
    check_types(parsed)
    assert parsed.text == "Hello world"
    (attachment,) = parsed.attachments
    assert attachment.data == PDF[:75]
    assert "truncated or damaged base64 in base64 part" in parsed.defects


def test_multipart_without_boundary_is_read_as_text() -> None:
    parsed = parse_message(crlf("Content-Type: multipart/mixed\n\nthe body text\n"))
    check_types(parsed)
    assert parsed.text == "the body text\n"
    assert "no boundary in multipart" in parsed.defects


def test_unterminated_multipart() -> None:
    raw = crlf(
        "Subject: cut\nContent-Type: multipart/mixed; boundary=B\n\n"
        "--B\nContent-Type: text/plain\n\nfirst part\n"
        "--B\nContent-Type: application/pdf\nContent-Disposition: attachment; filename=a.pdf\n"
        "Content-Transfer-Encoding: base64\n\nJVBERi0x"
    )
    parsed = parse_message(raw)
    check_types(parsed)
    assert parsed.subject == "cut"
    assert parsed.text == "first part"
    assert parsed.attachments == (
        ParsedAttachment("a.pdf", "application/pdf", b"%PDF-1", None, False),
    )
    assert "close boundary not found" in parsed.defects


def test_start_boundary_never_found() -> None:
    parsed = parse_message(crlf("Content-Type: multipart/mixed; boundary=B\n\nno parts here\n"))
    check_types(parsed)
    assert parsed.text == "no parts here\n"
    assert "start boundary not found" in parsed.defects


def test_header_with_8bit_garbage() -> None:
    raw = (
        b"From: \xff\xfe\x80 <a@example.com>\r\n"
        b"Subject: ok \xc3\x28 \x81\r\n"
        b"To: \xff@\xfe\r\n\r\nbody"
    )
    parsed = parse_message(raw)
    check_types(parsed)
    assert parsed.sender == Address("a@example.com", "ÿþ€")
    assert parsed.subject == "ok Ã("
    assert parsed.to == (Address("ÿ@þ", ""),)
    assert parsed.text == "body"
    assert "from header has 8-bit bytes that are not UTF-8; read as windows-1252" in (
        parsed.defects
    )


def test_no_headers_at_all() -> None:
    parsed = parse_message(b"This is not a mail, just text.\nSecond line\n")
    check_types(parsed)
    assert parsed.subject == ""
    assert parsed.sender is None
    assert parsed.text == "This is not a mail, just text.\nSecond line\n"
    assert parsed.defects == ("missing header body separator",)


def test_empty_input() -> None:
    parsed = parse_message(b"")
    check_types(parsed)
    # No Content-Type: an (empty) text/plain body, RFC 2045 section 5.2.
    empty = ParsedMessage("", None, (), (), (), None, None, (), None, "", None, (), (), True)
    assert parsed == empty


def nested(depth: int, inner: str = "Content-Type: text/plain\n\nDEEP\n") -> str:
    opening = "".join(
        f'Content-Type: multipart/mixed; boundary="b{i}"\n\n--b{i}\n' for i in range(depth)
    )
    closing = "".join(f"\n--b{i}--\n" for i in reversed(range(depth)))
    return opening + inner + closing


def test_200_deep_multipart() -> None:
    parsed = parse_message(crlf("Subject: deep\n" + nested(200)))
    check_types(parsed)
    assert parsed.subject == "deep"
    assert parsed.text == ""  # below the limit: not read
    assert parsed.defects == (DEEP,)


def test_deep_branch_does_not_hide_later_parts() -> None:
    raw = crlf(
        "Subject: s\nContent-Type: multipart/mixed; boundary=TOP\n\n"
        "--TOP\nContent-Type: text/plain\n\nhello\n"
        "--TOP\n" + nested(300) + "\n"
        "--TOP\nContent-Type: application/pdf\n"
        "Content-Disposition: attachment; filename=after.pdf\n\nPDF\n--TOP--\n"
    )
    parsed = parse_message(raw)
    check_types(parsed)
    assert parsed.text == "hello"
    assert parsed.attachments == (
        ParsedAttachment("after.pdf", "application/pdf", b"PDF", None, False),
    )
    assert DEEP in parsed.defects


def test_nesting_within_the_limit_is_read() -> None:
    parsed = parse_message(crlf(nested(MAX_DEPTH)))
    assert parsed.text == "DEEP\n"
    assert parsed.defects == ()


def test_absurd_nesting_is_bounded_in_time() -> None:
    # The stdlib parser alone raises RecursionError near 1000 levels and is
    # quadratic in depth before that.
    for raw in (
        crlf(nested(5000)),
        crlf("Subject: x\nContent-Type: message/rfc822\n\n" * 5000 + "Subject: bottom\n\nbody"),
    ):
        started = time.monotonic()
        parsed = parse_message(raw)
        assert time.monotonic() - started < 10
        check_types(parsed)
        assert DEEP in parsed.defects


def test_forward_chain_keeps_the_outer_subject() -> None:
    raw = crlf("".join(f"Subject: level {i}\nContent-Type: message/rfc822\n\n" for i in range(3)))
    raw += crlf("Subject: bottom\n\nthe end")
    parsed = parse_message(raw)
    check_types(parsed)
    assert parsed.subject == "level 0"
    (attachment,) = parsed.attachments
    assert attachment.filename == "level 1.eml"
    assert parse_message(attachment.data).attachments[0].filename == "level 2.eml"


def test_part_limit() -> None:
    parts = "".join(
        f"--B\nContent-Type: text/plain\nContent-Disposition: attachment; filename=f{i}.txt"
        f"\n\n{i}\n"
        for i in range(MAX_PARTS + 50)
    )
    parsed = parse_message(
        crlf("Content-Type: multipart/mixed; boundary=B\n\n" + parts + "--B--\n")
    )
    check_types(parsed)
    # the message itself, the multipart, is the first part
    assert len(parsed.attachments) == MAX_PARTS - 1
    assert parsed.attachments[-1].filename == f"f{MAX_PARTS - 2}.txt"
    assert f"more than {MAX_PARTS} MIME parts; the rest were skipped" in parsed.defects


def test_bare_lf_and_bare_cr_line_ends() -> None:
    raw = (
        b"Subject: lf\nContent-Type: multipart/alternative; boundary=Z\n\n"
        b"--Z\nContent-Type: text/plain\n\nline1\nline2\n"
        b"--Z\nContent-Type: text/html\n\n<p>x</p>\n--Z--\n"
    )
    parsed = parse_message(raw)
    check_types(parsed)
    assert (parsed.subject, parsed.text, parsed.html) == ("lf", "line1\nline2", "<p>x</p>")

    parsed = parse_message(b"Subject: cr\rX-Other: y\r\rline1\rline2\r\nline3")
    check_types(parsed)
    assert (parsed.subject, parsed.text) == ("cr", "line1\nline2\nline3")


def test_nul_bytes() -> None:
    raw = b"Subject: a\x00b\r\nFrom: x\x00y@example.com\r\n\r\nbo\x00dy\r\n"
    parsed = parse_message(raw)
    check_types(parsed)
    assert parsed.subject == "ab"
    assert parsed.sender == Address("xy@example.com", "")
    assert parsed.text == "body\n"
    assert "NUL characters removed from the body" in parsed.defects
    assert "NUL characters removed from the subject header" in parsed.defects


def test_content_type_that_crashes_the_stdlib_header_parser() -> None:
    # email.policy.default raises IndexError on this Content-Type while
    # splitting the structure.
    raw = b"Content-Type: ,=? B(:)[=?utf-8?q??==?utf-8?q?[=?cb0;-*\r\nSubject: s\r\n\r\nbody"
    parsed = parse_message(raw)
    check_types(parsed)
    assert (parsed.subject, parsed.text) == ("s", "body")
    assert parsed.defects == ("invalid Content-Type ',=? b[=?utf-8?q??==?utf-8?q?[=?cb0'",)


def test_huge_parameter_list_is_linear() -> None:
    # The default policy's header parser takes seconds on this.
    raw = (
        b"Content-Type: text/plain; "
        + b"a;" * 200_000
        + b"charset=utf-8\r\n\r\nGr\xc3\xbc\xc3\x9fe"
    )
    started = time.monotonic()
    parsed = parse_message(raw)
    assert time.monotonic() - started < 5
    assert parsed.text == "Grüße"


def test_deeply_nested_html_is_cut_not_stalled() -> None:
    # The sanitizer's HTML parser is quadratic in element nesting.
    raw = crlf("Content-Type: text/html\n\n<p>start</p>" + "<div>" * 100_000 + "end")
    started = time.monotonic()
    parsed = parse_message(raw)
    assert time.monotonic() - started < 10
    check_types(parsed)
    assert parsed.text.startswith("start")
    assert "HTML body nested too deeply; cut short" in parsed.defects


def test_unknown_transfer_encoding_and_uuencode() -> None:
    raw = crlf(
        "Content-Type: multipart/mixed; boundary=B\n\n"
        "--B\nContent-Type: text/plain\nContent-Transfer-Encoding: x-weird\n\nas is\n"
        "--B\nContent-Type: application/octet-stream; name=u.bin\n"
        "Content-Transfer-Encoding: x-uuencode\n\nbegin 644 u.bin\n#0V%T\n`\nend\n"
        "--B--\n"
    )
    parsed = parse_message(raw)
    check_types(parsed)
    assert parsed.text == "as is"
    assert parsed.attachments == (
        ParsedAttachment("u.bin", "application/octet-stream", b"Cat", None, False),
    )
    assert "unknown Content-Transfer-Encoding 'x-weird'; kept as is" in parsed.defects


def test_utf7_lone_surrogates_are_replaced() -> None:
    parsed = parse_message(crlf("Content-Type: text/plain; charset=utf-7\n\n+2AA-abc"))
    check_types(parsed)
    assert parsed.text == "\ufffdabc"


# -- 5. properties -----------------------------------------------------------------

SEEDS = [
    full_message().as_bytes(policy=SMTP),
    forwarded().as_bytes(),
    crlf("Subject: nested\n" + nested(3)),
]
PROPERTY = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@PROPERTY
@given(st.binary(max_size=2000))
def test_never_raises_on_any_bytes(raw: bytes) -> None:
    check_types(parse_message(raw))


SPECIAL = b"=?;:\"'*%<>()\r\n \t\\-/\x00\x80\xff\x1bBQ"
_mutation = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 10**6), st.sampled_from(list(SPECIAL))),
    st.tuples(st.just("byte"), st.integers(0, 10**6), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.sampled_from(list(SPECIAL))),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.integers(1, 64)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("repeat"), st.integers(0, 10**6), st.integers(1, 300)),
)


@PROPERTY
@given(st.sampled_from(SEEDS), st.lists(_mutation, min_size=1, max_size=12))
def test_never_raises_on_mutated_mail(seed: bytes, mutations: list[tuple[str, int, int]]) -> None:
    data = bytearray(seed)
    for op, position, value in mutations:
        at = position % (len(data) + 1)
        if op in ("set", "byte") and at < len(data):
            data[at] = value
        elif op == "insert":
            data[at:at] = bytes([value])
        elif op == "delete":
            del data[at : at + value]
        elif op == "truncate":
            del data[at:]
        elif op == "repeat":
            data[at:at] = data[at : at + value]
    check_types(parse_message(bytes(data)))


_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from("\n\t "))


@PROPERTY
@given(_TEXT.filter(lambda t: len(t) <= 200), _TEXT, st.lists(_TEXT.filter(bool), max_size=3))
def test_built_messages_round_trip(subject: str, body: str, names: list[str]) -> None:
    """Whatever text a sender's mailer encodes, the reader gets back."""
    subject = subject.replace("\n", " ")
    try:
        msg = EmailMessage()
        msg["Subject"] = subject
        msg.set_content(body)
        for index, name in enumerate(names):
            msg.add_attachment(
                bytes([index]) * 3, maintype="application", subtype="octet-stream", filename=name
            )
        raw = msg.as_bytes(policy=SMTP)
    except Exception:
        return  # text the stdlib itself refuses to write
    parsed = parse_message(raw)
    check_types(parsed)
    assert parsed.subject == re.sub(r"[ \t]+", " ", subject).strip()
    # set_content ends every line, the last included, with a line end.
    lines = re.split(r"\r\n|\r|\n", body)
    if lines[-1] == "":
        lines.pop()
    assert parsed.text == ("".join(line + "\n" for line in lines) or "\n")
    assert [a.data for a in parsed.attachments] == [bytes([i]) * 3 for i in range(len(names))]
