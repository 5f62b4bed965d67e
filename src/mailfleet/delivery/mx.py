"""Where mail for a domain goes: MX lookup for outbound delivery.

RFC 5321 section 5.1: the MX records of the domain, lowest preference first,
records of equal preference in random order (load spreading); when the domain
has no MX record at all, an implicit MX of preference 0 naming the domain itself,
provided it has an address (A or AAAA). RFC 7505: a single MX whose exchange is
the root name "." (a null MX) says the domain accepts no mail, so the message
bounces at once instead of being retried.

Errors are sorted into what the caller does with them: ``NullMx`` and
``NoDestination`` are permanent (bounce now), ``TemporaryDnsFailure`` (SERVFAIL,
REFUSED, timeouts) means retry later. Each carries the enhanced status code
(RFC 3463; 5.1.10 from RFC 7505 section 4) a bounce for it reports.

Host names are returned, not addresses: the connection code resolves each with
``MxResolver.addresses`` when it gets to it, so a long MX list costs no lookups
for hosts never tried. A static route map (``[smtp.routes]``, for development
and tests) replaces DNS for the domains it names, ``"*"`` for every domain.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
from dns.rdtypes.ANY.MX import MX

from mailfleet.resolver import build_resolver, describe_failure

WILDCARD_ROUTE = "*"


@dataclass(frozen=True, slots=True)
class Destination:
    """One host to try, in the order ``MxResolver.resolve`` returns them."""

    host: str
    port: int
    preference: int
    routed: bool = False  # from the static route map, not from DNS


class NullMx(Exception):
    """RFC 7505: the domain publishes a null MX and accepts no mail."""

    status = "5.1.10"


class NoDestination(Exception):
    """The domain does not exist, or has neither MX nor address records."""

    status = "5.1.2"


class TemporaryDnsFailure(Exception):
    """The lookup failed (timeout, SERVFAIL, REFUSED): try again later."""

    status = "4.4.3"


def _ascii_name(domain: str) -> str:
    """Lower-case A-label form (IDNA) without the final dot."""
    name = domain.strip().rstrip(".").lower()
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            raise NoDestination(f"{domain!r} is not a valid domain name") from None
    if not name:
        raise NoDestination(f"{domain!r} is not a valid domain name")
    return name


def parse_route(value: str, default_port: int) -> tuple[str, int]:
    """``host:port``, ``[v6]:port``, ``host`` or ``[v6]`` → (host, port)."""
    text = value.strip()
    port_text: str | None = None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"bad route {value!r}: expected HOST:PORT")
        if rest:
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:  # a bare name, or a bare IPv6 address
        host = text
    if not host:
        raise ValueError(f"bad route {value!r}: no host")
    if port_text is None:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
        raise ValueError(f"bad route {value!r}: bad port")
    return host, int(port_text)


def is_public_address(address: str) -> bool:
    """Whether mail may go to this IP when DNS names it: not loopback,
    private, link-local, multicast, reserved or unspecified. A domain whose
    MX points inside our network must not make us talk to internal services
    (the admin's static routes may)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return ip.is_global and not ip.is_multicast


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class MxResolver:
    """MX resolution through dnspython's asyncio resolver.

    ``nameservers`` None (or empty) uses the system configuration
    (/etc/resolv.conf); otherwise those addresses, all on ``port``. ``timeout``
    bounds each lookup as a whole, retries included. ``routes`` maps a domain
    (or ``"*"``) to ``"host:port"`` and is consulted before DNS.
    """

    def __init__(
        self,
        *,
        nameservers: Sequence[str] | None = None,
        port: int = 53,
        timeout: float = 10.0,
        routes: Mapping[str, str] | None = None,
        default_port: int = 25,
        rng: random.Random | None = None,
    ) -> None:
        self._resolver = build_resolver(
            dns.asyncresolver.Resolver, nameservers=nameservers, port=port, timeout=timeout
        )
        self._default_port = default_port
        self._rng = rng or random.Random()
        self._routes: dict[str, tuple[str, int]] = {}
        for key, value in (routes or {}).items():
            try:
                name = key if key == WILDCARD_ROUTE else _ascii_name(key)
            except NoDestination:
                raise ValueError(f"bad route domain {key!r}") from None
            self._routes[name] = parse_route(value, default_port)

    async def resolve(self, domain: str) -> list[Destination]:
        """Hosts to try for ``domain``, in order. Raises NullMx, NoDestination
        (permanent) or TemporaryDnsFailure."""
        name = _ascii_name(domain)
        route = self._routes.get(name) or self._routes.get(WILDCARD_ROUTE)
        if route is not None:
            return [Destination(host=route[0], port=route[1], preference=0, routed=True)]
        qname = _dns_name(name)
        try:
            answer = await self._resolver.resolve(qname, dns.rdatatype.MX, search=False)
        except dns.resolver.NXDOMAIN:
            raise NoDestination(f"{name}: no such domain") from None
        except dns.resolver.NoAnswer:
            return await self._implicit_mx(name, qname)
        except dns.exception.DNSException as exc:
            raise TemporaryDnsFailure(
                f"{name}: MX lookup failed: {describe_failure(exc)}"
            ) from None
        records = [rdata for rdata in answer if isinstance(rdata, MX)]
        if not records:
            return await self._implicit_mx(name, qname)
        # RFC 7505 section 3: a null MX is the domain's only MX. A root name
        # beside real exchanges is a misconfiguration; the real ones are used.
        if all(r.exchange == dns.name.root for r in records):
            raise NullMx(f"{name} accepts no mail (null MX, RFC 7505)")
        best: dict[str, int] = {}
        for r in records:
            if r.exchange == dns.name.root:
                continue
            host = r.exchange.to_text(omit_final_dot=True).lower()
            best[host] = min(r.preference, best.get(host, r.preference))
        hosts = list(best.items())
        self._rng.shuffle(hosts)  # sort() is stable: equal preferences stay shuffled
        hosts.sort(key=lambda item: item[1])
        return [Destination(host=h, port=self._default_port, preference=p) for h, p in hosts]

    async def addresses(self, host: str) -> list[str]:
        """IP addresses of ``host``: IPv4 (A) first, then IPv6 (AAAA), each in the
        order the server gave. An IP literal is returned as is. Raises
        NoDestination when the name has no address, TemporaryDnsFailure when a
        lookup failed and the other gave nothing."""
        literal = host.strip("[]")
        if _is_ip(literal):
            return [literal]
        name = _ascii_name(host)
        if name == "localhost":  # RFC 6761 section 6.3
            return ["127.0.0.1", "::1"]
        return await self._addresses(name, _dns_name(name))

    async def _implicit_mx(self, name: str, qname: dns.name.Name) -> list[Destination]:
        # RFC 5321 section 5.1: no MX records → the domain itself, preference 0.
        try:
            await self._addresses(name, qname)
        except NoDestination:
            raise NoDestination(f"{name}: no MX and no address records") from None
        return [Destination(host=name, port=self._default_port, preference=0)]

    async def _addresses(self, name: str, qname: dns.name.Name) -> list[str]:
        results = await asyncio.gather(
            self._resolver.resolve(qname, dns.rdatatype.A, search=False),
            self._resolver.resolve(qname, dns.rdatatype.AAAA, search=False),
            return_exceptions=True,
        )
        found: list[str] = []
        failures: list[str] = []
        missing = 0
        for result in results:
            if isinstance(result, dns.resolver.NXDOMAIN | dns.resolver.NoAnswer):
                missing += 1
            elif isinstance(result, dns.exception.DNSException):
                failures.append(describe_failure(result))
            elif isinstance(result, BaseException):
                raise result
            else:
                found.extend(rdata.to_text() for rdata in result)
        if found:
            return found
        if failures:
            reasons = "; ".join(dict.fromkeys(failures))
            raise TemporaryDnsFailure(f"{name}: address lookup failed: {reasons}")
        raise NoDestination(f"{name}: no address records")


def _dns_name(name: str) -> dns.name.Name:
    try:
        return dns.name.from_text(name, origin=dns.name.root)
    except dns.exception.DNSException:
        raise NoDestination(f"{name!r} is not a valid domain name") from None
