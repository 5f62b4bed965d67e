"""The distributed queue, cache and event bus are chosen by URL scheme, and
their URLs carry the servers, the prefix and the replicas (nothing is opened)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailfleet.storage.distributed.nats_queue import NatsQueue, parse_nats_queue_url
from mailfleet.storage.distributed.redis_cache import RedisCache, parse_redis_url
from mailfleet.storage.distributed.redis_events import RedisEventBus
from mailfleet.storage.factory import create_stores
from mailfleet.storage.metered_queue import MeteredQueue
from tests.conftest import make_settings


def test_nats_and_redis_urls_select_the_distributed_implementations(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        {
            "storage": {
                "queue_url": "nats://127.0.0.1:4222,127.0.0.1:4223/?prefix=fleet&replicas=3",
                "cache_url": "redis://127.0.0.1:6379/2?prefix=fleet",
                "events_url": "redis://127.0.0.1:6379?prefix=fleet",
            }
        },
    )
    stores = create_stores(settings)
    assert isinstance(stores.queue, MeteredQueue)
    assert isinstance(stores.queue.inner, NatsQueue)
    assert stores.queue.inner.options.servers == ("nats://127.0.0.1:4222", "nats://127.0.0.1:4223")
    assert stores.queue.inner.options.replicas == 3
    assert stores.queue.inner.stream_name("outgoing") == "fleet_outgoing"
    assert stores.queue.policy("incoming").max_deliveries == 10  # the factory's policies
    # Metered (storage/metered.py) around the outage-tolerant cache around Redis.
    cache = stores.cache.inner.inner  # type: ignore[attr-defined]
    assert isinstance(cache, RedisCache)
    assert cache.options == parse_redis_url("redis://127.0.0.1:6379/2?prefix=fleet")
    assert cache.options.url == "redis://127.0.0.1:6379/2"
    events = stores.events.inner  # type: ignore[attr-defined]
    assert isinstance(events, RedisEventBus)
    assert events.options.prefix == "fleet"


def test_nats_url_defaults_and_refusals() -> None:
    options = parse_nats_queue_url("nats://127.0.0.1:4222")
    assert (options.prefix, options.replicas) == ("mailfleet", 1)
    assert options.publish_patience == 20
    patient = parse_nats_queue_url("nats://127.0.0.1:4222/?publish_patience=4.5")
    assert patient.publish_patience == 4.5
    with pytest.raises(ValueError, match="replicas"):
        parse_nats_queue_url("nats://127.0.0.1:4222/?replicas=7")
    with pytest.raises(ValueError, match="publish_patience"):
        parse_nats_queue_url("nats://127.0.0.1:4222/?publish_patience=0.5")
    with pytest.raises(ValueError, match="prefix"):
        parse_nats_queue_url("nats://127.0.0.1:4222/?prefix=a.b")
    with pytest.raises(ValueError, match="prefix"):
        parse_redis_url("redis://127.0.0.1:6379?prefix=a b")
