"""``watcher run``: the daemon, from start-up to shutdown.

::

    daemon.py   Daemon: starts everything in order, reloads, runs the camera groups it
                owns in cluster mode, shuts down in reverse
    api.py      the configured API (the cloud, or the embedded server started here) and
                the client on it, shared with the tools that talk to the API
    chores.py   background loops: the first-frame report, pruning old events, watching
                the config files for changes
"""

from watcher.daemon.daemon import Daemon

__all__ = ["Daemon"]
