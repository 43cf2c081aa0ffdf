"""The ``actions:`` section's entries, and building the action each one configures.

An entry's ``type`` picks its options model (a discriminated union), so each
type's options are checked in full: a typo is an error at its own line, with
a "did you mean" among that type's options, and an unknown ``type`` says which
types exist.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import httpx
from pydantic import BeforeValidator, ConfigDict, Field

from watcher.actions.base import ACTION_TYPES, Action
from watcher.actions.email import EmailAction, EmailOptions
from watcher.actions.mqtt import MqttAction
from watcher.actions.mqtt_options import MqttOptions
from watcher.actions.slack import SlackAction, SlackOptions
from watcher.actions.webhook import WebhookAction, WebhookOptions
from watcher.configbase import Section

__all__ = [
    "ActionConfig",
    "ActionOptions",
    "EmailAction",
    "EmailOptions",
    "MqttAction",
    "MqttOptions",
    "SlackAction",
    "SlackOptions",
    "WebhookAction",
    "WebhookOptions",
    "build_action",
]

ActionOptions = WebhookOptions | SlackOptions | EmailOptions | MqttOptions
"""The options model of any action type."""


class _ActionType(Section):
    """Only ``type``, checked first: its errors say what the types are."""

    model_config = ConfigDict(extra="allow")

    type: Literal["webhook", "slack", "email", "mqtt"] = Field(description="The action type.")


def _type_first(value: Any) -> Any:
    if isinstance(value, dict):
        _ActionType.model_validate(value)  # its ValidationError is reported at `.type`
    return value


ActionConfig = Annotated[
    Annotated[ActionOptions, Field(discriminator="type")], BeforeValidator(_type_first)]
"""One ``actions:`` entry: its ``type`` (webhook, slack, email, mqtt) selects its options."""

def build_action(name: str, options: ActionOptions, *, http: httpx.AsyncClient) -> Action:
    """The :class:`Action` ``options`` configure, named ``name``; HTTP ones use ``http``."""
    cls = ACTION_TYPES[options.type]
    return cls(name, options, http=http)  # type: ignore[call-arg]
