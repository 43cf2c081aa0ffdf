"""Operating the daemon: the status listener, Prometheus metrics and ``watcher status``.

::

    config.py    StatusConfig: the ``status:`` section (off unless enabled)
    source.py    StatusSource: the live objects the daemon hands in; stream readiness
    snapshot.py  the ``/status`` JSON document
    metrics.py   a Prometheus collector reading the live objects at scrape time
    server.py    the HTTP listener: /healthz, /readyz, /metrics, /status
    report.py    ``watcher status``: read a running daemon's /status, print tables

Nothing here changes what the daemon does; it only reads.
"""
