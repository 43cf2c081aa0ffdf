"""The migrations build exactly the tables the code queries (on both backends).

Alembic's autogenerate comparison between the migrated database and the
code's table definitions (:mod:`watcher.store.schema`, which holds the
cluster's tables too) must find no difference: a table or column changed in
code without a migration fails here.
"""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncConnection

from watcher.store import AlertStore, schema


def combined() -> MetaData:
    metadata = MetaData()
    for table in schema.metadata.tables.values():
        table.to_metadata(metadata)
    return metadata


def differences(conn: Any) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    ignored = {"alembic_version"}
    return [d for d in compare_metadata(context, combined())
            if not (d[0] == "remove_table" and d[1].name in ignored)
            and d[0] not in ("add_index", "remove_index")]  # indexes live in migrations only


async def test_migrated_schema_equals_the_code(state_location: str) -> None:
    async with AlertStore(state_location) as store:
        async def compare(conn: AsyncConnection) -> list[Any]:
            return await conn.run_sync(differences)
        assert await store.db.run(compare, write=False) == []
