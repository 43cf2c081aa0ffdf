"""Real receivers on 127.0.0.1 for action tests: HTTP (webhook, fake Slack) and SMTP.

Each runs on its own thread, so it serves both async tests and code that runs
its own event loop (``watcher test-action`` through ``main()``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

Reply = tuple[int, dict[str, str], bytes]


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    """Lower-cased names."""
    body: bytes
    signature_ok: bool | None = None
    """With a secret: whether X-Watcher-Signature is the HMAC of the raw body."""

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}


def reply(status: int = 200, body: bytes | str | dict = b"ok",
          headers: dict[str, str] | None = None) -> Reply:
    if isinstance(body, dict):
        return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(
            body).encode()
    data = body.encode() if isinstance(body, str) else body
    return status, {"Content-Type": "text/plain", **(headers or {})}, data


class HttpReceiver:
    """Records every request; answers from ``script`` first, then by route, else 200.

    ``secret`` makes it check the HMAC signature over the raw body bytes.
    """

    def __init__(self, secret: str | None = None) -> None:
        self.secret = secret
        self.requests: list[Request] = []
        self.script: list[Reply] = []
        self.routes: dict[str, Callable[[Request], Reply]] = {}
        self.delay = 0.0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                receiver._handle(self)

            do_PUT = do_POST

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.02,),
                                        daemon=True)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def fail(self, *replies: Reply) -> None:
        """Answer the next requests with ``replies``, in order."""
        self.script.extend(replies)

    def __enter__(self) -> HttpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length)
        parts = urlsplit(handler.path)
        request = Request(handler.command, parts.path, parse_qs(parts.query),
                          {k.lower(): v for k, v in handler.headers.items()}, body)
        if self.secret is not None:
            expected = "sha256=" + hmac.new(self.secret.encode(), body,
                                            hashlib.sha256).hexdigest()
            given = request.headers.get("x-watcher-signature", "")
            request.signature_ok = hmac.compare_digest(expected, given)
        with self._lock:
            self.requests.append(request)
            scripted = self.script.pop(0) if self.script else None
        if self.delay:
            threading.Event().wait(self.delay)
        route = self.routes.get(parts.path)
        status, headers, data = scripted or (route(request) if route else reply())
        try:
            handler.send_response(status)
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        except OSError:  # the client gave up (timeout tests)
            pass


# --- fake Slack ----------------------------------------------------------------------------

SLACK_HOOK = "/services/T000/B000/Zk3hookcanary9Qw8Lm2"
UPLOAD_PATH = "/upload/F0TEST"


class FakeSlack(HttpReceiver):
    """An incoming webhook plus the Web API methods the action uses."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token
        self.uploads: list[bytes] = []
        self.routes = {
            SLACK_HOOK: lambda r: reply(200, "ok"),
            "/api/chat.postMessage": self._post_message,
            "/api/files.getUploadURLExternal": self._get_upload_url,
            UPLOAD_PATH: self._upload,
            "/api/files.completeUploadExternal": self._complete,
        }

    @property
    def hook_url(self) -> str:
        return self.url(SLACK_HOOK)

    @property
    def api_base(self) -> str:
        return self.url("/api")

    def calls(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    def _authorized(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {self.token}"

    def _post_message(self, request: Request) -> Reply:
        if not self._authorized(request):
            return reply(200, {"ok": False, "error": "invalid_auth"})
        return reply(200, {"ok": True, "channel": request.json()["channel"],
                           "ts": "1700000000.000100"})

    def _get_upload_url(self, request: Request) -> Reply:
        if not self._authorized(request):
            return reply(200, {"ok": False, "error": "invalid_auth"})
        form = request.form()
        if not form.get("filename") or not form.get("length", "").isdigit():
            return reply(200, {"ok": False, "error": "invalid_arguments"})
        return reply(200, {"ok": True, "upload_url": self.url(UPLOAD_PATH),
                           "file_id": "F0TEST"})

    def _upload(self, request: Request) -> Reply:
        self.uploads.append(request.body)
        return reply(200, f"OK - {len(request.body)}")

    def _complete(self, request: Request) -> Reply:
        if not self._authorized(request):
            return reply(200, {"ok": False, "error": "invalid_auth"})
        files = json.loads(request.form()["files"])
        return reply(200, {"ok": True, "files": [{"id": f["id"]} for f in files]})


# --- SMTP ----------------------------------------------------------------------------------

@dataclass
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    auth_user: str | None = None
    tls: bool = False

    @property
    def message(self) -> EmailMessage:
        return message_from_bytes(self.data, policy=policy.default)  # type: ignore[return-value]


@dataclass
class _Handler:
    mails: list[Mail] = field(default_factory=list)
    data_replies: list[str] = field(default_factory=list)
    """Replies to DATA used first (e.g. "451 4.3.0 try later"), then 250."""
    refuse: set[str] = field(default_factory=set)
    """Recipients refused with 550."""

    async def handle_RCPT(self, server, session, envelope, address, options):
        if address in self.refuse:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.data_replies:
            return self.data_replies.pop(0)
        self.mails.append(Mail(envelope.mail_from, list(envelope.rcpt_tos),
                               envelope.original_content or envelope.content,
                               getattr(session, "auth_data", None),
                               session.ssl is not None))
        return "250 OK queued"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SmtpReceiver:
    """aiosmtpd on 127.0.0.1: ``security`` none | starttls | tls, optional AUTH."""

    def __init__(self, *, security: str = "none", username: str | None = None,
                 password: str | None = None, cert: tuple[Path, Path] | None = None,
                 exclude_auth: tuple[str, ...] = ()) -> None:
        self.handler = _Handler()
        self.username, self.password = username, password
        self.auth_attempts: list[str] = []
        kwargs: dict[str, Any] = {}
        if username is not None:
            kwargs.update(authenticator=self._authenticate, auth_required=security != "none",
                          auth_require_tls=security != "none",
                          auth_exclude_mechanism=list(exclude_auth))
        if security != "none":
            assert cert is not None
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*cert)
            if security == "tls":
                kwargs["ssl_context"] = context
            else:
                kwargs.update(tls_context=context, require_starttls=True)
        self.port = free_port()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port,
                                     **kwargs)

    @property
    def mails(self) -> list[Mail]:
        return self.handler.mails

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        self.auth_attempts.append(mechanism)
        ok = (isinstance(auth_data, LoginPassword)
              and auth_data.login.decode() == self.username
              and auth_data.password.decode() == self.password)
        return AuthResult(success=ok, handled=False, auth_data=self.username if ok else None)

    def __enter__(self) -> SmtpReceiver:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key (PEM files in ``directory``)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "watcher test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def walk(message: EmailMessage) -> Iterator[EmailMessage]:
    yield from message.walk()  # type: ignore[misc]


# --- sample events -------------------------------------------------------------------------

def jpeg(width: int = 64, height: int = 48) -> bytes:
    """A small real JPEG."""
    import cv2
    import numpy as np

    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 2] = (0, 0, 255)
    ok, buf = cv2.imencode(".jpg", image)
    assert ok
    return buf.tobytes()


def event(kind: str = "firing", **changes: Any):  # -> AlertEventRecord
    """A stored-looking alert event of rule dock-occupied on stream dock."""
    from dataclasses import replace

    from watcher.engine.state import Kind
    from watcher.engine.store import AlertEventRecord

    created = {"firing": 1_714_564_800_000, "repeat": 1_714_564_860_000,
               "resolved": 1_714_564_920_000}[kind]
    record = AlertEventRecord(
        event_key=f"dock-occupied:dock:3:{kind}:{created}", rule="dock-occupied",
        stream_key="dock", episode=3, kind=Kind(kind), notify=True, created_ms=created,
        severity="critical", labels={"site": "north"},
        answer={"people": 2, "person_present": kind != "resolved",
                "description": "Two people at the dock door"},
        urls=("ovs://streams/s-1?frame_index=41",), stream_ids=("s-1",),
        stream_time_ms=41_000, model="local/vision",
        usage={"prompt_tokens": 800, "completion_tokens": 20},
        snapshot=jpeg() if kind != "resolved" else None,
        snapshot_type="image/jpeg" if kind != "resolved" else None,
        extra={"prompt": "Is anyone at the loading dock?", "streams": ["dock"],
               "started_ms": 1_714_564_800_000},
        id=42,
    )
    return replace(record, **changes)
