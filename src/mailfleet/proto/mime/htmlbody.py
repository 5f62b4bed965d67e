"""The HTML body on its way to the reader: what browsers never show dropped
(``<head>``, ``<title>``), the element nesting bounded, then sanitized by
``proto/compose.py``. The bound exists because the sanitizer's HTML parser
is quadratic in nesting depth: a mail of nested ``<div>``s would otherwise
stall the worker for minutes.
"""

from __future__ import annotations

import html as html_lib
import re

from mailfleet.proto.compose import sanitize_html
from mailfleet.proto.mime.defects import Defects, valid_text

# An HTML body is cut where its element nesting (or the total work of a
# parser whose cost grows with nesting) passes these: the sanitizer's HTML
# parser is quadratic in nesting depth, and a mail of nested <div>s would
# otherwise stall the worker for minutes.
MAX_HTML_DEPTH = 5_000
MAX_HTML_WORK = 50_000_000


_HTML_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9:-]*)")
# Elements that never nest (void) or whose end tag the parser implies.
_VOID_ELEMENTS = "area base br col embed hr img input link meta param source track wbr"
_IMPLIED_END = "p li dt dd td th tr tbody thead tfoot option optgroup colgroup caption rb rt rp"
_FLAT_ELEMENTS = frozenset(f"{_VOID_ELEMENTS} {_IMPLIED_END} html head body".split())


def sanitize_body(html: str | None, defects: Defects | None) -> str:
    """compose.sanitize_html, after dropping what browsers never show (<head>,
    whose <title> text the sanitizer would keep) and bounding the nesting."""
    if not html:
        return ""
    html = valid_text(html.replace("\x00", ""))
    html = _drop_element(html, "head")
    html = _drop_element(html, "title")
    cut = _html_cut(html)
    if cut is not None:
        if defects is not None:
            defects.add("HTML body nested too deeply; cut short")
        html = html[:cut]
    try:
        return sanitize_html(html)
    except Exception as exc:
        if defects is not None:
            defects.add(f"HTML body could not be sanitized ({type(exc).__name__})")
        return html_lib.escape(html)


def _drop_element(html: str, tag: str) -> str:
    lower = html.lower()
    start = lower.find(f"<{tag}")
    if start < 0 or lower[start + len(tag) + 1 : start + len(tag) + 2].isalnum():
        return html
    end = lower.find(f"</{tag}", start)
    if end < 0:
        return html
    close = lower.find(">", end)
    return html[:start] + html[(len(html) if close < 0 else close + 1) :]


def _html_cut(html: str) -> int | None:
    depth = work = 0
    for match in _HTML_TAG.finditer(html):
        name = match.group(2).lower()
        if name in _FLAT_ELEMENTS:
            continue
        if match.group(1):
            depth = max(depth - 1, 0)
            continue
        depth += 1
        work += depth
        if depth > MAX_HTML_DEPTH or work > MAX_HTML_WORK:
            return match.start()
    return None
