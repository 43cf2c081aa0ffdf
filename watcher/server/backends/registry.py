"""Build the model backends a server's settings ask for."""

from __future__ import annotations

from typing import TYPE_CHECKING

from watcher.server.backends.base import ModelBackend
from watcher.server.backends.frames import FramesModel

if TYPE_CHECKING:
    from watcher.server.settings import ServerSettings


def build_backends(settings: ServerSettings) -> list[ModelBackend]:
    from watcher.server.backends.upstream import Upstream
    from watcher.server.backends.vision import VisionModel

    backends: list[ModelBackend] = [FramesModel()]
    if settings.enable_vision:
        backends.append(VisionModel())
    for upstream in settings.upstreams:
        backends.extend(Upstream(upstream).models())
    return backends
