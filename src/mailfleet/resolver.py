"""The DNS resolver every part of mailfleet asks (MX lookups for delivery,
SPF/DKIM/DMARC for inbound mail), built one way from the settings
``smtp.dns_servers``, ``smtp.dns_port`` and ``smtp.dns_timeout_seconds``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import dns.exception
import dns.resolver

ResolverT = TypeVar("ResolverT", bound=dns.resolver.BaseResolver)


def build_resolver(
    kind: type[ResolverT],
    *,
    nameservers: Sequence[str] | None = None,
    port: int = 53,
    timeout: float = 10.0,
    cache: dns.resolver.LRUCache | None = None,
) -> ResolverT:
    """A dnspython resolver of ``kind`` (``dns.asyncresolver.Resolver`` or the
    blocking ``dns.resolver.Resolver``). ``nameservers`` None or empty uses the
    system configuration (/etc/resolv.conf); otherwise those addresses, all on
    ``port``. ``timeout`` bounds each lookup as a whole, retries included.
    ``cache``: answers kept for their TTL (thread-safe, shareable between an
    asyncio and a blocking resolver); none by default."""
    resolver = kind(configure=not nameservers)
    resolver.port = port
    if nameservers:
        resolver.nameservers = list(nameservers)
    resolver.timeout = timeout
    resolver.lifetime = timeout
    # Without one, nothing is kept: delivery's MX lookups are few and go to
    # the system's caching resolver. Inbound mail's checks ask about every
    # mail's sender (filters/sender_auth.py), mostly the same few big
    # domains: they keep answers for their TTL, as any resolver would.
    resolver.cache = cache
    return resolver


def describe_failure(exc: dns.exception.DNSException) -> str:
    """A lookup's failure in a few words, for logs, delivery status and
    Authentication-Results ("timed out", "no name server answered ...")."""
    if isinstance(exc, dns.exception.Timeout):
        return "timed out"
    if isinstance(exc, dns.resolver.NoNameservers):
        return "no name server answered (SERVFAIL or REFUSED)"
    return str(exc) or type(exc).__name__
