"""Alembic environment: runs on the connection handed over by
``upgrade_to_head``/``ensure_schema``, or on ``-x url=...`` from the alembic
command line. Imports no live mailfleet code: the schema to compare against
when autogenerating a revision is handed over by ``scripts/new-migration``
(``config.attributes["target_metadata"]``)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

config = context.config
connection = config.attributes.get("connection")


def _run(conn: sa.engine.Connection) -> None:
    context.configure(
        connection=conn,
        target_metadata=config.attributes.get("target_metadata"),
        render_as_batch=conn.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


if connection is not None:
    _run(connection)
else:
    url = context.get_x_argument(as_dictionary=True)["url"]
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        _run(conn)
