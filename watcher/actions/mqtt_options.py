"""The ``mqtt`` action's options: the broker connection, what is published, discovery.

::

    actions:
      home:
        type: mqtt
        host: broker.lan
        port: 1883                      # default 1883; 8883 with tls
        tls: {ca_file: /etc/ssl/ca.pem, cert_file: c.pem, key_file: c.key, verify: true}
        username: watcher
        password: ${MQTT_PASSWORD}      # a secret: never logged
        client_id: watcher-north        # default watcher-<action>-<host>-<pid>
        keepalive: 60s
        protocol: "3.1.1"               # or 5
        topic: watcher/{rule}/{stream}/event
        qos: 1
        retain: false
        discovery: true                 # Home Assistant MQTT discovery
        discovery_prefix: homeassistant
        base_topic: watcher             # root of the state, switch and availability topics

``topic`` is a template over the event: ``{rule}``, ``{stream}``, ``{severity}``,
``{status}`` and ``{kind}``. Values are made safe as one topic level (``/``,
``+`` and ``#`` become ``_``; a cross-camera stream key ``a+b`` is ``a_b``).
"""

from __future__ import annotations

import os
import socket
import string
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from watcher.actions.options import ActionOptionsBase, existing_file, secret_value
from watcher.configbase import Section
from watcher.duration import Duration

TOPIC_FIELDS = ("rule", "stream", "severity", "status", "kind")
DEFAULT_TOPIC = "watcher/{rule}/{stream}/event"
_UNSAFE = str.maketrans({"/": "_", "+": "_", "#": "_", "\x00": "_"})


def topic_level(value: str) -> str:
    """``value`` as one publishable topic level (no separators or wildcards)."""
    return value.translate(_UNSAFE) or "_"


def check_topic_template(template: str) -> str:
    """Only known placeholders, no wildcards outside them, no empty template."""
    if not template.strip():
        raise ValueError("is empty")
    for literal, name, spec, conversion in string.Formatter().parse(template):
        if "+" in literal or "#" in literal:
            raise ValueError("may not contain the wildcards + or # (they are for "
                             "subscriptions)")
        if name is None:
            continue
        if name not in TOPIC_FIELDS or spec or conversion:
            raise ValueError(f"has an unknown placeholder {{{name}}}; use "
                             + ", ".join(f"{{{f}}}" for f in TOPIC_FIELDS))
    return template


def render_topic(template: str, values: dict[str, str]) -> str:
    return template.format_map({k: topic_level(str(values.get(k, ""))) for k in TOPIC_FIELDS})


class MqttTls(Section):
    """TLS to the broker."""

    ca_file: str | None = Field(None, description="CA certificates (PEM) that sign the "
                                "broker's certificate (default: the system's).")
    cert_file: str | None = Field(None, description="Client certificate (PEM), for brokers "
                                  "that authenticate clients by certificate.")
    key_file: str | None = Field(None, description="The client certificate's private key.")
    verify: bool = Field(True, description="Check the broker's certificate and host name "
                         "(false only for tests with self-signed brokers).")

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _file_exists(cls, value: str | None, info: ValidationInfo) -> str | None:
        return existing_file(value, info)

    @model_validator(mode="after")
    def _cert_and_key(self) -> MqttTls:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


def _tls_shorthand(value: object) -> object:
    if value is True:
        return {}
    if value is False:
        return None
    return value


def _protocol_text(value: object) -> object:
    return str(value) if isinstance(value, int | float) else value


class MqttOptions(ActionOptionsBase):
    """Publish alert events to an MQTT broker (and, optionally, Home Assistant entities)."""

    type: Literal["mqtt"] = Field("mqtt", description="mqtt")
    host: str = Field(min_length=1, description="The broker's host name or address.")
    port: int | None = Field(None, ge=1, le=65535,
                             description="The broker's port (default 1883, 8883 with tls).")
    tls: Annotated[MqttTls | None, BeforeValidator(_tls_shorthand)] = Field(
        None, description="TLS: true, or {ca_file, cert_file, key_file, verify}.")
    username: str | None = Field(None, description="User name, if the broker asks for one.")
    password: SecretStr | None = Field(
        None, description="Password (a secret: kept out of logs and error messages).")
    client_id: str | None = Field(
        None, min_length=1, max_length=128,
        description="MQTT client id (default watcher-<action>-<host>-<pid>: unique per "
        "process, as brokers drop the older of two connections with the same id).")
    keepalive: Duration = Field(60.0, ge=1, le=65535, description="MQTT keepalive: the "
                                "broker declares the daemon offline after 1.5 x this silence.")
    protocol: Annotated[Literal["3.1.1", "5"], BeforeValidator(_protocol_text)] = Field(
        "3.1.1", description="MQTT protocol version: 3.1.1 or 5.")
    topic: str = Field(DEFAULT_TOPIC, description="Topic of each event: a template over "
                       "{rule}, {stream}, {severity}, {status}, {kind}.")
    qos: Literal[0, 1, 2] = Field(1, description="Quality of service: with 1 or 2 a delivery "
                                  "counts once the broker acknowledged it.")
    retain: bool = Field(False, description="Publish events retained.")
    timeout: Duration = Field(10.0, gt=0, description="Deadline of one publish (connecting "
                              "included).")
    discovery: bool = Field(False, description="Home Assistant MQTT discovery: cameras as "
                            "devices, alerts as binary sensors, rules as switches.")
    discovery_prefix: str = Field("homeassistant", min_length=1, pattern=r"^[^+#]+$",
                                  description="Home Assistant's discovery prefix.")
    base_topic: str = Field("watcher", min_length=1, pattern=r"^[^+#]+[^+#/]$|^[^+#/]$",
                            description="With discovery: the root of the state, switch and "
                            "availability topics (watcher/{rule}/set, ...); give each "
                            "installation sharing a broker its own.")
    answer_sensors: bool = Field(True, description="With discovery: a sensor per scalar "
                                 "answer field of each rule's schema.")

    @field_validator("topic")
    @classmethod
    def _topic_is_valid(cls, value: str) -> str:
        return check_topic_template(value)

    @field_validator("password")
    @classmethod
    def _password_not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            raise ValueError("is empty (is its environment variable set?)")
        return value

    @model_validator(mode="after")
    def _password_needs_user(self) -> MqttOptions:
        if self.password is not None and self.username is None:
            raise ValueError("password needs a username")
        return self

    @property
    def broker_port(self) -> int:
        if self.port is not None:
            return self.port
        return 8883 if self.tls is not None else 1883

    def client_identifier(self, action_name: str) -> str:
        if self.client_id is not None:
            return self.client_id
        return f"watcher-{action_name}-{socket.gethostname()}-{os.getpid()}"[:128]

    def secrets(self) -> list[str]:
        return list(filter(None, [secret_value(self.password)]))

    def describe(self) -> dict[str, Any]:
        """Where it publishes, for logs and status (no secrets)."""
        return {"broker": f"{self.host}:{self.broker_port}", "tls": self.tls is not None,
                "topic": self.topic, "qos": self.qos, "discovery": self.discovery}
