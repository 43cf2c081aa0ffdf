"""An HTTP MJPEG camera on 127.0.0.1 that can be switched off and on again on one port.

It serves a synthetic scene as ``multipart/x-mixed-replace`` JPEGs, paced in real
time, the way cheap IP cameras do. Frame ``n`` is the scene at ``n / fps`` seconds
after the camera object was created, so the scene's event schedule is known in
``time.monotonic()`` terms (:attr:`MjpegCamera.t0`) across restarts. ``stop()``
closes every open connection, like a camera that reboots or loses power.
"""

from __future__ import annotations

import math
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import cv2
from support.receivers import free_port

from watcher.media.testsrc import SyntheticScene

BOUNDARY = "frame"


@dataclass
class MjpegCamera:
    scene: SyntheticScene
    port: int = field(default_factory=free_port)
    t0: float = field(default_factory=time.monotonic)
    """``time.monotonic()`` of scene time 0."""
    connections: int = 0
    """Requests served since creation."""
    _httpd: ThreadingHTTPServer | None = None
    _off: threading.Event = field(default_factory=threading.Event)
    _sockets: set[socket.socket] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/video.mjpg"

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def start(self) -> None:
        self._off.clear()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True, name="mjpeg-camera").start()

    def stop(self) -> None:
        """Switch off: refuse new connections and cut the open ones."""
        self._off.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._sockets.clear()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with camera._lock:
                    camera._sockets.add(self.connection)
                    camera.connections += 1
                self.send_response(200)
                self.send_header("Content-Type",
                                 f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                try:
                    camera._stream(self.wfile)
                except OSError:
                    pass
                finally:
                    with camera._lock:
                        camera._sockets.discard(self.connection)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def _stream(self, out: Any) -> None:
        fps = self.scene.spec.fps
        n = math.floor((time.monotonic() - self.t0) * fps)
        while not self._off.is_set():
            _, jpeg = cv2.imencode(".jpg", self.scene.frame(n))
            data = jpeg.tobytes()
            out.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                      f"Content-Length: {len(data)}\r\n\r\n".encode() + data + b"\r\n")
            out.flush()
            n += 1
            delay = self.t0 + n / fps - time.monotonic()
            if delay < -1.0:  # fell behind (a slow reader): skip ahead, do not burst
                n = math.floor((time.monotonic() - self.t0) * fps)
            elif delay > 0 and self._off.wait(delay):
                return
