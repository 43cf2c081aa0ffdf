"""The email action against a real aiosmtpd server on 127.0.0.1."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.receivers import SmtpReceiver, event, free_port, self_signed_cert

from watcher.actions.base import DeliveryError
from watcher.actions.email import EmailAction, EmailOptions

PASSWORD = "smtp-pw-canary-4b9e"
KEY = "dock-occupied:dock:3:firing:1714564800000:ops-mail"


@pytest.fixture(autouse=True)
def _quiet_server() -> Iterator[None]:
    """aiosmtpd logs the SMTP dialogue (with AUTH data) on 'mail.log': it is the receiver's
    log, not ours, so keep it out of caplog."""
    logger = logging.getLogger("mail.log")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_cert(tmp_path_factory.mktemp("tls"))


def mailer(port: int, **options: object) -> EmailAction:
    data = {"type": "email", "host": "127.0.0.1", "port": port, "security": "none",
            "from": "Watcher <watcher@example.com>", "to": ["ops@example.com"], **options}
    return EmailAction("ops-mail", EmailOptions.model_validate(data))


async def test_multipart_message_with_inline_snapshot() -> None:
    with SmtpReceiver() as smtp:
        await mailer(smtp.port, to=["ops@example.com", "Night Shift <night@example.com>"]).send(
            event(answer={"people": 2, "description": "Two <b>people</b> & a café cart"}), KEY)
    [mail] = smtp.mails
    assert mail.mail_from == "watcher@example.com"
    assert mail.rcpt_tos == ["ops@example.com", "night@example.com"]
    message = mail.message
    assert message["Subject"] == "[CRITICAL] dock-occupied on dock: firing"
    assert message["From"] == "Watcher <watcher@example.com>"
    assert message["X-Watcher-Idempotency-Key"] == KEY
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Message-ID"].endswith("@example.com>")
    assert message.get_content_type() == "multipart/alternative"
    text, related = message.get_payload()
    assert text.get_content_type() == "text/plain"
    assert "dock-occupied is firing on dock: Two <b>people</b> & a café cart" in text.get_content()
    assert related.get_content_type() == "multipart/related"
    html, image = related.get_payload()
    assert html.get_content_type() == "text/html"
    assert image.get_content_type() == "image/jpeg"
    assert image["Content-ID"] == "<snapshot@watcher>"
    assert image.get_content_disposition() == "inline"
    assert image.get_content() == event().snapshot
    body = html.get_content()
    assert '<img src="cid:snapshot@watcher"' in body  # the HTML shows the inline image
    assert "Two &lt;b&gt;people&lt;/b&gt; &amp; a café cart" in body and "<b>people" not in body


async def test_message_id_is_derived_from_the_idempotency_key() -> None:
    long_key = "a-rule-with-a-rather-long-name:a+b+c:12:firing:1714564800000:" + "x" * 60
    with SmtpReceiver() as smtp:
        action = mailer(smtp.port)
        await action.send(event(), KEY)
        await action.send(event(), KEY)  # a retry
        await action.send(event(), long_key)
    first, again, other = (m.message for m in smtp.mails)
    assert first["Message-ID"] == again["Message-ID"] != other["Message-ID"]
    assert other["X-Watcher-Idempotency-Key"] == long_key


async def test_resolved_without_snapshot_and_summary() -> None:
    with SmtpReceiver() as smtp:
        action = mailer(smtp.port)
        await action.send(event("resolved"), "k1")
        await action.send_summary([event(), event("resolved")], "k2")
    resolved, summary = (m.message for m in smtp.mails)
    assert resolved["Subject"] == "[CRITICAL] dock-occupied on dock: resolved"
    assert [p.get_content_type() for p in resolved.walk()] == [
        "multipart/alternative", "text/plain", "text/html"]
    assert summary["Subject"] == ("[CRITICAL] 2 alert events of dock-occupied held back by "
                                  "the rate limit")
    assert "2 alert events held back" in summary.get_body(("plain",)).get_content()


async def test_auth_login_with_password() -> None:
    with SmtpReceiver(username="watcher", password=PASSWORD, exclude_auth=("PLAIN",)) as smtp:
        await mailer(smtp.port, username="watcher", password=PASSWORD).send(event(), KEY)
    assert smtp.auth_attempts == ["LOGIN"]
    assert [m.auth_user for m in smtp.mails] == ["watcher"]


async def test_starttls_with_auth_plain(cert: tuple[Path, Path]) -> None:
    with SmtpReceiver(security="starttls", username="watcher", password=PASSWORD,
                      cert=cert) as smtp:
        action = mailer(smtp.port, security="starttls", username="watcher",
                        password=PASSWORD, ca_file=str(cert[0]))
        await action.send(event(), KEY)
    assert smtp.auth_attempts == ["PLAIN"]
    assert smtp.mails[0].tls and smtp.mails[0].auth_user == "watcher"


async def test_implicit_tls(cert: tuple[Path, Path]) -> None:
    with SmtpReceiver(security="tls", cert=cert) as smtp:
        await mailer(smtp.port, security="tls", ca_file=str(cert[0])).send(event(), KEY)
    assert len(smtp.mails) == 1


async def test_untrusted_certificate_is_permanent(cert: tuple[Path, Path]) -> None:
    with SmtpReceiver(security="starttls", cert=cert) as smtp:
        with pytest.raises(DeliveryError, match="certificate is not trusted") as info:
            await mailer(smtp.port, security="starttls").send(event(), KEY)
    assert info.value.permanent and smtp.mails == []


async def test_starttls_required_but_not_offered() -> None:
    with SmtpReceiver() as smtp:
        with pytest.raises(DeliveryError, match="STARTTLS") as info:
            await mailer(smtp.port, security="starttls").send(event(), KEY)
    assert info.value.permanent


async def test_wrong_password_is_permanent(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with SmtpReceiver(username="watcher", password="the-right-one") as smtp:
        action = mailer(smtp.port, username="watcher", password=PASSWORD)
        with pytest.raises(DeliveryError, match="SMTP 535") as info:
            await action.send(event(), KEY)
    assert info.value.permanent
    seen = "\n".join([str(info.value), repr(info.value), caplog.text, repr(action.options),
                      str(action.options)])
    assert PASSWORD not in seen


@pytest.mark.parametrize(("reply", "permanent"), [
    ("451 4.3.0 try again later", False), ("452 4.3.1 out of storage", False),
    ("554 5.7.1 message rejected", True), ("552 5.3.4 message too big", True)])
async def test_smtp_replies(reply: str, permanent: bool) -> None:
    with SmtpReceiver() as smtp:
        smtp.handler.data_replies.append(reply)
        action = mailer(smtp.port)
        with pytest.raises(DeliveryError) as info:
            await action.send(event(), KEY)
        assert info.value.permanent is permanent
        assert f"SMTP {reply[:3]}" in str(info.value)
        if not permanent:  # the retry goes through, with the same Message-ID
            await action.send(event(), KEY)
            assert len(smtp.mails) == 1


async def test_refused_recipients(caplog: pytest.LogCaptureFixture) -> None:
    with SmtpReceiver() as smtp:
        smtp.handler.refuse = {"gone@example.com"}
        with pytest.raises(DeliveryError, match="every recipient was refused") as info:
            await mailer(smtp.port, to="gone@example.com").send(event(), KEY)
        assert info.value.permanent
        await mailer(smtp.port, to=["gone@example.com", "ops@example.com"]).send(event(), KEY)
    assert [m.rcpt_tos for m in smtp.mails] == [["ops@example.com"]]
    assert "1 of 2 recipients refused" in caplog.text


async def test_connection_failures_are_retryable() -> None:
    with pytest.raises(DeliveryError, match="SMTPConnectError") as info:
        await mailer(free_port(), timeout="2s").send(event(), KEY)
    assert not info.value.permanent


def test_options() -> None:
    opts = EmailOptions.model_validate({"host": "smtp.example.com", "from": "a@example.com",
                                        "to": "b@example.com", "username": "u",
                                        "password": PASSWORD})
    assert (opts.security, opts.smtp_port, opts.timeout, opts.to) == (
        "starttls", 587, 30.0, ["b@example.com"])
    assert opts.from_addr == "a@example.com" and opts.send_resolved and opts.max_age == 86_400
    assert PASSWORD not in repr(opts) and opts.secrets() == [PASSWORD]
    assert EmailOptions(host="h", from_addr="a@b.c", to=["x@y.z"], security="tls").smtp_port \
        == 465
    assert EmailOptions(host="h", from_addr="a@b.c", to=["x@y.z"], security="none").smtp_port \
        == 25
    with pytest.raises(ValueError, match="give both `username` and `password`"):
        EmailOptions(host="h", from_addr="a@b.c", to=["x@y.z"], username="u")
    with pytest.raises(ValueError, match="is not an email address"):
        EmailOptions(host="h", from_addr="nobody", to=["x@y.z"])
    with pytest.raises(ValueError, match="line breaks"):
        EmailOptions(host="h", from_addr="a@b.c", to=["x@y.z\r\nBcc: evil@example.com"])
