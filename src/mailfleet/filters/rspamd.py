"""rspamd (https://rspamd.com) as an optional stronger scorer (issue 13),
over its HTTP protocol: ``POST /checkv2`` with the raw mail as the body and
the envelope in request headers (``IP``, ``Helo``, ``From``, one ``Rcpt``
per recipient, ``Queue-Id``), answered with JSON: ``action``, ``score`` and
the ``symbols`` that fired.

- The verdict is rspamd's action: ``reject`` → REJECT, ``add header`` and
  ``rewrite subject`` → SPAM. ``greylist`` and ``soft reject`` ask the MTA
  to defer the client, which only makes sense at SMTP time and which we do
  not do: no opinion. ``no action``: no opinion.
- Its score does not join the pipeline's total: rspamd's thresholds are its
  own (greylist 4, add header 6, reject 15 by default) and its action
  already applies them; adding its points to ours (spam at 5) filed
  ordinary mail rspamd only wanted greylisted in Junk (one in ten in
  bench/filter_throughput.py offline), and counted its SPF/DKIM checks
  twice with ours.
- What it found is in the reasons, scored 0 with rspamd's points in the
  detail: ``RSPAMD`` (its score, threshold and action), then its symbols
  with a score, or every symbol that fired when a pre-result decided
  (``is_skipped``: GTUBE, a forced action).
- rspamd down, slow, or answering an error → ``FilterUnavailable``: the
  mail waits and is tried again, never delivered unscanned.

One ``aiohttp`` session per filter keeps connections to rspamd alive.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from multidict import CIMultiDict

from mailfleet.filters import FilterResult, FilterUnavailable, MailToCheck, Reason, Verdict

_VERDICTS = {
    "reject": Verdict.REJECT,
    "add header": Verdict.SPAM,
    "rewrite subject": Verdict.SPAM,
}


class RspamdFilter:
    name = "rspamd"

    def __init__(self, url: str, *, timeout: float = 20.0, password: str = "") -> None:
        self.url = url.rstrip("/") + "/checkv2"
        self.timeout = timeout
        self.password = password
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Made on first use, inside the running loop that will use it.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def check(self, mail: MailToCheck) -> FilterResult:
        headers: list[tuple[str, str]] = [("From", mail.mail_from or "<>")]
        headers += [("Rcpt", rcpt) for rcpt in mail.recipients]
        if mail.client_ip:
            headers.append(("IP", mail.client_ip))
        if mail.helo:
            headers.append(("Helo", mail.helo))
        if self.password:
            headers.append(("Password", self.password))
        try:
            async with self._client().post(
                self.url, data=mail.raw, headers=CIMultiDict(headers)
            ) as response:
                if response.status != 200:
                    text = (await response.text())[:200]
                    raise FilterUnavailable(f"rspamd answered {response.status}: {text}")
                answer: dict[str, Any] = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise FilterUnavailable(f"rspamd at {self.url}: {exc or type(exc).__name__}") from exc
        return _result(answer)


def _result(answer: dict[str, Any]) -> FilterResult:
    if "action" not in answer or "score" not in answer:
        raise FilterUnavailable(f"rspamd answered without action or score: {str(answer)[:200]}")
    # A pre-result (GTUBE, a module's forced action) decides alone and says
    # so with is_skipped; the symbols that fired then are its cause, with
    # or without a score of their own.
    decided = bool(answer.get("is_skipped"))
    action = str(answer["action"])
    total = float(answer["score"])
    required = answer.get("required_score")
    fired = []
    for symbol in (answer.get("symbols") or {}).values():
        score = float(symbol.get("score", 0.0))
        if score == 0.0 and not decided:
            continue
        about = str(symbol.get("description") or ", ".join(map(str, symbol.get("options", []))))
        fired.append((score, str(symbol.get("name", "")), about))
    fired.sort(key=lambda f: -abs(f[0]))
    # Scored 0 here: rspamd's scale ends in its own actions, which are the
    # verdict; its points stay in the details, where the reasons' scores
    # still add up to the total a user is shown.
    summary = f"score {total:g}" + (f" of {float(required):g}" if required else "")
    reasons = [Reason("RSPAMD", 0.0, f"{summary}, action {action}")]
    reasons += [Reason(name, 0.0, f"{score:+g} {about}"[:200]) for score, name, about in fired]
    return FilterResult(score=0.0, reasons=tuple(reasons), verdict=_VERDICTS.get(action))
