"""Spend against budgets (:mod:`watcher.engine.budget`): the statements, on a connection.

A row is ``(scope, name, period, window_start_ms, calls, tokens)``: the spend of one
budget's current hour or day window; writing it replaces the row of that budget and
period (an older window is simply overwritten).
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from watcher.store.schema import budget_spend

SpendRow = tuple[str, str, str, int, int, int]
"""``(scope, name, period, window_start_ms, calls, tokens)``."""


async def save_spend(conn: AsyncConnection, rows: Iterable[SpendRow]) -> None:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    for scope, name, period, start_ms, calls, tokens in rows:
        stmt = dialect.insert(budget_spend).values(
            scope=scope, name=name, period=period, window_start_ms=start_ms, calls=calls,
            tokens=tokens)
        await conn.execute(stmt.on_conflict_do_update(
            index_elements=["scope", "name", "period"],
            set_={"window_start_ms": stmt.excluded.window_start_ms,
                  "calls": stmt.excluded.calls, "tokens": stmt.excluded.tokens}))


async def load_spend(conn: AsyncConnection) -> list[SpendRow]:
    c = budget_spend.c
    rows = await conn.execute(select(c.scope, c.name, c.period, c.window_start_ms, c.calls,
                                     c.tokens))
    return [tuple(row) for row in rows]  # type: ignore[misc]
