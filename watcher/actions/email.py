"""The ``email`` action: one message per alert event over SMTP (aiosmtplib).

::

    actions:
      ops-mail:
        type: email
        host: smtp.example.com
        port: 587                       # default: 587 starttls, 465 tls, 25 none
        security: starttls              # starttls | tls (implicit TLS) | none
        username: alerts@example.com
        password: ${SMTP_PASSWORD}
        from: "Watcher <alerts@example.com>"
        to: [ops@example.com]

A message is ``multipart/alternative``: the ``body`` template as text, and
the ``html`` template (autoescaped) in a ``multipart/related`` with the
snapshot JPEG attached inline (``Content-ID``), which the default HTML shows
with ``<img src="cid:...">``. ``Message-ID`` is derived from the idempotency
key, and the key itself is sent as ``X-Watcher-Idempotency-Key``, so a
receiver (or a mail filter) can drop the copy a retry may send.

Errors: connection failures, timeouts, a TLS handshake cut short and a
refusal at connect (even a 5xx greeting: the server is unavailable rather
than refusing this message) are retried; SMTP 4xx replies are retried, 5xx
replies permanent (bad credentials, rejected sender or recipients); so are a
server without STARTTLS when ``security: starttls`` and an untrusted
certificate. If only some recipients are refused, the message went to the
others and the delivery counts as done (a retry would send it twice); the
refusal is logged.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, getaddresses, parseaddr
from typing import Any, Literal

import aiosmtplib
from pydantic import (
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from watcher.actions.base import Action, DeliveryError, register
from watcher.actions.options import ActionOptionsBase, existing_file, secret_value
from watcher.actions.templates import (
    DEFAULT_BODY,
    DEFAULT_HTML,
    DEFAULT_TITLE,
    SUMMARY_TITLE,
    check_template,
    compile_template,
    event_context,
    render,
    summary_context,
)
from watcher.duration import Duration
from watcher.engine.store import AlertEventRecord
from watcher.logs import redact

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}
SNAPSHOT_CID = "snapshot@watcher"
MAX_SUBJECT = 250
MIME_POLICY = SMTP.clone(max_line_length=998, cte_type="7bit")
"""CRLF, 7-bit safe (non-ASCII text is encoded, whatever the server supports), and headers
unfolded up to SMTP's line limit: Python folds a long Subject right after the colon, which
some readers show with a leading space."""


def _address(value: str) -> str:
    """One address (``a@b.c`` or ``Name <a@b.c>``), without line breaks."""
    value = value.strip()
    if any(c in value for c in "\r\n\x00"):
        raise ValueError("an address must not contain line breaks")
    _, addr = parseaddr(value)
    if "@" not in addr or addr.startswith("@") or addr.endswith("@"):
        raise ValueError(f"{value!r} is not an email address")
    return value


class EmailOptions(ActionOptionsBase):
    """Mail alert events through an SMTP server."""

    model_config = ConfigDict(populate_by_name=True)

    type: Literal["email"] = Field("email", description="email")
    host: str = Field(min_length=1, description="SMTP server name or address.")
    port: int | None = Field(None, ge=1, le=65535, description="SMTP port (default: 587 for "
                             "starttls, 465 for tls, 25 for none).")
    security: Literal["starttls", "tls", "none"] = Field(
        "starttls", description="starttls (upgrade a plain connection, required), tls "
        "(implicit TLS, as on port 465) or none (a trusted local relay only).")
    username: str | None = Field(None, min_length=1, description="SMTP login name.")
    password: SecretStr | None = Field(None, description="SMTP password (a secret).")
    from_addr: str = Field(alias="from", description="Sender: a@b.c or 'Name <a@b.c>'.")
    to: list[str] = Field(min_length=1, description="Recipients (one address, or a list).")
    subject: str = Field(DEFAULT_TITLE, description="Template of the Subject line.")
    body: str = Field(DEFAULT_BODY, description="Template of the plain-text part.")
    html: str = Field(DEFAULT_HTML, description="Template of the HTML part (autoescaped; "
                      "`snapshot_cid` names the inline snapshot: <img src=\"cid:...\">).")
    timeout: Duration = Field(30.0, gt=0, description="Deadline of each SMTP step.")
    ca_file: str | None = Field(
        None, description="PEM file of the CA(s) to trust for the server's certificate "
        "(default: the system's), relative to the config file.")

    @field_validator("to", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("to")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        return [_address(v) for v in value]

    @field_validator("from_addr")
    @classmethod
    def _sender(cls, value: str) -> str:
        return _address(value)

    @field_validator("subject", "body")
    @classmethod
    def _text_templates_compile(cls, value: str) -> str:
        check_template(value)
        return value

    @field_validator("html")
    @classmethod
    def _html_template_compiles(cls, value: str) -> str:
        compile_template(value, "html")
        return value

    @field_validator("ca_file")
    @classmethod
    def _ca_file_exists(cls, value: str | None, info: ValidationInfo) -> str | None:
        return existing_file(value, info)

    @model_validator(mode="after")
    def _login_is_complete(self) -> EmailOptions:
        if (self.username is None) != (self.password is None):
            raise ValueError("give both `username` and `password`, or neither")
        return self

    @property
    def smtp_port(self) -> int:
        return self.port or DEFAULT_PORTS[self.security]

    def secrets(self) -> list[str]:
        return list(filter(None, [secret_value(self.password)]))


@register
class EmailAction(Action):
    """Delivers events by email."""

    type = "email"
    options: EmailOptions

    def __init__(self, name: str, options: EmailOptions, *, http: Any = None) -> None:
        super().__init__(name, options)
        options.register_secrets()
        self.label = f"action {name!r} (email)"
        self._subject = compile_template(options.subject)
        self._body = compile_template(options.body)
        self._html = compile_template(options.html, "html")
        self._summary_subject = compile_template(SUMMARY_TITLE)
        self._summary_body = compile_template(DEFAULT_BODY)
        self._summary_html = compile_template(DEFAULT_HTML, "html")
        self._tls: ssl.SSLContext | None = None

    async def send(self, event: AlertEventRecord, idempotency_key: str) -> None:
        context = event_context(event, self.name)
        subject = self._render(self._subject, context, "subject")
        cid = SNAPSHOT_CID if event.snapshot is not None else None
        text = self._render(self._body, context, "body")
        html = self._render(self._html, {**context, "title": subject, "snapshot_cid": cid},
                            "html")
        message = self.message(subject, text, html, idempotency_key, context)
        if event.snapshot is not None:
            add_inline_image(message, event.snapshot, event.snapshot_type or "image/jpeg")
        await self._send(message)

    async def send_summary(self, events: list[AlertEventRecord], idempotency_key: str) -> None:
        context = summary_context(events, self.name)
        subject = self._render(self._summary_subject, context, "subject")
        text = self._render(self._summary_body, context, "body")
        html = self._render(self._summary_html, {**context, "title": subject}, "html")
        await self._send(self.message(subject, text, html, idempotency_key, context))

    def message(self, subject: str, text: str, html: str, idempotency_key: str,
                context: dict[str, Any]) -> EmailMessage:
        """The ``multipart/alternative`` message (text, then HTML)."""
        try:
            return self._message(subject, text, html, idempotency_key, context)
        except (ValueError, TypeError) as exc:  # a header the email package refuses
            raise DeliveryError(f"{self.label}: cannot build the message: {_short(str(exc))}",
                                permanent=True) from None

    def _message(self, subject: str, text: str, html: str, idempotency_key: str,
                 context: dict[str, Any]) -> EmailMessage:
        o = self.options
        message = EmailMessage(policy=MIME_POLICY)
        message["Subject"] = _cut(" ".join(subject.split()), MAX_SUBJECT)
        message["From"] = o.from_addr
        message["To"] = ", ".join(o.to)
        message["Date"] = formatdate(usegmt=True)
        message["Message-ID"] = message_id(idempotency_key, o.from_addr)
        message["X-Watcher-Idempotency-Key"] = idempotency_key
        message["X-Watcher-Status"] = str(context["status"])
        if context.get("rule"):
            message["X-Watcher-Rule"] = str(context["rule"])
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(text)
        message.add_alternative(html, subtype="html")
        return message

    def _render(self, template: Any, context: dict[str, Any], what: str) -> str:
        return render(template, context, action=self.name, what=what)

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context(cafile=self.options.ca_file)
        return self._tls

    async def _send(self, message: EmailMessage) -> None:
        o = self.options
        secure = o.security != "none"
        try:
            refused, _ = await aiosmtplib.send(
                message.as_bytes(policy=MIME_POLICY), sender=parseaddr(o.from_addr)[1],
                recipients=[address for _, address in getaddresses(o.to)], hostname=o.host,
                port=o.smtp_port, username=o.username,
                password=secret_value(o.password), use_tls=o.security == "tls",
                start_tls=o.security == "starttls", timeout=o.timeout,
                tls_context=self._tls_context() if secure else None)
        except aiosmtplib.SMTPException as exc:
            raise classify(self.label, exc) from None
        except ssl.SSLError as exc:
            raise classify(self.label, exc) from None
        except OSError as exc:
            raise DeliveryError(f"{self.label}: {_reason(exc)}") from None
        if refused:
            log.warning("%s: %d of %d recipients refused; sent to the others (%s)", self.label,
                        len(refused), len(o.to),
                        "; ".join(f"{code} {redact(text)[:80]}" for code, text in
                                  refused.values())[:300])


def add_inline_image(message: EmailMessage, data: bytes, content_type: str) -> None:
    """Attach ``data`` to the HTML part as a ``multipart/related`` inline image."""
    html = message.get_body(("html",))
    assert html is not None
    maintype, _, subtype = content_type.partition("/")
    html.add_related(data, maintype=maintype, subtype=subtype or "jpeg",
                     cid=f"<{SNAPSHOT_CID}>", disposition="inline", filename="snapshot.jpg")


def message_id(idempotency_key: str, sender: str) -> str:
    """The same ``<...@domain>`` for every attempt of one delivery."""
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:40]
    domain = parseaddr(sender)[1].rpartition("@")[2] or "watcher.invalid"
    try:
        Address(domain=domain)
    except (ValueError, IndexError):
        domain = "watcher.invalid"
    return f"<{digest}@{domain}>"


def classify(label: str, exc: Exception) -> DeliveryError:
    """The :class:`DeliveryError` an SMTP failure means (see the module docstring)."""
    if _cert_problem(exc):
        return DeliveryError(f"{label}: the server's certificate is not trusted "
                             "(see ca_file)", permanent=True)
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        text = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
        return DeliveryError(f"{label}: every recipient was refused ({_short(text)})",
                             permanent=not any(400 <= c < 500 for c in codes))
    if isinstance(exc, aiosmtplib.SMTPConnectError | aiosmtplib.SMTPTimeoutError
                  | aiosmtplib.SMTPServerDisconnected):
        return DeliveryError(f"{label}: {_reason(exc)}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return DeliveryError(f"{label}: SMTP {exc.code} {_short(exc.message)}",
                             permanent=not 400 <= exc.code < 500)
    if isinstance(exc, ssl.SSLError):
        return DeliveryError(f"{label}: TLS failed: {_reason(exc)}")
    return DeliveryError(f"{label}: {_reason(exc)}", permanent=True)


def _cert_problem(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLCertVerificationError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _short(text: str) -> str:
    return _cut(redact(" ".join(str(text).split())), 200)


def _reason(exc: BaseException) -> str:
    text = _short(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
