"""The composition root: opens the stores the settings name and builds the
services on them. ``mailfleet serve`` and the tests start the same thing."""

from __future__ import annotations

from dataclasses import dataclass

from mailfleet.accounts.service import AccountService
from mailfleet.blobs import BlobSweep
from mailfleet.config import Settings
from mailfleet.delivery.abuse import OutboundAbuse
from mailfleet.delivery.incoming import IncomingService
from mailfleet.delivery.mx import MxResolver
from mailfleet.delivery.outgoing import OutgoingService
from mailfleet.delivery.quarantine import QuarantineService
from mailfleet.delivery.send import SendService
from mailfleet.delivery.transport import SmtpTransport
from mailfleet.filters.bayes import BayesFilter
from mailfleet.filters.pipeline import FilterPipeline
from mailfleet.mailbox.service import MailboxService
from mailfleet.ratelimit import RateLimiter
from mailfleet.realtime import ChangeFeed
from mailfleet.search.service import SearchService
from mailfleet.storage.factory import Stores, create_stores


@dataclass
class Runtime:
    settings: Settings
    stores: Stores
    accounts: AccountService
    mailbox: MailboxService
    sending: SendService
    incoming: IncomingService
    quarantine: QuarantineService
    outgoing: OutgoingService
    search: SearchService
    limiter: RateLimiter
    feed: ChangeFeed
    blob_sweep: BlobSweep

    @classmethod
    async def open(cls, settings: Settings) -> Runtime:
        stores = create_stores(settings)
        await stores.open()  # on failure it closes what it opened
        limiter = RateLimiter(stores.cache)
        smtp = settings.smtp
        bayes = BayesFilter.from_settings(stores.bayes, settings.filters)
        incoming = IncomingService(
            stores.directory,
            stores.mailbox,
            stores.blobs,
            stores.queue,
            smtp.hostname,
            stores.cache,
            FilterPipeline.from_settings(settings),
            bayes,
        )
        resolver = MxResolver(
            nameservers=smtp.dns_servers,
            port=smtp.dns_port,
            timeout=smtp.dns_timeout_seconds,
            routes=smtp.routes,
            default_port=settings.delivery.remote_port,
        )
        runtime = cls(
            settings=settings,
            stores=stores,
            accounts=AccountService(
                stores.directory, stores.mailbox, settings.auth, stores.events, stores.cache
            ),
            mailbox=MailboxService(stores.mailbox, stores.blobs, bayes),
            sending=SendService(
                stores.directory,
                stores.mailbox,
                stores.blobs,
                stores.queue,
                limiter,
                settings.limits,
                settings.smtp.hostname,
                FilterPipeline.for_sending(settings.filters),
                OutboundAbuse(stores.directory, stores.cache, limiter, settings.limits),
                bayes,
            ),
            incoming=incoming,
            quarantine=QuarantineService(stores.directory, incoming),
            outgoing=OutgoingService(
                stores.directory,
                stores.mailbox,
                stores.blobs,
                stores.queue,
                incoming,
                SmtpTransport(resolver, smtp.hostname, settings.delivery),
                settings.delivery,
                smtp.hostname,
            ),
            search=SearchService(stores.directory, stores.mailbox, stores.search, stores.blobs),
            limiter=limiter,
            feed=ChangeFeed(
                stores.mailbox, stores.events, poll_seconds=settings.realtime.poll_seconds
            ),
            blob_sweep=BlobSweep(
                stores.mailbox,
                stores.directory,
                stores.blobs,
                stores.queue,
                grace_seconds=settings.blobs.grace_seconds,
                queue_scan_limit=settings.blobs.queue_scan_limit,
            ),
        )
        for seed in settings.domains:
            await runtime.accounts.ensure_domain(seed.name, open_signup=seed.open_signup)
        return runtime

    async def close(self) -> None:
        await self.feed.close()
        await self.incoming.filters.close()
        await self.stores.close()
