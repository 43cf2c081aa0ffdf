"""Alembic migrations of the state database, shipped inside the package.

They run on SQLite and PostgreSQL alike (:mod:`watcher.store.migrate` drives
them; there is no alembic.ini). Revisions are linear and named by number:
``0001``, ``0002``, ... ``down_revision`` is the previous number.

Adding a table or column (for example the cluster's membership and lease
tables): write ``versions/NNNN_what.py`` with the next number and
``down_revision`` set to the current head, using ``op.create_table`` /
``op.add_column`` with portable SQLAlchemy types (BigInteger for
milliseconds, Text for strings, LargeBinary for bytes), and describe the
same shape in the module that queries it (:mod:`watcher.store.schema`,
:mod:`watcher.cluster.sqlstore`); ``tests/store/test_schema_matches.py``
fails when code and migrations disagree. A revision must never change once
released: write a new one instead. Downgrades are not supported.

Other components reach the same database through the store's engine
(``AlertStore(...).db.engine``), so the cluster's tables share its pool,
its migrations and its ``state.url``.

``0001`` to ``0003`` are the schema the SQLite-only store kept under
``PRAGMA user_version`` 1 to 3; such a file is stamped with the matching
revision and then upgraded (see :func:`watcher.store.migrate.upgrade`).
"""
