"""DKIM (RFC 6376) for outgoing mail: keys, the DNS records a hosted domain
publishes, and signing. Pure and synchronous (dkimpy is): the caller runs
``sign`` in a worker thread.

- Keys: RSA 2048 (RFC 8301 section 3.2: at least 1024, 2048 recommended), the
  private key stored as PKCS#8 PEM, the public key published as the base64
  SubjectPublicKeyInfo in the ``p=`` tag (RFC 6376 section 3.6.1).
- Records: the key at ``<selector>._domainkey.<domain>`` (RFC 6376 section
  3.6.2.1), SPF (RFC 7208: only the domain's MX hosts send for it), DMARC
  (RFC 7489 section 6.3: quarantine what fails, aggregate reports to the
  postmaster) and the MX itself. A TXT value longer than 255 octets is split
  into several character-strings, which verifiers join (RFC 6376 section
  3.6.2.2; RFC 7208 section 3.3).
- Signatures: rsa-sha256, relaxed/relaxed canonicalization (RFC 6376 section
  3.4, which survives the refolding relays do), over the header fields that
  say who sent what to whom (section 5.4.1); From is signed once more than it
  occurs, so that no From can be added without breaking the signature
  (section 8.15, dkimpy's default "frozen" header).
"""

from __future__ import annotations

import base64
import re

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailfleet.proto.addresses import normalize_domain

KEY_BITS = 2048
# Header fields signed when present, each once per occurrence.
SIGNED_HEADERS = (
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
)
# Signed one extra time: a field of that name added later breaks the signature.
OVERSIGNED_HEADERS = ("from",)
_SELECTOR = re.compile(
    r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*"
)
_TXT_CHUNK = 255


class DkimError(ValueError):
    """The key, selector, domain or message cannot be used for signing."""


def generate_key() -> tuple[bytes, str]:
    """A new RSA 2048 key: (private key as PKCS#8 PEM, public key as the
    base64 ``p=`` value)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem, _public_b64(key.public_key())


def public_key_b64(private_key_pem: bytes) -> str:
    """The ``p=`` value for a stored private key (to print the records again)."""
    try:
        key = serialization.load_pem_private_key(private_key_pem, password=None)
    except ValueError as exc:
        raise DkimError(f"not a PEM private key: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise DkimError("not an RSA private key")
    return _public_b64(key.public_key())


def _public_b64(key: rsa.RSAPublicKey) -> str:
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode("ascii")


def check_selector(selector: str) -> str:
    """The selector, lower-cased, if it is a valid DNS name part (RFC 6376
    section 3.1); DkimError otherwise."""
    value = selector.strip().lower()
    if not _SELECTOR.fullmatch(value):
        raise DkimError(f"invalid DKIM selector {selector!r}")
    return value


def _domain(domain: str) -> str:
    try:
        return normalize_domain(domain)
    except ValueError as exc:
        raise DkimError(str(exc)) from None


def dns_records(
    domain: str, selector: str, public_key_b64: str, mx_host: str
) -> list[tuple[str, str, str]]:
    """(name, type, value) of each record the domain publishes: DKIM key, SPF,
    DMARC and MX. Names are absolute, without the final dot; TXT values whole
    (see ``txt_strings`` and ``zone_file`` for the split zone-file form)."""
    name = _domain(domain)
    mx = _domain(mx_host)
    key = "".join(public_key_b64.split())
    return [
        (f"{check_selector(selector)}._domainkey.{name}", "TXT", f"v=DKIM1; k=rsa; p={key}"),
        (name, "TXT", "v=spf1 mx -all"),
        (f"_dmarc.{name}", "TXT", f"v=DMARC1; p=quarantine; rua=mailto:postmaster@{name}"),
        (name, "MX", f"10 {mx}."),
    ]


def txt_strings(value: str) -> list[str]:
    """A TXT value as the character-strings of at most 255 octets it is
    published as (the values here are ASCII)."""
    return [value[i : i + _TXT_CHUNK] for i in range(0, len(value), _TXT_CHUNK)] or [""]


def format_txt(value: str) -> str:
    """A TXT value as zone-file text: quoted strings, split at 255 octets."""
    quoted = (s.replace("\\", "\\\\").replace('"', '\\"') for s in txt_strings(value))
    return " ".join(f'"{s}"' for s in quoted)


def zone_file(records: list[tuple[str, str, str]], ttl: int = 3600) -> str:
    """The records as zone-file lines (BIND syntax), one per record."""
    lines = []
    for name, rtype, value in records:
        data = format_txt(value) if rtype == "TXT" else value
        lines.append(f"{name}.\t{ttl}\tIN\t{rtype}\t{data}")
    return "\n".join(lines) + "\n"


def sign(message: bytes, *, domain: str, selector: str, private_key_pem: bytes) -> bytes:
    """``message`` with a DKIM-Signature header field prepended. The message
    should have CRLF line ends, as sent (LF-only input gets an LF-folded
    signature field, so the result stays consistent)."""
    linesep = b"\r\n" if b"\r\n" in message or b"\n" not in message else b"\n"
    d = _domain(domain).encode("ascii")
    s = check_selector(selector).encode("ascii")
    try:
        headers, _ = dkim.rfc822_parse(message)
        present = [name.lower() for name, _ in headers]
        include = [name for name in present if name.decode("ascii") in SIGNED_HEADERS]
        if b"from" not in include:
            raise DkimError("the message has no From header field")
        include += [h.encode("ascii") for h in OVERSIGNED_HEADERS]
        signature = dkim.sign(
            message,
            s,
            d,
            private_key_pem,
            canonicalize=(b"relaxed", b"relaxed"),
            signature_algorithm=b"rsa-sha256",
            include_headers=include,
            linesep=linesep,
        )
    except dkim.DKIMException as exc:
        raise DkimError(f"cannot sign: {exc}") from None
    if not isinstance(signature, bytes):
        raise DkimError("dkimpy returned no signature")
    return signature + message
