"""The subcommands of ``watcher`` (put together by :mod:`watcher.cli`), one module each.

::

    common.py    the -c FILE option, loading the config it names, argument types
    serve.py     serve: the embedded Overshoot-compatible server on its own
    check.py     check: validate a config file and the models its rules ask
    run.py       run: the daemon
    models.py    models: the models the configured API serves
    testing.py   test-rule, test-action: try one rule or one action now
    alerts.py    alerts: events from the state store, or feedback as labels
    silence.py   silence add|list|expire
    status.py    status: a running daemon's /status
    db.py        db upgrade|status: the state database's schema

``backtest`` lives with the rest of the backtest, in :mod:`watcher.backtest.command`.
"""
