"""Address parsing: what we accept, what we refuse, and that it never crashes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailfleet.proto.addresses import (
    Address,
    AddressError,
    format_address,
    normalize_email,
    parse_address,
    read_address_list,
)
from mailfleet.proto.hidden_chars import first_hidden


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a@b.com", "a@b.com"),
        (" Bob.X+tag@Example.COM ", "Bob.X+tag@example.com"),
        ("münchen@bücher.de", "münchen@xn--bcher-kva.de"),
        ("o'neil@example.org", "o'neil@example.org"),
    ],
)
def test_accepted(text: str, expected: str) -> None:
    assert normalize_email(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "plain",
        "@example.com",
        "a@",
        "a@b",
        "a@@b.com",
        "a..b@c.com",
        ".a@c.com",
        "a.@c.com",
        '"quoted"@c.com',
        "@a,@b:user@evil.com",
        "user@[127.0.0.1]",
        "user@1.2.3.4",
        "a b@c.com",
        "a@-c.com",
        "a@c_d.com",
        "x" * 65 + "@c.com",
        "a@" + "b" * 64 + ".com",
        "a\r\n@c.com",
    ],
)
def test_refused(text: str) -> None:
    with pytest.raises(AddressError):
        normalize_email(text)


@given(st.text(max_size=300))
def test_never_crashes_and_accepted_is_stable(text: str) -> None:
    try:
        once = normalize_email(text)
    except AddressError:
        return
    assert normalize_email(once) == once
    assert "\r" not in once and "\n" not in once and " " not in once


@given(st.text(max_size=60), st.sampled_from(["bob@example.com", "x.y@mail.example.org"]))
def test_formatted_header_round_trips(name: str, email: str) -> None:
    from email.headerregistry import AddressHeader
    from email.policy import default

    try:
        address = parse_address({"email": email, "name": name})
    except AddressError:
        assert first_hidden(name.replace("\t", " ")) is not None
        return
    header = default.header_factory("To", format_address(address))
    assert isinstance(header, AddressHeader)
    (parsed,) = header.addresses
    assert parsed.addr_spec == email
    assert parsed.display_name == address.name


def test_parse_address_shapes() -> None:
    assert parse_address("a@b.com") == Address("a@b.com")
    assert parse_address({"email": "a@b.com", "name": " Al "}) == Address("a@b.com", "Al")
    for bad in (5, None, {"name": "x"}, {"email": 3}, {"email": "a@b.com", "name": 7}):
        with pytest.raises(AddressError):
            parse_address(bad)


# -- the lenient reading of received address fields ------------------------------


@pytest.mark.parametrize(
    ("text", "expected", "skipped"),
    [
        ("a@B.example", [Address("a@b.example")], []),
        ('"Smith, J" <j@x.example>', [Address("j@x.example", "Smith, J")], []),
        # an unquoted comma in a display name is joined back
        ("Smith, John <j@x.example>", [Address("j@x.example", "Smith, John")], []),
        # groups flattened, the group's name is no address
        ("team: a@x.example, b@x.example;", [Address("a@x.example"), Address("b@x.example")], []),
        ("Ann ann@x.example", [Address("ann@x.example", "Ann")], []),
        ("<mailto:m@x.example> (Mia)", [Address("m@x.example", "Mia")], []),
        # encoded-words are left for the caller to decode
        (
            "=?utf-8?q?J=C3=B6rg?= <j@x.example>",
            [Address("j@x.example", "=?utf-8?q?J=C3=B6rg?=")],
            [],
        ),
        ("<nobody>, ok@x.example", [Address("ok@x.example")], ["nobody"]),
        ("undisclosed recipients", [], ["undisclosed recipients"]),
    ],
)
def test_read_address_list(text: str, expected: list[Address], skipped: list[str]) -> None:
    assert read_address_list(text) == (expected, skipped)


@given(st.text(max_size=200))
def test_read_address_list_never_raises(text: str) -> None:
    found, _ = read_address_list(text)
    assert all("@" in a.email for a in found)
