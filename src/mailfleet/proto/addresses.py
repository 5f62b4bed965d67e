"""Mail addresses as users type them and as SMTP carries them.

Accepted: ``local@domain`` where the local part is a dot-atom (RFC 5322 section
3.2.3, with UTF-8 allowed as in RFC 6531) and the domain a host name of at
least two labels (IDNA allowed). Quoted local parts and source routes are
refused: legal, but used for tricks far more than for mail.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.headerregistry import Address as HeaderAddress

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010FFFF]"
_LOCAL = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


@dataclass(frozen=True, slots=True)
class Address:
    """A mailbox as mail names it: an address and an optional display name."""

    email: str
    name: str = ""


class AddressError(ValueError):
    pass


def normalize_domain(domain: str) -> str:
    """Lower-case ASCII (A-label) form of a domain, or AddressError."""
    domain = domain.strip().rstrip(".").lower()
    try:
        ascii_domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError:
        raise AddressError(f"invalid domain {domain!r}") from None
    labels = ascii_domain.split(".")
    if len(ascii_domain) > 253 or len(labels) < 2 or not all(_LABEL.fullmatch(x) for x in labels):
        raise AddressError(f"invalid domain {domain!r}")
    if labels[-1].isdigit():
        raise AddressError(f"invalid domain {domain!r}")
    return ascii_domain


def normalize_email(text: str) -> str:
    """``local@domain`` with the domain lower-cased, or AddressError."""
    text = text.strip()
    local, at, domain = text.rpartition("@")
    if not at or not local:
        raise AddressError(f"invalid address {text!r}: expected local@domain")
    if len(local.encode()) > 64 or not _LOCAL.fullmatch(local):
        raise AddressError(f"invalid address {text!r}: bad local part")
    address = f"{local}@{normalize_domain(domain)}"
    if len(address.encode()) > 254:
        raise AddressError(f"invalid address {text!r}: too long")
    return address


def mailbox_key(email: str) -> str:
    """Our accounts are case-insensitive: the key an account is found by."""
    return email.lower()


def parse_address(value: object) -> Address:
    """An API address: a bare string or ``{"email", "name"?}``."""
    if isinstance(value, str):
        return Address(normalize_email(value))
    if isinstance(value, dict) and isinstance(value.get("email"), str):
        name = value.get("name") or ""
        if not isinstance(name, str):
            raise AddressError("address name must be a string")
        if any(c in name for c in "\r\n\0"):
            raise AddressError("address name must be one line")
        # One line of single spaces: headers fold and unfold whitespace anyway.
        return Address(normalize_email(value["email"]), " ".join(name.split()))
    raise AddressError(f"invalid address {value!r}: expected a string or {{email, name}}")


def format_address(address: Address) -> str:
    """For a header: RFC 2047-encodes the name when needed (email package)."""
    local, _, domain = address.email.rpartition("@")
    return str(HeaderAddress(display_name=address.name, username=local, domain=domain))
