"""Real-world-looking mail to fuzz the MIME ingestion path with, and the
hypothesis strategies that break it: the seeds are what mailers send
(multipart/alternative, nested multipart with attachments, forwarded
messages, encoded-words in many charsets, quoted-printable, 8-bit bodies);
the strategies mutate them the ways broken mailers and attackers do (broken
base64 and quoted-printable, missing or wrong boundaries, huge header
fields, 8-bit garbage, truncation). Shared by tests/proto/test_ingest_fuzz.py,
tests/delivery/test_ingest_fuzz.py and bench/fuzz.py."""

from __future__ import annotations

import base64
import quopri

from hypothesis import strategies as st


def _crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


def encoded_word(text: str, charset: str, encoding: str = "B") -> str:
    data = text.encode(charset)
    if encoding == "B":
        return f"=?{charset}?B?{base64.b64encode(data).decode('ascii')}?="
    body = quopri.encodestring(data, header=True).decode("ascii").replace("\n", "")
    return f"=?{charset}?Q?{body}?="


# Text in the charsets mail really comes in, with a phrase each can encode.
CHARSET_TEXTS = [
    ("utf-8", "Grüße aus Köln — 東京 ☃"),
    ("iso-8859-1", "Café crème à la carte"),
    ("iso-8859-2", "Zażółć gęślą jaźń"),
    ("iso-8859-15", "Prix: 5 €"),
    ("windows-1252", "“smart quotes” – and €"),
    ("windows-1251", "Привет, мир"),
    ("koi8-r", "Съешь же ещё этих булок"),
    ("iso-2022-jp", "会議の議事録"),
    ("shift_jis", "お世話になっております"),
    ("euc-jp", "日本語のメール"),
    ("euc-kr", "회의 일정 안내"),
    ("gb2312", "会议通知"),
    ("gbk", "您好，附件是报告"),
    ("big5", "會議記錄"),
    ("utf-7", "Hi Mom -☺-!"),
    ("iso-8859-7", "Καλημέρα"),
    ("iso-8859-8", "שלום"),
    ("windows-1256", "مرحبا"),
    ("tis-620", "สวัสดี"),
]

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(64))


def _b64(data: bytes) -> str:
    return base64.encodebytes(data).decode("ascii")


ALTERNATIVE = _crlf(
    "Return-Path: <news@shop.example>\n"
    "From: =?utf-8?q?Caf=C3=A9_Shop?= <news@shop.example>\n"
    "To: Alice <alice@example.com>\n"
    "Subject: =?utf-8?B?" + base64.b64encode("Angebote für Sie".encode()).decode() + "?=\n"
    "Date: Tue, 01 Dec 2026 10:00:00 +0100\n"
    "Message-ID: <offer-1@shop.example>\n"
    "MIME-Version: 1.0\n"
    'Content-Type: multipart/alternative; boundary="alt-1"\n'
    "\n"
    "--alt-1\n"
    "Content-Type: text/plain; charset=utf-8\n"
    "Content-Transfer-Encoding: quoted-printable\n"
    "\n"
    "Gr=C3=BC=C3=9Fe, hier sind unsere Angebote: https://shop.example/sale\n"
    "--alt-1\n"
    "Content-Type: text/html; charset=utf-8\n"
    "Content-Transfer-Encoding: base64\n"
    "\n"
    + _b64(
        b'<html><body><p>Gr\xc3\xbc\xc3\x9fe</p><a href="https://shop.example/sale">Sale</a>'
        b"<script>alert(1)</script></body></html>"
    )
    + "--alt-1--\n"
)

NESTED = _crlf(
    "From: Bob Example <bob@example.org>\n"
    "To: alice@example.com, =?iso-8859-1?q?Ren=E9?= <rene@example.net>\n"
    "Cc: carol@example.net\n"
    "Subject: Re: [team] quarterly report\n"
    "In-Reply-To: <report-7@example.org>\n"
    "References: <report-1@example.org> <report-7@example.org>\n"
    "MIME-Version: 1.0\n"
    "Content-Type: multipart/mixed; boundary=outer\n"
    "\n"
    "This is a multi-part message in MIME format.\n"
    "--outer\n"
    "Content-Type: multipart/related; boundary=rel; type=multipart/alternative\n"
    "\n"
    "--rel\n"
    "Content-Type: multipart/alternative; boundary=alt\n"
    "\n"
    "--alt\n"
    "Content-Type: text/plain; charset=iso-8859-1\n"
    "Content-Transfer-Encoding: 8bit\n"
    "\n"
    "See the numbers attached.\n"
    "--alt\n"
    "Content-Type: text/html; charset=us-ascii\n"
    "\n"
    '<p>See the <b>numbers</b> <img src="cid:chart@x"></p>\n'
    "--alt--\n"
    "--rel\n"
    "Content-Type: image/png\n"
    "Content-ID: <chart@x>\n"
    "Content-Transfer-Encoding: base64\n"
    "\n" + _b64(PNG) + "--rel--\n"
    "--outer\n"
    'Content-Type: application/pdf; name="=?utf-8?q?Bericht_Q3_=E2=80=94_final.pdf?="\n'
    "Content-Disposition: attachment; filename*=UTF-8''Bericht%20Q3%20%E2%80%94.pdf\n"
    "Content-Transfer-Encoding: base64\n"
    "\n" + _b64(b"%PDF-1.4\n" + bytes(range(200)) + b"\n%%EOF\n") + "--outer\n"
    "Content-Type: message/rfc822\n"
    "\n"
    "From: dora@example.org\n"
    "Subject: =?iso-2022-jp?B?" + base64.b64encode("会議".encode("iso-2022-jp")).decode() + "?=\n"
    "\n"
    "forwarded body\n"
    "--outer--\n"
    "epilogue\n"
)

# 8-bit headers and body with no charset declared, as old mailers send.
EIGHT_BIT = (
    b"From: J\xf6rg M\xfcller <joerg@example.de>\r\n"
    b"To: alice@example.com\r\n"
    b"Subject: Caf\xe9 \x80 5 \xe4\xbd\xa0\xe5\xa5\xbd\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"Gr\xfc\xdfe \x00\x1b[31m \xff\xfe\xfd\r\n"
)

KOREAN = (
    b"From: =?euc-kr?B?"
    + base64.b64encode("김철수".encode("euc-kr"))
    + b"?= <kim@example.kr>\r\nTo: alice@example.com\r\nSubject: =?ks_c_5601-1987?B?"
    + base64.b64encode("회의 안내".encode("euc-kr"))
    + b"?=\r\nContent-Type: text/plain; charset=ks_c_5601-1987\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\n"
    + base64.encodebytes("다음 주 회의는 월요일입니다.".encode("euc-kr")).replace(b"\n", b"\r\n")
)

SEEDS: list[tuple[str, bytes]] = [
    ("alternative", ALTERNATIVE),
    ("nested", NESTED),
    ("eight-bit", EIGHT_BIT),
    ("korean", KOREAN),
    ("plain", _crlf("From: a@example.org\nTo: alice@example.com\nSubject: hi\n\nhello\n")),
    ("headers-only", _crlf("From: a@example.org\nSubject: no body")),
    ("empty", b""),
]

# -- strategies --------------------------------------------------------------------

_SPECIAL = b"=?;:\"'*%<>()\r\n \t\\-/\x00\x80\xff\x1bBQ"
_BOUNDARY_BREAKS = [
    b"--alt-1",
    b"--outer",
    b"--rel",
    b"boundary=",
    b"Content-Type: multipart/mixed; boundary=\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Transfer-Encoding: quoted-printable\r\n",
    b"=?utf-8?B?",
    b"?=",
    b"=\r\n",
    b"=ZZ",
    b"====",
    b"charset=",
    b"\r\n\r\n",
    b"\r\n.\r\n",
]

mutation = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 10**6), st.sampled_from(list(_SPECIAL))),
    st.tuples(st.just("byte"), st.integers(0, 10**6), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.sampled_from(list(_SPECIAL))),
    st.tuples(st.just("splice"), st.integers(0, 10**6), st.integers(0, len(_BOUNDARY_BREAKS) - 1)),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.integers(1, 64)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("repeat"), st.integers(0, 10**6), st.integers(1, 300)),
)


def mutate(seed: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    data = bytearray(seed)
    for op, position, value in mutations:
        at = position % (len(data) + 1)
        if op in ("set", "byte") and at < len(data):
            data[at] = value
        elif op == "insert":
            data[at:at] = bytes([value])
        elif op == "splice":
            data[at:at] = _BOUNDARY_BREAKS[value]
        elif op == "delete":
            del data[at : at + value]
        elif op == "truncate":
            del data[at:]
        elif op == "repeat":
            data[at:at] = data[at : at + value]
    return bytes(data)


@st.composite
def mutated_mail(draw: st.DrawFn) -> bytes:
    _, seed = draw(st.sampled_from(SEEDS))
    return mutate(seed, draw(st.lists(mutation, min_size=1, max_size=12)))


@st.composite
def encoded_word_mail(draw: st.DrawFn) -> bytes:
    """Encoded-words in many charsets, well-formed or not, in every header
    a reader shows, and a body in one of those charsets."""
    words = []
    for _ in range(draw(st.integers(1, 4))):
        charset, text = draw(st.sampled_from(CHARSET_TEXTS))
        label = draw(st.sampled_from([charset, charset.upper(), "unknown-8bit", "x-bogus", ""]))
        try:
            word = encoded_word(text, charset, draw(st.sampled_from("BQ")))
        except (UnicodeError, LookupError):
            word = text
        word = word.replace(charset, label, 1) if label != charset else word
        if draw(st.booleans()):  # broken: cut, or its padding removed
            word = word[: draw(st.integers(0, len(word)))].rstrip("=")
        words.append(word)
    charset, text = draw(st.sampled_from(CHARSET_TEXTS))
    try:
        body = text.encode(charset)
    except (UnicodeError, LookupError):
        body = text.encode("utf-8")
    cte = draw(st.sampled_from(["8bit", "base64", "quoted-printable", "7bit", "x-unknown"]))
    if cte == "base64":
        body = base64.encodebytes(body)
        if draw(st.booleans()):
            body = body[: draw(st.integers(0, len(body)))] + b"!*\x00"
    elif cte == "quoted-printable":
        body = quopri.encodestring(body)
        if draw(st.booleans()):
            body += b"=Z=\r\n=4"
    head = (
        f"From: {words[0]} <sender@example.org>\r\n"
        f"To: {' '.join(words[1:]) or 'x'} <alice@example.com>\r\n"
        f"Subject: {' '.join(words)}\r\n"
        f"Content-Type: text/plain; charset={charset}\r\n"
        f"Content-Transfer-Encoding: {cte}\r\n\r\n"
    )
    return head.encode("ascii", "surrogateescape") + body


@st.composite
def structural_mail(draw: st.DrawFn) -> bytes:
    """Multipart structures gone wrong: missing, wrong or duplicated
    boundaries, no closing delimiter, deep nesting, huge header fields."""
    depth = draw(st.integers(0, 6))
    boundaries = [f"b{i}" for i in range(depth)]
    declared = [draw(st.sampled_from([b, "", f'"{b}"', b + "x", "b0"])) for b in boundaries]
    parts = []
    for boundary, label in zip(boundaries, declared, strict=True):
        kind = draw(st.sampled_from(["mixed", "alternative", "related", "digest", "signed"]))
        parts.append(f"Content-Type: multipart/{kind}; boundary={label}\r\n\r\n--{boundary}\r\n")
    leaf = draw(
        st.sampled_from(
            [
                "Content-Type: text/plain\r\n\r\nleaf text\r\n",
                "Content-Type: text/html\r\n\r\n<div>" * 50 + "deep</p>\r\n",
                "Content-Type: application/octet-stream; name=a.bin\r\n"
                "Content-Transfer-Encoding: base64\r\n\r\nAAAA%%%%BBBB\r\n",
                "Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner\r\n",
                "",
            ]
        )
    )
    closing = "".join(f"--{b}--\r\n" if draw(st.booleans()) else "" for b in reversed(boundaries))
    huge = draw(st.sampled_from([0, 1, 2]))
    header = "Subject: structure\r\n"
    if huge == 1:
        header += "X-Long: " + "a" * draw(st.integers(1000, 200_000)) + "\r\n"
    elif huge == 2:
        header += "".join(f"X-F{i}: v\r\n" for i in range(draw(st.integers(100, 5000))))
    return (header + "".join(parts) + leaf + closing).encode("utf-8")


def any_mail() -> st.SearchStrategy[bytes]:
    """Every kind of broken mail above, and plain random bytes."""
    return st.one_of(
        mutated_mail(),
        encoded_word_mail(),
        structural_mail(),
        st.binary(max_size=2000),
        st.sampled_from([seed for _, seed in SEEDS]),
    )
