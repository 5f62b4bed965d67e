"""Mail addresses: the ``Address`` record, and two readings of what people and
mailers write.

Strict, for what users type and SMTP carries (``normalize_email``,
``parse_address``): ``local@domain`` where the local part is a dot-atom (RFC
5322 section 3.2.3, with UTF-8 allowed as in RFC 6531) and the domain a host
name of at least two labels (IDNA allowed). Quoted local parts and source
routes are refused: legal, but used for tricks far more than for mail.
Decision 0024: a local part is in Unicode NFC (RFC 6532 section 3.1), so one
spelled with a decomposed "ü" is the same address as the composed one, and
holds no control, format, separator or private-use character (zero-width,
bidirectional overrides: ``hidden_chars.py``); display names are NFC, one
line, without hidden characters, at most ``MAX_NAME`` characters; a domain is
kept as its lower-case A-label (IDNA 2008 with the UTS #46 mapping).

Lenient, for the address fields of received mail (``read_address_list``):
RFC 5322 section 3.4 as mailers really write it, groups flattened, garbage
skipped and reported, never an exception.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from email.headerregistry import Address as HeaderAddress

import idna

from mailfleet.proto.hidden_chars import describe, first_hidden

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010FFFF]"
_LOCAL = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
# Unicode general categories no local part may hold: controls, format
# characters (zero-width, bidirectional), surrogates, private use, and every
# space and separator (a no-break space looks like the end of the address).
_NOT_IN_LOCAL_PARTS = frozenset({"Cc", "Cf", "Cs", "Co", "Zs", "Zl", "Zp"})
MAX_NAME = 200  # characters of a display name


@dataclass(frozen=True, slots=True)
class Address:
    """A mailbox as mail names it: an address and an optional display name."""

    email: str
    name: str = ""


class AddressError(ValueError):
    pass


def normalize_domain(domain: str) -> str:
    """Lower-case ASCII (A-label) form of a domain, or AddressError. A
    U-label is mapped by UTS #46 (case, NFC, width) and encoded by IDNA 2008
    (RFC 5891), so every spelling of one IDN domain gives one A-label."""
    domain = domain.strip().rstrip(".").lower()
    try:
        ascii_domain = idna.encode(domain, uts46=True).decode() if not domain.isascii() else domain
    except (UnicodeError, idna.IDNAError):
        raise AddressError(f"invalid domain {domain!r}") from None
    labels = ascii_domain.split(".")
    if len(ascii_domain) > 253 or len(labels) < 2 or not all(_LABEL.fullmatch(x) for x in labels):
        raise AddressError(f"invalid domain {domain!r}")
    if labels[-1].isdigit():
        raise AddressError(f"invalid domain {domain!r}")
    return ascii_domain


def normalize_email(text: str) -> str:
    """``local@domain`` with the local part in NFC and the domain an A-label,
    or AddressError."""
    text = text.strip()
    local, at, domain = text.rpartition("@")
    if not at or not local:
        raise AddressError(f"invalid address {text!r}: expected local@domain")
    hidden = next((c for c in local if unicodedata.category(c) in _NOT_IN_LOCAL_PARTS), None)
    if hidden is not None:
        raise AddressError(
            f"invalid address {text!r}: {describe(hidden)} is not allowed in an address"
        )
    local = unicodedata.normalize("NFC", local)
    if len(local.encode()) > 64 or not _LOCAL.fullmatch(local):
        raise AddressError(f"invalid address {text!r}: bad local part")
    address = f"{local}@{normalize_domain(domain)}"
    if len(address.encode()) > 254:
        raise AddressError(f"invalid address {text!r}: too long")
    return address


def mailbox_key(email: str) -> str:
    """Our accounts are case-insensitive: the key an account is found by
    (NFC as well, for addresses that did not come through ``normalize_email``)."""
    return unicodedata.normalize("NFC", email).lower()


def normalize_name(name: str) -> str:
    """A display name as we store and write it: NFC, one line of single
    spaces, or AddressError naming what is wrong with it."""
    hidden = first_hidden(name.replace("\t", " "))  # a pasted tab is only a space
    if hidden is not None:
        if "\r" in name or "\n" in name or "\u2028" in name or "\u2029" in name:
            raise AddressError("a name must be one line")
        raise AddressError(f"{hidden} is not allowed in a name")
    # One line of single spaces: headers fold and unfold whitespace anyway.
    name = " ".join(unicodedata.normalize("NFC", name).split())
    if len(name) > MAX_NAME:
        raise AddressError(f"a name may have {MAX_NAME} characters at most")
    return name


def parse_address(value: object) -> Address:
    """An API address: a bare string or ``{"email", "name"?}``."""
    if isinstance(value, str):
        return Address(normalize_email(value))
    if isinstance(value, dict) and isinstance(value.get("email"), str):
        name = value.get("name") or ""
        if not isinstance(name, str):
            raise AddressError("address name must be a string")
        return Address(normalize_email(value["email"]), normalize_name(name))
    raise AddressError(f"invalid address {value!r}: expected a string or {{email, name}}")


def format_address(address: Address) -> str:
    """For a header: RFC 2047-encodes the name when needed (email package)."""
    local, _, domain = address.email.rpartition("@")
    return str(HeaderAddress(display_name=address.name, username=local, domain=domain))


# -- the lenient reading of received address fields ------------------------------

_Token = tuple[str, str, str]  # (kind, value, source text)


def read_address_list(text: str) -> tuple[list[Address], list[str]]:
    """RFC 5322 3.4 address-list, leniently: groups are flattened, garbage
    between commas is skipped, and a display name split by an unquoted comma
    ("Smith, John <j@x>") is joined back.

    Returns the addresses (``local@domain`` as written, the domain
    lower-cased; display names as written, RFC 2047 encoded-words not yet
    decoded) and the pieces that are no address, in order."""
    result: list[Address] = []
    skipped: list[str] = []
    carry = ""
    for chunk in _mailbox_chunks(_address_tokens(text)):
        if not any(kind != "ws" for kind, _, _ in chunk):
            continue
        addr, name, angle = _mailbox(chunk)
        email_address = _addr_spec(addr) if addr is not None else None
        if email_address is None:
            words = _phrase(chunk).strip()
            if addr is not None:
                skipped.append(addr)
            elif words and "@" not in words:
                carry = f"{carry}, {words}" if carry else words
            continue
        if carry and angle:
            name = f"{carry}, {name}" if name else carry
        elif carry:
            skipped.append(carry)
        carry = ""
        result.append(Address(email_address, name))
    if carry:
        skipped.append(carry)
    return result, skipped


def _address_tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t":
            j = i + 1
            while j < n and text[j] in " \t":
                j += 1
            tokens.append(("ws", " ", text[i:j]))
        elif c == '"':
            j, chars = i + 1, []
            while j < n and text[j] != '"':
                if text[j] == "\\" and j + 1 < n:
                    chars.append(text[j + 1])
                    j += 2
                else:
                    chars.append(text[j])
                    j += 1
            j = min(j + 1, n)
            tokens.append(("quoted", "".join(chars), text[i:j]))
        elif c == "(":
            depth, j, chars = 1, i + 1, []
            while j < n:
                ch = text[j]
                if ch == "\\" and j + 1 < n:
                    chars.append(text[j + 1])
                    j += 2
                    continue
                j += 1
                if ch == "(":
                    depth += 1
                elif ch == ")":
                    depth -= 1
                    if depth == 0:
                        break
                chars.append(ch)
            tokens.append(("comment", "".join(chars), text[i:j]))
        elif c == "<":
            close = text.find(">", i + 1)
            j = n if close < 0 else close + 1
            tokens.append(("angle", text[i + 1 : n if close < 0 else close], text[i:j]))
        elif c in ",;:":
            j = i + 1
            tokens.append((c, c, c))
        elif c in ">)":
            j = i + 1  # a stray closer
        else:
            j = i + 1
            while j < n and text[j] not in ' \t"(<>),;:':
                j += 1
            tokens.append(("atom", text[i:j], text[i:j]))
        i = j
    return tokens


def _mailbox_chunks(tokens: list[_Token]) -> Iterator[list[_Token]]:
    chunk: list[_Token] = []
    for token in tokens:
        kind = token[0]
        if kind in (",", ";"):
            yield chunk
            chunk = []
        elif kind == ":":
            if not any(t[0] == "angle" for t in chunk):
                chunk = []  # a group's display name (RFC 5322 3.4): not an address
        else:
            chunk.append(token)
    yield chunk


def _mailbox(chunk: list[_Token]) -> tuple[str | None, str, bool]:
    """(addr-spec as written, display name source, whether name-addr form)."""
    angles = [i for i, t in enumerate(chunk) if t[0] == "angle"]
    if angles:
        at = next((i for i in angles if "@" in chunk[i][1]), angles[0])
        addr = chunk[at][1].strip()
        if addr.startswith("@") and ":" in addr:  # obsolete source route
            addr = addr.partition(":")[2]
        if '"' not in addr:
            addr = "".join(addr.split())
        name = _phrase(chunk[:at]).strip()
        if not name:
            name = next((t[1] for t in chunk[at:] if t[0] == "comment"), "")
        return addr, name, True
    words: list[str] = []
    current = ""
    for kind, _, source in chunk:
        if kind in ("atom", "quoted"):
            current += source
        elif current:
            words.append(current)
            current = ""
    if current:
        words.append(current)
    comment = next((t[1] for t in chunk if t[0] == "comment"), "")
    with_at = [w for w in words if "@" in w]
    if len(words) > 1 and len(with_at) == 1 and _addr_spec(with_at[0]) is not None:
        # "Name addr@host" without brackets
        return with_at[0], " ".join(w for w in words if w is not with_at[0]) or comment, False
    if not with_at:
        return None, "", False
    return "".join(words), comment, False


def _phrase(tokens: list[_Token]) -> str:
    return "".join(value for kind, value, _ in tokens if kind in ("atom", "quoted", "ws"))


def _addr_spec(addr: str) -> str | None:
    """``local@domain`` as written, the domain lower-cased; None if not one."""
    addr = addr.strip()
    if addr[:7].lower() == "mailto:":
        addr = addr[7:]
    local, at, domain = addr.rpartition("@")
    if not at or not local or not domain:
        return None
    if domain.startswith("[") and domain.endswith("]"):
        if re.search(r"[\s\[\]\\]", domain[1:-1]):
            return None
    elif re.search(r'[\s<>()\[\],;:"\\@]', domain):
        return None
    if not local.startswith('"') and re.search(r"[\s<>(),;:\\]", local):
        return None
    if re.search(r"[\x00-\x1f\x7f]", addr):
        return None
    return f"{local}@{domain.lower()}"
