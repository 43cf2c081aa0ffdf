"""watcher: keep live video streams published, ask VLMs about them, deliver alerts."""

__version__ = "0.1.0"
