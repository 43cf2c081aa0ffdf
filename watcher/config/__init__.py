"""The one YAML file users run watcher from: its models and :func:`load_config`.

::

    WatcherConfig                         root.py
    ├── overshoot: OvershootConfig        overshoot.py: the API (cloud, or `embedded`), key, model
    │   └── embedded: EmbeddedServerConfig    options of the in-process server
    ├── streams: [StreamConfig]           streams.py: live sources kept published (or pulled)
    ├── rules: [RuleConfig]               scheduled questions and their alert conditions
    ├── include: [IncludeConfig]          rule pack files whose rules join `rules` (packs.py)
    ├── actions: {name: ActionConfig}     where alerts go (webhook, slack, email, mqtt)
    ├── state: StateConfig                the state database (SQLite file or PostgreSQL)
    ├── status: StatusConfig              health, metrics, status and the console (watcher.observe)
    ├── clips: ClipsConfig                evidence clips kept with alert events (watcher.console)
    └── cluster: ClusterConfig            several instances sharing the cameras (watcher.cluster)

    load.py        load_config / parse_config: read, validate, merge packs, check across
    references.py  the checks across items and sections (unique names, unknown names)
    files.py       reading the files a config names, and naming them in messages

The sections without a module here live with their package (``watcher.engine.rules``,
``watcher.actions.config``, ...); they derive from :class:`watcher.configbase.Section`,
which is kept outside this package so that they can without an import cycle.
"""

from watcher.config.load import load_config, parse_config
from watcher.config.root import WatcherConfig
from watcher.config.streams import StreamConfig

__all__ = ["StreamConfig", "WatcherConfig", "load_config", "parse_config"]
