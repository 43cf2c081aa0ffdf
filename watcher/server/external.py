"""Media parts whose URL is not an ``ovs://`` reference: what may go to which model.

* ``data:`` URLs carry their bytes: any model gets them; a local model that
  cannot read one answers its own 400.
* ``http(s)://`` URLs would be fetched by the model. A local model cannot fetch
  (400 ``image_url_unsupported``/``video_url_unsupported``); an upstream model
  is sent the URL as given only when ``forward_media_urls`` is on, because the
  upstream fetches whatever the caller names, private addresses included (400
  ``media_url_forbidden`` otherwise).
* Anything else (``file:``, ``ftp:``, a bare path) is a 400 ``media_url_unsupported``.

Messages never echo the URL: it may carry credentials.
"""

from __future__ import annotations

from typing import Literal

from watcher.server.backends.base import ExternalImage, ExternalVideo, ModelBackend
from watcher.server.problems import ChatProblem

PartType = Literal["image_url", "video_url"]


def external_part(url: str, part_type: PartType, backend: ModelBackend, *,
                  forward_media_urls: bool) -> ExternalImage | ExternalVideo:
    """The part to hand ``backend`` for a non-ovs ``url``, or raise a 400 saying why not."""
    scheme = url.partition(":")[0].strip().lower() if ":" in url else ""
    if scheme in ("http", "https"):
        if not backend.fetches_urls:
            raise ChatProblem(
                400, f"model {backend.id} cannot fetch an http(s) {part_type}; send an "
                "ovs://streams/{id}?... reference or a data: URL, or ask an upstream model",
                type="validation_error", code=f"{part_type}_unsupported")
        if not forward_media_urls:
            raise ChatProblem(
                400, f"this server does not send http(s) {part_type}s to upstream models "
                "(its forward_media_urls setting is off: the model would fetch any address, "
                "private ones included); send an ovs:// reference or a data: URL",
                type="validation_error", code="media_url_forbidden")
    elif scheme != "data":
        raise ChatProblem(
            400, f"a {part_type} must be an ovs://streams/{{id}}?... reference, a data: URL "
            "or an http(s) URL", type="validation_error", code="media_url_unsupported")
    return ExternalImage(url) if part_type == "image_url" else ExternalVideo(url)
