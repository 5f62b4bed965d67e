"""MX resolution against a real DNS server (dnsmasq on loopback): ordering,
implicit MX, null MX, NXDOMAIN, server failures, static routes, addresses."""

from __future__ import annotations

import os
import random
import shutil
import socket
import time
from collections.abc import Iterator

import dns.asyncresolver
import pytest

from mailfleet.delivery.mx import (
    Destination,
    MxResolver,
    NoDestination,
    NullMx,
    TemporaryDnsFailure,
    is_public_address,
    parse_route,
)
from tests.support import dns as dns_support
from tests.support.dns import DnsServer
from tests.support.dns import dns_server as dns_server

LONG_TXT = "v=DKIM1; k=rsa; p=" + "QUJD" * 100


@pytest.fixture(scope="module")
def nameserver() -> Iterator[DnsServer]:
    server = DnsServer()
    # Declared out of order: the order must come from the preferences.
    server.mx("two.test", "mx2.two.test", 20)
    server.mx("two.test", "mx1.two.test", 10)
    server.a("mx1.two.test", "192.0.2.1", "192.0.2.2", "2001:db8::1")
    server.mx("equal.test", "b.equal.test", 10)
    server.mx("equal.test", "a.equal.test", 10)
    server.mx("equal.test", "first.equal.test", 5)
    server.a("afallback.test", "192.0.2.7", "2001:db8::7")
    server.a("v6only.test", "2001:db8::6")
    server.cname("alias.test", "v6only.test")
    server.txt("noaddr.test", "v=spf1 -all")
    server.null_mx("nullmx.test")
    server.mx("xn--bcher-kva.test", "mx.xn--bcher-kva.test", 5)
    server.txt("sel._domainkey.two.test", LONG_TXT)
    with server.start():
        yield server


@pytest.fixture
def resolver(nameserver: DnsServer) -> MxResolver:
    return MxResolver(nameservers=nameserver.nameservers, port=nameserver.port, timeout=2)


@pytest.fixture
def silent_port() -> Iterator[tuple[socket.socket, int]]:
    """A UDP socket that never answers: every query to it times out."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        yield sock, sock.getsockname()[1]


async def test_mx_ordered_by_preference(resolver: MxResolver) -> None:
    assert await resolver.resolve("two.test") == [
        Destination(host="mx1.two.test", port=25, preference=10),
        Destination(host="mx2.two.test", port=25, preference=20),
    ]


async def test_equal_preferences_all_returned_in_random_order(resolver: MxResolver) -> None:
    orders = set()
    for _ in range(24):
        result = await resolver.resolve("Equal.Test.")
        assert result[0] == Destination("first.equal.test", 25, 5)
        assert sorted(result[1:], key=lambda d: d.host) == [
            Destination("a.equal.test", 25, 10),
            Destination("b.equal.test", 25, 10),
        ]
        orders.add(tuple(d.host for d in result))
    # RFC 5321 section 5.1: equal preferences are tried in random order.
    assert orders == {
        ("first.equal.test", "a.equal.test", "b.equal.test"),
        ("first.equal.test", "b.equal.test", "a.equal.test"),
    }


async def test_shuffle_uses_the_given_random_source(nameserver: DnsServer) -> None:
    async def hosts(seed: int) -> tuple[str, ...]:
        resolver = MxResolver(
            nameservers=nameserver.nameservers, port=nameserver.port, rng=random.Random(seed)
        )
        return tuple(d.host for d in await resolver.resolve("equal.test"))

    orders = {seed: await hosts(seed) for seed in range(6)}
    assert {seed: await hosts(seed) for seed in range(6)} == orders  # same seed, same order
    assert len(set(orders.values())) == 2


async def test_no_mx_falls_back_to_the_domain_itself(resolver: MxResolver) -> None:
    assert await resolver.resolve("afallback.test") == [Destination("afallback.test", 25, 0)]
    assert await resolver.resolve("v6only.test") == [Destination("v6only.test", 25, 0)]


async def test_no_mx_and_no_address_is_permanent(resolver: MxResolver) -> None:
    with pytest.raises(NoDestination, match=r"^noaddr\.test: no MX and no address records$"):
        await resolver.resolve("noaddr.test")


async def test_null_mx(resolver: MxResolver) -> None:
    with pytest.raises(NullMx, match=r"nullmx\.test accepts no mail") as caught:
        await resolver.resolve("nullmx.test")
    assert caught.value.status == "5.1.10"


async def test_nxdomain(resolver: MxResolver) -> None:
    with pytest.raises(NoDestination, match=r"^nothere\.test: no such domain$") as caught:
        await resolver.resolve("nothere.test")
    assert caught.value.status == "5.1.2"


@pytest.mark.parametrize("domain", ["", ".", "a..b.test", "x" * 64 + ".test"])
async def test_invalid_names_are_permanent(resolver: MxResolver, domain: str) -> None:
    with pytest.raises(NoDestination):
        await resolver.resolve(domain)


async def test_idna_domain_is_queried_as_a_label(resolver: MxResolver) -> None:
    assert await resolver.resolve("Bücher.test") == [Destination("mx.xn--bcher-kva.test", 25, 5)]


async def test_refused_is_temporary(resolver: MxResolver) -> None:
    # Outside the server's zones dnsmasq answers REFUSED (no upstream).
    with pytest.raises(TemporaryDnsFailure, match="no name server answered") as caught:
        await resolver.resolve("elsewhere.net")
    assert caught.value.status == "4.4.3"


async def test_timeout_is_temporary(silent_port: tuple[socket.socket, int]) -> None:
    _, port = silent_port
    resolver = MxResolver(nameservers=["127.0.0.1"], port=port, timeout=0.2)
    started = time.monotonic()
    with pytest.raises(TemporaryDnsFailure, match=r"^two\.test: MX lookup failed: timed out$"):
        await resolver.resolve("two.test")
    assert time.monotonic() - started < 2
    with pytest.raises(
        TemporaryDnsFailure, match=r"^mx1\.two\.test: address lookup failed: timed out$"
    ):
        await resolver.addresses("mx1.two.test")


async def test_static_routes_use_no_dns(silent_port: tuple[socket.socket, int]) -> None:
    sock, port = silent_port
    resolver = MxResolver(
        nameservers=["127.0.0.1"],
        port=port,
        timeout=0.2,
        routes={"Routed.Test": "127.0.0.1:2526", "bücher.test": "[::1]:2527", "v6.test": "::1"},
    )
    assert await resolver.resolve("routed.test.") == [
        Destination("127.0.0.1", 2526, 0, routed=True)
    ]
    assert await resolver.resolve("xn--bcher-kva.test") == [
        Destination("::1", 2527, 0, routed=True)
    ]
    assert await resolver.resolve("v6.test") == [Destination("::1", 25, 0, routed=True)]
    assert await resolver.addresses("127.0.0.1") == ["127.0.0.1"]
    assert await resolver.addresses("[::1]") == ["::1"]
    assert await resolver.addresses("localhost") == ["127.0.0.1", "::1"]
    with pytest.raises(BlockingIOError):
        sock.recvfrom(512)  # not one query reached the (silent) name server
    with pytest.raises(TemporaryDnsFailure):
        await resolver.resolve("other.test")  # not routed: DNS, which times out


async def test_wildcard_route(nameserver: DnsServer) -> None:
    resolver = MxResolver(
        nameservers=nameserver.nameservers,
        port=nameserver.port,
        routes={"two.test": "mx.local:2600", "*": "smarthost.local"},
        default_port=2525,
    )
    assert await resolver.resolve("two.test") == [Destination("mx.local", 2600, 0, routed=True)]
    assert await resolver.resolve("anything.example") == [
        Destination("smarthost.local", 2525, 0, routed=True)
    ]


async def test_addresses(resolver: MxResolver) -> None:
    # IPv4 first, then IPv6; dnsmasq rotates records of one type (round robin).
    found = await resolver.addresses("mx1.two.test")
    assert sorted(found[:2]) == ["192.0.2.1", "192.0.2.2"]
    assert found[2:] == ["2001:db8::1"]
    assert await resolver.addresses("v6only.test") == ["2001:db8::6"]
    assert await resolver.addresses("alias.test") == ["2001:db8::6"]  # through the CNAME
    with pytest.raises(NoDestination, match=r"^mx2\.two\.test: no address records$"):
        await resolver.addresses("mx2.two.test")  # named by an MX, but has no address
    with pytest.raises(NoDestination):
        await resolver.addresses("noaddr.test")


@pytest.mark.skipif(not os.path.exists("/etc/resolv.conf"), reason="no /etc/resolv.conf")
async def test_system_configuration_when_no_nameservers() -> None:
    # Constructing without nameservers reads the system configuration; the
    # static route answers without any query.
    resolver = MxResolver(routes={"*": "127.0.0.1:2525"})
    assert await resolver.resolve("example.com") == [Destination("127.0.0.1", 2525, 0, routed=True)]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("mx.example.com:2525", ("mx.example.com", 2525)),
        ("mx.example.com", ("mx.example.com", 25)),
        ("127.0.0.1:26", ("127.0.0.1", 26)),
        ("[2001:db8::1]:587", ("2001:db8::1", 587)),
        ("[::1]", ("::1", 25)),
        ("::1", ("::1", 25)),
    ],
)
def test_parse_route(value: str, expected: tuple[str, int]) -> None:
    assert parse_route(value, 25) == expected


@pytest.mark.parametrize("value", ["", ":25", "host:", "host:0", "host:70000", "host:x", "[::1"])
def test_parse_route_rejects(value: str) -> None:
    with pytest.raises(ValueError, match="bad route"):
        parse_route(value, 25)
    with pytest.raises(ValueError, match="bad route"):
        MxResolver(nameservers=["127.0.0.1"], routes={"example.test": value})


def test_bad_route_domain() -> None:
    with pytest.raises(ValueError, match="bad route domain ''"):
        MxResolver(nameservers=["127.0.0.1"], routes={"": "127.0.0.1:25"})


def test_missing_dnsmasq_fails_on_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(
        pytest.fail.Exception, match=r"^dnsmasq is missing: apt-get install dnsmasq$"
    ):
        dns_support.DnsServer()
    monkeypatch.delenv("CI")
    with pytest.raises(
        pytest.skip.Exception, match=r"^dnsmasq is missing: apt-get install dnsmasq$"
    ):
        dns_support.DnsServer()


async def test_fixture_serves_long_txt_in_255_character_strings(nameserver: DnsServer) -> None:
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.port = nameserver.port
    resolver.nameservers = nameserver.nameservers
    answer = await resolver.resolve("sel._domainkey.two.test", "TXT", search=False)
    strings = [s for rdata in answer for s in rdata.strings]
    assert [len(s) for s in strings] == [255, 163]
    assert b"".join(strings).decode() == LONG_TXT


async def test_per_test_fixture(dns_server: DnsServer) -> None:
    dns_server.mx("own.test", "mx.own.test", 7).a("mx.own.test", "127.0.0.1").start()
    resolver = MxResolver(nameservers=dns_server.nameservers, port=dns_server.port, timeout=2)
    assert await resolver.resolve("own.test") == [Destination("mx.own.test", 25, 7)]
    assert await resolver.addresses("mx.own.test") == ["127.0.0.1"]
    with pytest.raises(RuntimeError, match="before start"):
        dns_server.a("late.test", "127.0.0.2")


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("192.0.2.1", False),  # documentation range
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.1.1", False),
        ("100.64.0.1", False),  # carrier-grade NAT
        ("::1", False),
        ("fe80::1", False),
        ("fd00::1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("8.8.8.8", True),
        ("2001:4860:4860::8888", True),
        ("not an address", False),
    ],
)
def test_which_addresses_dns_may_send_mail_to(address: str, public: bool) -> None:
    assert is_public_address(address) is public
