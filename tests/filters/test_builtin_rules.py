"""The built-in spam rules and the pipeline's verdict, on mails as parsed
from their bytes (no server): each rule fires on what it names and stays
quiet on an ordinary mail."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailfleet.filters import FilterResult, FilterUnavailable, MailToCheck, Reason, Verdict
from mailfleet.filters.pipeline import FilterPipeline
from mailfleet.filters.rules import GTUBE, BuiltinRules
from mailfleet.proto.mime import parse_message


def mail(
    *,
    subject: str = "Lunch on Friday",
    body: str = "Shall we meet at noon?\n",
    html: str | None = None,
    sender: str = "Ann Example <ann@example.org>",
    headers: dict[str, str] | None = None,
    dated: bool = True,
    attachments: tuple[tuple[str, bytes], ...] = (),
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = "bob@example.com"
    message["Subject"] = subject
    if dated:
        message["Date"] = format_datetime(datetime.now(UTC))
        message["Message-ID"] = make_msgid(domain="example.org")
    for name, value in (headers or {}).items():
        message[name] = value
    if html is not None and body == "":
        message.set_content(html, subtype="html")
    else:
        message.set_content(body)
        if html is not None:
            message.add_alternative(html, subtype="html")
    for filename, data in attachments:
        message.add_attachment(
            data, maintype="application", subtype="octet-stream", filename=filename
        )
    return message


def checked(message: EmailMessage) -> MailToCheck:
    raw = message.as_bytes()
    return MailToCheck(
        raw=raw,
        parsed_message=parse_message(raw),
        mail_from="ann@example.org",
        recipients=("bob@example.com",),
        direction="in",
    )


async def names(message: EmailMessage) -> set[str]:
    result = await BuiltinRules().check(checked(message))
    assert result.score == pytest.approx(sum(r.score for r in result.reasons))
    return {r.name for r in result.reasons}


async def test_an_ordinary_mail_fires_nothing() -> None:
    assert await names(mail()) == set()
    assert await names(mail(html="<p>Shall we meet at <b>noon</b>?</p>")) == set()


async def test_gtube() -> None:
    assert "GTUBE" in await names(mail(body=f"test\n{GTUBE.decode()}\n"))


async def test_missing_date_and_message_id() -> None:
    assert await names(mail(dated=False)) == {"MISSING_DATE", "MISSING_MID"}


async def test_a_display_name_that_shows_another_address() -> None:
    disguised = mail(sender='"support@bank.example" <x@elsewhere.example>')
    assert "FROM_NAME_HAS_OTHER_ADDRESS" in await names(disguised)
    honest = mail(sender='"ann@example.org" <ann@example.org>')
    assert "FROM_NAME_HAS_OTHER_ADDRESS" not in await names(honest)
    replies = mail(headers={"Reply-To": "collect@elsewhere.example"})
    assert "REPLYTO_DOMAIN_DIFFERS" in await names(replies)


async def test_a_shouting_subject() -> None:
    assert "SUBJ_ALL_CAPS" in await names(mail(subject="FREE MONEY WAITING NOW!!!"))
    assert "SUBJ_ALL_CAPS" not in await names(mail(subject="RE: FYI"))  # too short to shout


async def test_html_only_and_hidden_text() -> None:
    assert await names(mail(body="", html="<p>Hello</p>")) == {"MIME_HTML_ONLY"}
    hidden = '<p>Buy now</p><div style="display: none">lorem ipsum dolor sit</div>'
    assert await names(mail(body="", html=hidden)) == {"MIME_HTML_ONLY", "HTML_HIDDEN_TEXT"}
    # With a text part of its own, hidden preheaders are common and harmless.
    assert await names(mail(body="Buy now", html=hidden)) == set()


async def test_shortened_and_ip_literal_links() -> None:
    assert "URL_SHORTENER" in await names(mail(body="See https://bit.ly/3xYz now\n"))
    found = await names(mail(body="", html='<a href="http://192.0.2.7/login">log in</a>'))
    assert "URL_IP_LITERAL" in found
    assert await names(mail(body="Our site: https://example.org/news\n")) == set()


async def test_attachment_types_are_left_to_the_attachment_policy() -> None:
    # One place decides on them (filters/attachments.py): no score here too.
    assert await names(mail(attachments=(("invoice.pdf.exe", b"MZ\x90\x00"),))) == set()


@given(st.binary(max_size=2000))
def test_the_rules_never_raise_on_any_bytes(raw: bytes) -> None:
    parsed = parse_message(raw)
    check = BuiltinRules().check(
        MailToCheck(raw=raw, parsed_message=parsed, mail_from="", recipients=(), direction="in")
    )
    assert asyncio.run(check).score >= 0


# -- the pipeline -------------------------------------------------------------------


class Fixed:
    def __init__(self, result: FilterResult, name: str = "fixed") -> None:
        self.result = result
        self.name = name

    async def check(self, mail: MailToCheck) -> FilterResult:
        return self.result


class Down:
    name = "down"

    async def check(self, mail: MailToCheck) -> FilterResult:
        raise FilterUnavailable("scanner not answering")


def pipeline(*filters: object) -> FilterPipeline:
    return FilterPipeline(filters, spam_score=5.0, reject_score=15.0)  # type: ignore[arg-type]


async def test_the_verdict_follows_the_total_score_and_the_strongest_filter() -> None:
    some = Fixed(FilterResult(3.0, (Reason("A", 3.0),)))
    more = Fixed(FilterResult(2.5, (Reason("B", 2.5),)))
    assert (await pipeline(some).run(checked(mail()))).verdict == Verdict.HAM
    both = await pipeline(some, more).run(checked(mail()))
    assert (both.verdict, both.score) == (Verdict.SPAM, 5.5)
    assert [r.name for r in both.reasons] == ["A", "B"]
    rejected = await pipeline(Fixed(FilterResult(20.0))).run(checked(mail()))
    assert rejected.verdict == Verdict.REJECT
    # A filter's own verdict wins over a low score.
    said = Fixed(FilterResult(0.0, verdict=Verdict.QUARANTINE))
    assert (await pipeline(said, some).run(checked(mail()))).verdict == Verdict.QUARANTINE


async def test_headers_for_the_stored_copy() -> None:
    auth = Fixed(FilterResult(0.0, headers=(("Authentication-Results", "mx.test; spf=pass"),)))
    many = Fixed(FilterResult(6.0, tuple(Reason(f"RULE_NUMBER_{n}", 0.5) for n in range(12))))
    block = (await pipeline(auth, many).run(checked(mail()))).header_block()
    lines = block.split("\r\n")
    assert lines[0] == "Authentication-Results: mx.test; spf=pass"
    assert "X-Spam-Status: Yes, score=6 required=5" in lines
    assert "X-Spam-Verdict: spam" in lines
    assert block.endswith("\r\n") and all(len(line) <= 78 for line in lines)
    parsed = parse_message(block.encode() + b"\r\nbody\r\n")
    assert parsed.defects == ()


async def test_a_filter_that_cannot_answer_stops_the_pipeline() -> None:
    with pytest.raises(FilterUnavailable):
        await pipeline(Fixed(FilterResult()), Down()).run(checked(mail()))


async def test_a_quarantining_filter_is_known_even_when_reject_wins() -> None:
    """GTUBE beside a virus: the verdict reads reject (refused where it still
    can be), and the outcome still says a filter quarantined the mail, so
    worker-in holds it rather than putting it in Junk."""
    gtube = Fixed(FilterResult(1000.0, (Reason("GTUBE", 1000.0),)))
    virus = Fixed(
        FilterResult(reasons=(Reason("VIRUS", 0.0, "Eicar"),), verdict=Verdict.QUARANTINE)
    )
    both = await pipeline(gtube, virus).run(checked(mail()))
    assert (both.verdict, both.quarantined) == (Verdict.REJECT, True)
    alone = await pipeline(gtube).run(checked(mail()))
    assert (alone.verdict, alone.quarantined) == (Verdict.REJECT, False)
