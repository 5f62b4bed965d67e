"""Distributed implementations of the storage roles: PostgreSQL shards, S3,
NATS JetStream, Redis. Only ``storage.factory`` and the contract suites import
them; nothing above the interfaces knows which backend it runs on."""
