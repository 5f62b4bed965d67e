"""The XSS corpus (tests/webmail/xss_payloads.txt) and what sanitized HTML
must never hold, checked with the standard library's HTML parser."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

CORPUS = Path(__file__).resolve().parents[1] / "webmail" / "xss_payloads.txt"
CANARY = "__pwned"


@dataclass(frozen=True)
class Payload:
    name: str
    template: str

    def html(self, url: str) -> str:
        js = f"window.{CANARY}=1;parent.{CANARY}=1;top.{CANARY}=1;fetch('{url}/js');alert(1)"
        return self.template.replace("{JS}", js).replace("{URL}", url)


def payloads() -> list[Payload]:
    found: list[Payload] = []
    name: str | None = None
    lines: list[str] = []
    for line in [*CORPUS.read_text(encoding="utf-8").splitlines(), "## end"]:
        if line.startswith("## "):
            if name is not None:
                found.append(Payload(name, "\n".join(lines)))
            name, lines = line[3:].strip(), []
        elif name is not None:
            lines.append(line)
    return found


# Elements that run, load, submit, navigate or change how the rest parses.
ACTIVE_ELEMENTS = frozenset(
    [
        "script",
        "style",
        "iframe",
        "frame",
        "frameset",
        "object",
        "embed",
        "applet",
        "meta",
        "base",
        "link",
        "form",
        "input",
        "button",
        "textarea",
        "select",
        "option",
        "isindex",
        "keygen",
        "svg",
        "math",
        "template",
        "noscript",
        "noembed",
        "noframes",
        "xmp",
        "plaintext",
        "animate",
        "set",
        "use",
        "foreignobject",
        "feimage",
        "portal",
        "video",
        "audio",
        "source",
        "track",
        "marquee",
    ]
)
# Attributes that run script, load something or make an element a target.
ACTIVE_ATTRIBUTES = frozenset(
    [
        "style",
        "srcdoc",
        "formaction",
        "action",
        "background",
        "srcset",
        "dynsrc",
        "lowsrc",
        "poster",
        "ping",
        "xlink:href",
        "data",
        "codebase",
        "id",
        "name",
        "usemap",
        "http-equiv",
    ]
)
URL_ATTRIBUTES = frozenset(["href", "src", "cite", "longdesc"])
SAFE_SCHEMES = frozenset({"http", "https", "mailto", "cid"})
# What a browser drops from a URL before it reads the scheme (WHATWG URL:
# leading and trailing C0 controls and spaces; tabs and newlines anywhere).
_IGNORED_IN_URL = re.compile(r"[\x00-\x20]")
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*):")


class _Findings(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ACTIVE_ELEMENTS:
            self.problems.append(f"<{tag}> element")
        for name, value in attrs:
            if name.startswith("on"):
                self.problems.append(f"event handler {name} on <{tag}>")
            elif name in ACTIVE_ATTRIBUTES:
                self.problems.append(f"{name} attribute on <{tag}>")
            elif name in URL_ATTRIBUTES and value is not None:
                url = _IGNORED_IN_URL.sub("", html.unescape(value))
                scheme = _SCHEME.match(url)
                if scheme and scheme.group(1).lower() not in SAFE_SCHEMES:
                    self.problems.append(f"{name}={value!r} on <{tag}>")

    handle_startendtag = handle_starttag

    def handle_comment(self, data: str) -> None:
        self.problems.append("a comment (parsers disagree on where one ends)")

    def unknown_decl(self, data: str) -> None:
        self.problems.append(f"a declaration <!{data}>")


# A start tag as a browser reads it (up to ``>`` or the end of the text, "/"
# separating attributes like a space), for what the standard library's parser
# reads otherwise: ``<img/src=x/onerror=...>``, a tag the text ends inside.
_RAW_TAG = re.compile(r"<([a-zA-Z][^\s/>]*)((?:\"[^\"]*\"?|'[^']*'?|[^'\">])*)")
_QUOTED = re.compile(r"\"[^\"]*\"?|'[^']*'?")
_RAW_HANDLER = re.compile(r"(?:^|[\s/\"'])(on[a-z]+)\s*=", re.IGNORECASE)


def problems(sanitized: str) -> list[str]:
    """What in sanitized HTML could run, load or submit anything; [] when nothing."""
    parser = _Findings()
    parser.feed(sanitized)
    parser.close()
    lower = sanitized.lower()
    found = list(parser.problems)
    for tag, rest in _RAW_TAG.findall(sanitized):
        if tag.lower() in ACTIVE_ELEMENTS:
            found.append(f"<{tag}> element (as a browser reads it)")
        for handler in _RAW_HANDLER.findall(_QUOTED.sub(" ", rest)):
            found.append(f"event handler {handler} (as a browser reads it)")
    for needle in ("<script", "javascript:", "vbscript:", "<!--", "<![cdata["):
        if needle in lower:
            found.append(f"{needle!r} in the markup")
    return found
