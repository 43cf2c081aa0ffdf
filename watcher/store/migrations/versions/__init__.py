"""Alembic revisions, one module each (loaded by Alembic, not imported)."""
